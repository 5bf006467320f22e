r"""REMUL: relaxed equivariance as a multitask objective (001, Elhag et al.).

REMUL does not constrain the network. It adds an equivariance task to the supervised one,

.. math:: \mathcal{L}_{total} = \alpha\,\mathcal{L}_{obj} + \beta\,\mathcal{L}_{equi}
          \qquad \text{(001 eq. 7)},

where :math:`\mathcal{L}_{equi}` compares :math:`f(\phi(g)x)` with the transformed output for group
elements :math:`g` drawn afresh at every call (001 eq. 8). :math:`\alpha, \beta` are constants or
are balanced during training by :class:`GradNorm` (001 sec. 3.2, Algorithm 1). Data augmentation
is the special case :math:`\alpha = 0, \beta = 1` with the task loss on transformed data
(001 sec. 3.3), :func:`augmentation_loss`.

Conventions shared by every function here (and by the equivariance errors E, E' of 001
eq. 12-13, which :func:`equivariance_pairs` serves):

* axis 0 of ``x`` (and of ``y``, ``f(x)``) is the batch of data points, the :math:`i` of eq. 8;
  everything after it is one data point, and norms run over all of it;
* each data point :math:`x_i` gets its own elements (eq. 8: ":math:`g_i` randomly selected for
  each sample"): ``num_samples`` draws per data point, ``num_samples * B`` elements per call,
  drawn as ``group.sample(num_samples * B, generator)`` and laid out as ``(num_samples, B, n, n)``;
* an action ``rep_in``/``rep_out`` is a :class:`~symprior.groups.Rep` (acting on the last axis)
  or a callable ``action(g, x)`` with ``g`` of shape ``(N, n, n)`` (float64, the dtype of group
  constants) and ``x`` of shape ``(N, ...)``, element ``g[k]`` acting on ``x[k]``, returning
  ``(N, ...)``; e.g. ``lambda g, x: transform_image(x, g)``. All draws are acted on in one call
  with ``N = num_samples * B``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from symprior.groups import Group, Rep
from symprior.groups._group import check_generator

__all__ = [
    "GradNorm",
    "RemulLoss",
    "augmentation_loss",
    "equivariance_loss",
    "equivariance_pairs",
    "remul_objective",
]

Action = Rep | Callable[[Tensor, Tensor], Tensor]
Metric = str | Callable[[Tensor, Tensor], Tensor]

_NORMS = ("l1", "l2")
_REDUCTIONS = ("mean", "sum", "none")
_TARGETS = ("prediction", "labels")


# ------------------------------------------------------------------------------ validation
def _check_group(group: Group) -> Group:
    if not isinstance(group, Group):
        raise TypeError(f"group must be a symprior.groups.Group, got {type(group).__name__}")
    return group


def _check_action(action: Action, name: str, group: Group) -> Action:
    if isinstance(action, Rep):
        if action.G != group:
            raise ValueError(f"{name} is a representation of {action.G!r}, not of {group!r}")
        return action
    if callable(action):
        return action
    raise TypeError(f"{name} must be a Rep or a callable (g, x) -> x, got {type(action).__name__}")


def _check_batch(x: Tensor, name: str, rep: Action) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor with the batch on axis 0")
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch axis 0, got a 0-d tensor")
    if isinstance(rep, Rep) and (x.ndim < 2 or x.shape[-1] != rep.size):
        raise ValueError(
            f"{name} must have shape (B, ..., {rep.size}) for {rep!r} (trailing dimension = "
            f"representation size), got {tuple(x.shape)}"
        )
    return x


def _check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return num_samples


def _check_norm(norm: Metric, reduction: str) -> Metric:
    if isinstance(norm, str):
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS} or a callable, got {norm!r}")
    elif not callable(norm):
        raise TypeError(f"norm must be one of {_NORMS} or a callable, got {type(norm).__name__}")
    elif reduction != "mean":
        raise ValueError(
            f"reduction={reduction!r} needs norm 'l1' or 'l2': a callable norm reduces itself "
            "(leave reduction at 'mean')"
        )
    return norm


def _check_weight(value: float | Tensor, name: str) -> float | Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        if bool((value.detach() < 0).any()) or not bool(torch.isfinite(value.detach()).all()):
            raise ValueError(f"{name} must be finite and >= 0, got {value.detach().item()}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a scalar tensor, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0 (001 eq. 5), got {value!r}")
    return float(value)


def _elements_for(
    group: Group,
    batch: int,
    device: torch.device,
    *,
    num_samples: int,
    generator: torch.Generator | None,
    elements: Tensor | None,
) -> Tensor:
    """Elements ``(m, B, n, n)`` in float64 on ``device``: given, or fresh draws."""
    num_samples = _check_num_samples(num_samples)
    if elements is None:
        check_generator(generator)
        # Draw where the generator lives (a CPU generator keeps runs reproducible across
        # devices), then move next to x.
        where = generator.device if generator is not None else device
        g = group.sample(num_samples * batch, generator, device=where)
        return g.reshape(num_samples, batch, group.n, group.n).to(device)
    if num_samples != 1 or generator is not None:
        raise ValueError(
            "elements were given explicitly: leave num_samples and generator at their defaults "
            "(nothing is sampled)"
        )
    group.check_elements(elements, "elements")
    if elements.ndim == 3:
        elements = elements[:, None].expand(-1, batch, -1, -1)
    elif elements.ndim != 4 or elements.shape[1] != batch:
        raise ValueError(
            f"elements must have shape (m, {group.n}, {group.n}) (shared by the batch) or "
            f"(m, {batch}, {group.n}, {group.n}) (one per data point), got "
            f"{tuple(elements.shape)}"
        )
    return elements.to(device=device, dtype=torch.float64)


def _act(action: Action, g: Tensor, x: Tensor) -> Tensor:
    r"""Every draw of ``g`` ``(m, B, n, n)`` on ``x`` ``(B, ...)``: ``(m, B, ...)`` in one call."""
    m, b = g.shape[:2]
    if isinstance(action, Rep):
        return torch.einsum("mbij,b...j->mb...i", action.rho(g).to(x.dtype), x)
    flat_x = x.expand(m, *x.shape).reshape(m * b, *x.shape[1:])
    out = action(g.reshape(m * b, *g.shape[2:]), flat_x)
    if not isinstance(out, Tensor) or out.ndim == 0 or out.shape[0] != m * b:
        raise ValueError(
            f"an action callable must return a tensor with leading axis N = {m * b} (one entry "
            f"per element), got {getattr(out, 'shape', type(out).__name__)}"
        )
    return out.reshape(m, b, *out.shape[1:])


def _apply(f: Callable[[Tensor], Tensor], x: Tensor, what: str) -> Tensor:
    out = f(x)
    if not isinstance(out, Tensor) or out.ndim == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"f must map a batch (N, ...) to outputs (N, ...); on {what} of shape "
            f"{tuple(x.shape)} it returned {getattr(out, 'shape', type(out).__name__)}"
        )
    return out


# ---------------------------------------------------------------------------- public API
def equivariance_pairs(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    elements: Tensor,
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    y: Tensor | None = None,
    fx: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Both sides of the equivariance constraint for every element: 001 eq. 1 and 8.

    Parameters
    ----------
    f : callable
        The model, mapping ``(N, ...)`` to ``(N, ...)``.
    x : Tensor
        Inputs ``(B, ...)`` (``(B, ..., rep_in.size)`` for a :class:`Rep`).
    elements : Tensor
        ``(m, n, n)`` shared by all data points or ``(m, B, n, n)`` (one per data point).
    group : Group
    rep_in, rep_out : Rep or callable
        Input and output actions (:math:`\phi` and :math:`\rho` of 001 eq. 1); see the module
        docstring for the callable contract.
    y : Tensor, optional
        Labels ``(B, ...)``. When given the right-hand side is :math:`\rho(g_i) y_i` (001 eq. 8
        literally); otherwise it is :math:`\rho(g_i) f(x_i)` (001 eq. 1, 13).
    fx : Tensor, optional
        ``f(x)`` if already computed (it is not recomputed); not together with ``y``.

    Returns
    -------
    lhs, rhs : Tensor
        :math:`f(\phi(g_{ji}) x_i)` and :math:`\rho(g_{ji}) f(x_i)` (or :math:`\rho(g_{ji}) y_i`),
        each ``(m, B, ...)``. The errors of 001 eq. 12 and 13 are
        ``(rhs.mean(0) - lhs.mean(0)).flatten(1).norm(dim=-1).mean()`` and
        ``(lhs - rhs).flatten(2).norm(dim=-1).mean()`` (for outputs with axes after the batch).
    """
    group = _check_group(group)
    rep_in = _check_action(rep_in, "rep_in", group)
    rep_out = _check_action(rep_out, "rep_out", group)
    x = _check_batch(x, "x", rep_in)
    if y is not None and fx is not None:
        raise ValueError(
            "give y (compare with rho_out(g) y) or fx (with rho_out(g) f(x)), not both"
        )
    g = _elements_for(group, x.shape[0], x.device, num_samples=1, generator=None, elements=elements)
    return _pairs(f, x, g, rep_in, rep_out, y=y, fx=fx)


