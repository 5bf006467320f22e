r"""Testing helpers shipped with symprior: equivariance checks with dtype-keyed tolerances.

The error of ``f`` at an element ``g`` on inputs ``x`` is the relative sup-norm

.. math::

    e(g) = \frac{\max |f(\rho_{in}(g) x) - \rho_{out}(g) f(x)|}
                {\max(1, \max|\rho_{out}(g) f(x)|)}.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from symprior.groups import Group, Rep

__all__ = ["DEFAULT_TOLERANCES", "assert_equivariant", "equivariance_errors"]

#: Tolerances on :math:`e(g)` for exact actions, keyed by dtype (DESIGN: float64 1e-10,
#: float32 1e-5).
DEFAULT_TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}

Action = Rep | Callable[[Tensor, Tensor], Tensor]


def _as_action(action: Action, name: str) -> Callable[[Tensor, Tensor], Tensor]:
    if isinstance(action, Rep):
        return action.act
    if callable(action):
        return action
    raise TypeError(f"{name} must be a Rep or a callable (g, x) -> x, got {type(action).__name__}")


def _run(f: Callable[[Tensor], Tensor], x: Tensor, seed: int) -> Tensor:
    # Re-seed the global RNG so a stochastic forward (random grids in training mode) draws the
    # same samples for x and for g x.
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return f(x)


def equivariance_errors(
    f: Callable[[Tensor], Tensor],
    group: Group,
    inputs: Tensor,
    *,
    rep_in: Action,
    rep_out: Action,
    elements: Tensor | None = None,
    num_elements: int = 8,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    r"""Relative errors :math:`e(g)` ``(m,)`` and the elements ``(m, n, n)`` they belong to.

    ``elements`` default to ``group.sample(num_elements, generator)`` (seed 0 if no generator).
    """
    if not isinstance(group, Group):
        raise TypeError(f"group must be a symprior.groups.Group, got {type(group).__name__}")
    if not isinstance(inputs, Tensor):
        raise TypeError("inputs must be a torch.Tensor")
    act_in, act_out = _as_action(rep_in, "rep_in"), _as_action(rep_out, "rep_out")
    if elements is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        elements = group.sample(num_elements, gen)
    group.check_elements(elements, "elements")
    if elements.ndim == 2:
        elements = elements[None]
    elements = elements.to(inputs.device)
    fx = _run(f, inputs, seed)
    errors = []
    for g in elements:
        lhs = _run(f, act_in(g, inputs), seed)
        rhs = act_out(g, fx)
        scale = max(1.0, float(rhs.detach().abs().amax()))
        errors.append(float((lhs - rhs).detach().abs().amax()) / scale)
    return torch.tensor(errors, dtype=torch.float64), elements


def assert_equivariant(
    f: Callable[[Tensor], Tensor],
    group: Group,
    inputs: Tensor,
    *,
    rep_in: Action,
    rep_out: Action,
    elements: Tensor | None = None,
    num_elements: int = 8,
    generator: torch.Generator | None = None,
    dtypes: Sequence[torch.dtype] | None = (torch.float32, torch.float64),
    modes: Sequence[str] = ("train", "eval"),
    device: torch.device | str | None = None,
    atol: float | None = None,
) -> float:
    r"""Assert that ``f`` is equivariant: :math:`f(\rho_{in}(g)x) = \rho_{out}(g) f(x)`.

    Parameters
    ----------
    f : callable or nn.Module
        A module is deep-copied, cast to each dtype in ``dtypes`` and run in each of ``modes``;
        a plain callable is run once on ``inputs`` as given (``dtypes=None``).
    group : Group
    inputs : Tensor
        A batch of inputs; cast to each dtype.
    rep_in, rep_out : Rep or callable
        The actions on inputs and outputs: a :class:`~symprior.groups.Rep` (``rep.act``) or a
        callable ``(g, x) -> x`` such as a wrapper of :func:`~symprior.groups.transform_image`.
    elements : Tensor, optional
        Elements ``(m, n, n)`` to test; default: ``num_elements`` draws of ``group.sample``.
    atol : float, optional
        Tolerance on the relative error; default :data:`DEFAULT_TOLERANCES` for the dtype.

    Returns
    -------
    float
        The largest relative error seen.

    Raises
    ------
    AssertionError
        Naming the group, the element, the dtype, the mode and the error.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable or an nn.Module, got {type(f).__name__}")
    worst = 0.0
    is_module = isinstance(f, nn.Module)
    dtype_list: list[torch.dtype | None] = list(dtypes) if dtypes else [None]
    for dtype in dtype_list:
        for mode in modes if is_module else ("call",):
            fn: Callable[[Tensor], Tensor] = f
            x = inputs if device is None else inputs.to(device)
            if is_module:
                assert isinstance(f, nn.Module)
                module = copy.deepcopy(f)
                if dtype is not None:
                    module = module.to(dtype=dtype)
                if device is not None:
                    module = module.to(device)
                module.train(mode == "train")
                fn = module
            if dtype is not None and x.is_floating_point():
                x = x.to(dtype)
            tol = atol if atol is not None else DEFAULT_TOLERANCES.get(x.dtype, 1e-5)
            errors, elems = equivariance_errors(
                fn,
                group,
                x,
                rep_in=rep_in,
                rep_out=rep_out,
                elements=elements,
                num_elements=num_elements,
                generator=generator,
            )
            i = int(errors.argmax())
            worst = max(worst, float(errors[i]))
            if float(errors[i]) > tol:
                raise AssertionError(
                    f"not equivariant under {group!r}: relative error {float(errors[i]):.3e} > "
                    f"{tol:.1e} (dtype {x.dtype}, mode {mode}, device {x.device}) at element\n"
                    f"{elems[i].cpu().numpy()}"
                )
    return worst