def _pairs(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    g: Tensor,
    rep_in: Action,
    rep_out: Action,
    *,
    y: Tensor | None,
    fx: Tensor | None,
) -> tuple[Tensor, Tensor]:
    m, b = g.shape[:2]
    gx = _act(rep_in, g, x)
    lhs = _apply(f, gx.reshape(m * b, *gx.shape[2:]), "the transformed inputs")
    lhs = lhs.reshape(m, b, *lhs.shape[1:])
    if y is None:
        base = _apply(f, x, "x") if fx is None else fx
        base = _check_batch(base, "f(x)", rep_out)
    else:
        base = _check_batch(y, "y", rep_out)
    if base.shape[0] != b:
        raise ValueError(f"y must have the batch size {b} of x on axis 0, got {tuple(base.shape)}")
    rhs = _act(rep_out, g, base)
    if lhs.shape != rhs.shape:
        raise ValueError(
            f"f(rho_in(g) x) has shape {tuple(lhs.shape[2:])} per data point but "
            f"rho_out(g) {'y' if y is not None else 'f(x)'} has {tuple(rhs.shape[2:])}"
        )
    return lhs, rhs


def _discrepancy(lhs: Tensor, rhs: Tensor, norm: Metric, reduction: str) -> Tensor:
    if callable(norm):
        return norm(lhs.reshape(-1, *lhs.shape[2:]), rhs.reshape(-1, *rhs.shape[2:]))
    diff = (lhs - rhs).reshape(*lhs.shape[:2], -1)
    per_pair = diff.square().sum(-1) if norm == "l2" else diff.abs().sum(-1)
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "sum":
        return per_pair.sum()
    return per_pair


def equivariance_loss(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    num_samples: int = 1,
    norm: Metric = "l2",
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    y: Tensor | None = None,
    elements: Tensor | None = None,
) -> Tensor:
    r"""The equivariance loss :math:`\mathcal{L}_{equi}` of 001 eq. 8, on fresh group elements.

    .. math:: \mathcal{L}_{equi} = \frac{1}{mB}\sum_{j=1}^{m}\sum_{i=1}^{B}
              \ell\big(f(\phi(g_{ji}) x_i),\ \rho(g_{ji}) f(x_i)\big)

    with ``norm="l2"``: :math:`\ell(a, b) = \lVert a - b\rVert_2^2`, the *squared* Euclidean norm
    over all axes of one data point (with ``reduction="sum"``, :math:`\tfrac{\beta}{2}
    \mathcal{L}_{equi}` is the negative log-likelihood of :math:`f(\phi(g)x)` observed around
    :math:`\rho(g) f(x)` with precision :math:`\beta`, up to a constant); ``norm="l1"``:
    :math:`\ell(a, b) = \lVert a - b\rVert_1`. 001 eq. 8 writes a sum over the data; the default
    ``reduction="mean"`` divides it by the number of terms :math:`mB`, the minibatch estimate of
    the expectation in 001 eq. 5. For the same draws, the error :math:`E'` of 001 eq. 13 is the
    mean of the *unsquared* L2 norms, so :math:`E' \le \sqrt{\mathcal{L}_{equi}}` (Jensen).

    Parameters
    ----------
    f : callable
        The model (e.g. an ``nn.Module``) mapping ``(N, ...)`` to ``(N, ...)``. It is called once
        on the ``num_samples * B`` transformed inputs and once on ``x``.
    x : Tensor
        Inputs ``(B, ...)``; ``(B, ..., rep_in.size)`` for a :class:`Rep`.
    group : Group
    rep_in, rep_out : Rep or callable
        The actions :math:`\phi` on inputs and :math:`\rho` on outputs (001 eq. 1); a callable
        gets ``(N, n, n)`` float64 elements and ``(N, ...)`` data, element ``k`` acting on entry
        ``k``, and is called once for all draws.
    num_samples : int
        Draws per data point :math:`m \ge 1`; ``num_samples * B`` elements are drawn on every
        call with ``group.sample(num_samples * B, generator)`` (001 sec. 3.1: "we change the group
        elements being sampled in each training step"), reshaped to ``(num_samples, B, n, n)``.
    norm : {"l2", "l1"} or callable
        :math:`\ell` of 001 eq. 8. A callable ``ell(prediction, target)`` receives the stacked
        pairs ``(num_samples * B, ...)`` and returns the loss (it reduces itself, as a task loss
        does; ``reduction`` must then stay ``"mean"``).
    generator : torch.Generator, optional
        Source of the draws (advanced by every call). Elements are drawn on the generator's
        device (``x``'s device without one) and moved to ``x``'s device.
    reduction : {"mean", "sum", "none"}
        Over the :math:`mB` terms; ``"none"`` returns them as ``(num_samples, B)``.
    y : Tensor, optional
        Labels ``(B, ...)``: compare with :math:`\rho(g) y` instead of :math:`\rho(g) f(x)`
        (001 eq. 8 as printed, the "augmented equivariance loss"; then ``f(x)`` is not computed).
    elements : Tensor, optional
        Explicit elements ``(m, n, n)`` (shared by the batch) or ``(m, B, n, n)``; nothing is
        sampled (``num_samples`` and ``generator`` must stay at their defaults).

    Returns
    -------
    Tensor
        A scalar (``"mean"``, ``"sum"``, callable ``norm``) or ``(num_samples, B)``, in the dtype
        of ``f``'s outputs, differentiable with respect to ``f``'s parameters through both sides.

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO3, V
    >>> x = torch.randn(5, 3, dtype=torch.float64)
    >>> gen = torch.Generator().manual_seed(0)
    >>> float(equivariance_loss(lambda v: 2 * v, x, SO3(), V(SO3()), V(SO3()), generator=gen))
    0.0
    """
    group = _check_group(group)
    rep_in = _check_action(rep_in, "rep_in", group)
    rep_out = _check_action(rep_out, "rep_out", group)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    norm = _check_norm(norm, reduction)
    x = _check_batch(x, "x", rep_in)
    g = _elements_for(
        group,
        x.shape[0],
        x.device,
        num_samples=num_samples,
        generator=generator,
        elements=elements,
    )
    lhs, rhs = _pairs(f, x, g, rep_in, rep_out, y=y, fx=None)
    return _discrepancy(lhs, rhs, norm, reduction)


class RemulLoss(NamedTuple):
    r"""The terms of 001 eq. 7.

    Attributes
    ----------
    total : Tensor
        :math:`\alpha\,\mathcal{L}_{obj} + \beta\,\mathcal{L}_{equi}` (scalar).
    objective : Tensor or None
        :math:`\mathcal{L}_{obj}` (001 eq. 6); ``None`` when ``alpha`` is the number 0 (then it is
        not evaluated, as in plain data augmentation).
    equivariance : Tensor
        :math:`\mathcal{L}_{equi}` (001 eq. 8).
    """

    total: Tensor
    objective: Tensor | None
    equivariance: Tensor


def remul_objective(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    task_loss: Callable[[Tensor, Tensor], Tensor],
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    alpha: float | Tensor,
    beta: float | Tensor,
    num_samples: int = 1,
    norm: Metric = "l2",
    equivariance_target: str = "prediction",
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    elements: Tensor | None = None,
) -> RemulLoss:
    r"""The REMUL objective :math:`\alpha\mathcal{L}_{obj} + \beta\mathcal{L}_{equi}` (001 eq. 5-7).

    Parameters
    ----------
    f, x, group, rep_in, rep_out, num_samples, norm, generator, elements
        As in :func:`equivariance_loss`.
    y : Tensor
        Labels ``(B, ...)``.
    task_loss : callable
        :math:`\mathcal{L}` of 001 eq. 3/6: ``task_loss(f(x), y)`` returning a scalar (e.g.
        ``torch.nn.functional.mse_loss``).
    alpha, beta : float or scalar Tensor
        Task weights :math:`\ge 0` (001 eq. 5 asks :math:`> 0`; 0 gives the special cases of
        sec. 3.3). Constants ("constant penalty") or the current :attr:`GradNorm.weights`
        ("gradual penalty", 001 sec. 3.2).
    equivariance_target : {"prediction", "labels"}
        Compare :math:`f(\phi(g)x)` with :math:`\rho(g) f(x)` (the self-consistency that E, E' of
        001 eq. 12-13 measure; ``f(x)`` is shared with the task loss) or with :math:`\rho(g) y`
        (001 eq. 8 as printed).
    reduction : {"mean", "sum"}
        Of :math:`\mathcal{L}_{equi}` over its terms.

    Returns
    -------
    RemulLoss
        ``(total, objective, equivariance)``.
    """
    alpha = _check_weight(alpha, "alpha")
    beta = _check_weight(beta, "beta")
    if equivariance_target not in _TARGETS:
        raise ValueError(
            f"equivariance_target must be one of {_TARGETS}, got {equivariance_target!r}"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' for an objective, got {reduction!r}")
    if not callable(task_loss):
        raise TypeError(f"task_loss must be a callable (prediction, y), got {type(task_loss)}")
    group = _check_group(group)
    rep_in = _check_action(rep_in, "rep_in", group)
    rep_out = _check_action(rep_out, "rep_out", group)
    norm = _check_norm(norm, reduction)
    x = _check_batch(x, "x", rep_in)
    if not isinstance(y, Tensor) or y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must be a tensor with the batch size {x.shape[0]} of x on axis 0, got "
            f"{getattr(y, 'shape', type(y).__name__)}"
        )
    g = _elements_for(
        group,
        x.shape[0],
        x.device,
        num_samples=num_samples,
        generator=generator,
        elements=elements,
    )
    skip_objective = isinstance(alpha, float) and alpha == 0.0
    fx = None
    if not skip_objective or equivariance_target == "prediction":
        fx = _apply(f, x, "x")
    objective = task_loss(fx, y) if fx is not None and not skip_objective else None
    labels = y if equivariance_target == "labels" else None
    lhs, rhs = _pairs(f, x, g, rep_in, rep_out, y=labels, fx=fx)
    equivariance = _discrepancy(lhs, rhs, norm, reduction)
    total = beta * equivariance if objective is None else alpha * objective + beta * equivariance
    return RemulLoss(total, objective, equivariance)


def augmentation_loss(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    task_loss: Callable[[Tensor, Tensor], Tensor],
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    elements: Tensor | None = None,
) -> Tensor:
    r"""Data augmentation as the special case of REMUL (001 sec. 3.3).

    "Traditional data augmentation techniques can be interpreted as special cases of Equation 7
    where :math:`\alpha = 0` and :math:`\beta = 1`": the task loss between the prediction on a
    transformed input and the transformed target,
    ``task_loss(f(phi(g) x), rho(g) y)`` over the ``num_samples * B`` transformed pairs. This is
    :func:`remul_objective` with ``alpha=0, beta=1, equivariance_target="labels",
    norm=task_loss``; the untransformed batch is never evaluated.

    Parameters
    ----------
    f, x, y, task_loss, group, rep_in, rep_out, num_samples, generator, elements
        As in :func:`remul_objective`.

    Returns
    -------
    Tensor
        The scalar augmented task loss.
    """
    return remul_objective(
        f,
        x,
        y,
        task_loss,
        group,
        rep_in,
        rep_out,
        alpha=0.0,
        beta=1.0,
        num_samples=num_samples,
        norm=task_loss,
        equivariance_target="labels",
        generator=generator,
        elements=elements,
    ).total


# ------------------------------------------------------------------------------- GradNorm
class GradNorm(nn.Module):
    r"""GradNorm task weighting (Chen et al. 2018) as used by REMUL, 001 Algorithm 1.

    Holds the task weights :math:`w = (\alpha, \beta)` (more generally one per task, in the
    order the losses are passed: for REMUL ``(L_obj, L_equi)``) and updates them, one call of
    :meth:`step` per training step. Line by line (001 Algorithm 1, for task :math:`i`):

    1. inputs: the weights, learning rate :math:`\eta` (``lr``), asymmetry :math:`\gamma`
       (``asymmetry``), the task losses :math:`\mathcal{L}_i` and the shared weights
       :math:`\mathcal{W}` (``shared_parameters``: the last layer of the network in 001 sec. 3.2;
       all shared parameters also work);
    2. -3. :math:`G_i = \lVert\nabla_{\mathcal{W}}\, w_i \mathcal{L}_i\rVert_2 = |w_i|\,
       \lVert\nabla_{\mathcal{W}}\mathcal{L}_i\rVert_2` (one backward per task, no second
       order: :math:`G_i` is linear in :math:`w_i`) and
       :math:`\tilde{\mathcal{L}}_i = \mathcal{L}_i / \mathcal{L}_i(0)`, where
       :math:`\mathcal{L}_i(0)` are the losses of the first call (buffer ``initial_losses``);
    4. :math:`\bar G = \operatorname{mean}_i G_i`, :math:`r = \operatorname{mean}_i
       \tilde{\mathcal{L}}_i`;
    5. inverse training rates :math:`r_i = \tilde{\mathcal{L}}_i / r`;
    6. :math:`\mathcal{L}_g = \sum_i |G_i - \bar G\, r_i^{\gamma}|` (:meth:`loss`); as in
       Chen et al. sec. 3.2 the target :math:`\bar G r_i^\gamma` is held constant when
       differentiating;
    7. -8. :math:`w_i \leftarrow w_i - \eta\, \partial\mathcal{L}_g / \partial w_i` (plain
       gradient descent for ``optimizer="sgd"``, as written; ``"adam"`` as in many GradNorm
       implementations);

    then, after Algorithm 1 as in Chen et al. sec. 3.2, the weights are clamped at
    ``min_weight`` (001 eq. 5 needs :math:`w_i \ge 0`) and renormalised so that
    :math:`\sum_i w_i` keeps its initial value: the number of tasks for the default initial
    weights of one.

    Parameters
    ----------
    num_tasks : int
        Number of losses (2 for REMUL).
    lr : float
        :math:`\eta > 0`.
    asymmetry : float
        :math:`\gamma \ge 0`; larger pulls harder towards tasks that train slowly; 0 asks for
        equal gradient norms. 001 does not give its value; 1.5 is a common default.
    initial_weights : sequence of float, optional
        :math:`w(0)`, positive; default all ones (001 app. C: initial :math:`\alpha = 1`).
    optimizer : {"sgd", "adam"}
        Update rule for lines 7-8 (created at the first :meth:`step`).
    min_weight : float
        Lower bound applied after each update, :math:`\ge 0`.

    Attributes
    ----------
    weights : nn.Parameter
        ``(num_tasks,)``, the current :math:`(\alpha, \beta)`.
    initial_losses : Tensor
        Buffer ``(num_tasks,)``: :math:`\mathcal{L}_i(0)`, NaN until the first call.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> balance = GradNorm(2, lr=0.1)
    >>> losses = torch.stack([(net(x) - y).square().mean(), net(x).abs().mean()])
    >>> total = balance.weighted_loss(losses)  # alpha * L_obj + beta * L_equi, for the network
    >>> new_weights = balance.step(losses, net.parameters())
    >>> round(float(new_weights.sum()), 6)  # renormalised to the number of tasks
    2.0
    >>> total.backward()
    """

    initial_losses: Tensor

    def __init__(
        self,
        num_tasks: int = 2,
        *,
        lr: float,
        asymmetry: float = 1.5,
        initial_weights: Sequence[float] | None = None,
        optimizer: str = "sgd",
        min_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")
        for name, value in (("lr", lr), ("asymmetry", asymmetry), ("min_weight", min_weight)):
            # bool is an int subclass; True would silently read as 1
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not (math.isfinite(asymmetry) and asymmetry >= 0):
            raise ValueError(f"asymmetry must be a number >= 0, got {asymmetry!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if not (math.isfinite(min_weight) and min_weight >= 0):
            raise ValueError(f"min_weight must be a number >= 0, got {min_weight!r}")
        if initial_weights is None:
            w0 = torch.ones(num_tasks)
        else:
            w0 = torch.as_tensor(list(initial_weights), dtype=torch.get_default_dtype())
            if w0.shape != (num_tasks,) or not bool((w0 > 0).all()):
                raise ValueError(
                    f"initial_weights must be {num_tasks} positive numbers, got {initial_weights!r}"
                )
        self.num_tasks = num_tasks
        self.lr = float(lr)
        self.asymmetry = float(asymmetry)
        self.optimizer_name = optimizer
        self.min_weight = float(min_weight)
        self.weight_sum = float(w0.sum())
        self.weights = nn.Parameter(w0)
        self.register_buffer("initial_losses", torch.full((num_tasks,), math.nan))
        self._optimizer: torch.optim.Optimizer | None = None

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, lr={self.lr}, asymmetry={self.asymmetry}, "
            f"optimizer={self.optimizer_name!r}"
        )

    def reset(self) -> None:
        r"""Forget :math:`\mathcal{L}(0)` (the next call records new initial losses)."""
        self.initial_losses.fill_(math.nan)

    def _stack(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(losses, Tensor):
            stacked = losses.reshape(-1) if losses.ndim <= 1 else losses
        elif isinstance(losses, Sequence) and all(isinstance(v, Tensor) for v in losses):
            stacked = torch.stack([v.reshape(()) for v in losses]) if losses else torch.empty(0)
        else:
            raise TypeError("losses must be a tensor (num_tasks,) or a sequence of scalar tensors")
        if stacked.shape != (self.num_tasks,):
            raise ValueError(
                f"losses must hold {self.num_tasks} scalar task losses, got shape "
                f"{tuple(stacked.shape)}"
            )
        return stacked

    def weighted_loss(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        r"""The network's loss :math:`\sum_i w_i \mathcal{L}_i` (001 eq. 7) at the current weights.

        The weights enter as constants (a copy), so the network's backward neither reaches nor
        is invalidated by :meth:`step`, which changes them in place.
        """
        stacked = self._stack(losses)
        return (self.weights.detach().clone().to(stacked) * stacked).sum()

    def loss(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_parameters: Iterable[Tensor] | nn.Module,
    ) -> Tensor:
        r"""The GradNorm loss :math:`\mathcal{L}_g` (Algorithm 1 lines 2-6) as a function of w.

        Parameters
        ----------
        losses : Tensor or sequence of Tensor
            The ``num_tasks`` scalar losses, still attached to the network's graph (which is
            kept for the network's own backward).
        shared_parameters : iterable of Tensor or nn.Module
            :math:`\mathcal{W}`.

        Returns
        -------
        Tensor
            Scalar; differentiable with respect to :attr:`weights` only.
        """
        stacked = self._stack(losses)
        params = (
            list(shared_parameters.parameters())
            if isinstance(shared_parameters, nn.Module)
            else list(shared_parameters)
        )
        if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
            raise ValueError("shared_parameters must be a non-empty set of tensors requiring grad")
        if not stacked.requires_grad:
            raise ValueError("losses must be attached to the graph of the shared parameters")
        w = self.weights
        norms = []
        # One backward per task (not per sample): Algorithm 1 needs each task's own gradient.
        for i in range(self.num_tasks):
            grads = torch.autograd.grad(stacked[i], params, retain_graph=True, allow_unused=True)
            sq = [gr.detach().to(w).square().sum() for gr in grads if gr is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else w.new_zeros(()))
        grad_norms = torch.stack(norms)  # ||grad_W L_i||
        current = stacked.detach().to(w)
        if bool(torch.isnan(self.initial_losses).any()):
            if not bool((current > 0).all()) or not bool(torch.isfinite(current).all()):
                raise ValueError(
                    f"the first losses become L(0) and must be finite and positive, got "
                    f"{current.tolist()}"
                )
            self.initial_losses.copy_(current)
        big_g = w.abs() * grad_norms  # lines 2-3
        ratio = current / self.initial_losses.to(w)  # lines 2-3
        inverse_rate = ratio / ratio.mean()  # lines 4-5
        target = (big_g.mean() * inverse_rate.pow(self.asymmetry)).detach()  # line 6
        return (big_g - target).abs().sum()  # line 6

    def step(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_parameters: Iterable[Tensor] | nn.Module,
    ) -> Tensor:
        r"""One GradNorm update (Algorithm 1 lines 1-9, then clamp and renormalise).

        Returns
        -------
        Tensor
            The new weights ``(num_tasks,)`` (a detached copy).
        """
        lg = self.loss(losses, shared_parameters)
        (grad,) = torch.autograd.grad(lg, [self.weights])
        if self._optimizer is None:
            if self.optimizer_name == "adam":
                self._optimizer = torch.optim.Adam([self.weights], lr=self.lr)
            else:
                self._optimizer = torch.optim.SGD([self.weights], lr=self.lr)
        self.weights.grad = grad
        self._optimizer.step()
        self.weights.grad = None
        with torch.no_grad():
            self.weights.clamp_(min=self.min_weight)
            total = self.weights.sum()
            if float(total) <= 0:
                raise ValueError("all GradNorm weights reached zero; lower lr or raise min_weight")
            self.weights.mul_(self.weight_sum / total)
        return self.weights.detach().clone()
