r"""Equivariance errors E and E' of 001 eq. 12-13, for any callable, group and actions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from symprior.groups import Group
from symprior.groups._group import check_generator
from symprior.nn.remul import Action, equivariance_pairs

__all__ = ["equivariance_error", "equivariance_error_pointwise"]


def _elements(
    group: Group,
    num_samples: int,
    elements: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    if elements is not None:
        return group.check_elements(elements, "elements").to(device)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    check_generator(generator)
    where = generator.device if generator is not None else device
    return group.sample(num_samples, generator, device=where).to(device)


def _norms(diff: Tensor) -> Tensor:
    """L2 norm over everything after the leading (batch) axis; |.| for scalar outputs."""
    return diff.reshape(diff.shape[0], -1).norm(dim=-1)


def equivariance_error(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    num_samples: int = 100,
    elements: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""The equivariance error :math:`E(f, G)` of 001 eq. 12.

    .. math::

        E = \frac{1}{|D|}\sum_{x\in D}\Big\|\frac{1}{M}\sum_i \rho(g_i) f(x)
            - \frac{1}{M}\sum_i f(\phi(g_i) x)\Big\|_2,

    with the same ``M`` elements for every ``x`` (drawn with ``generator`` unless ``elements`` are
    given), all batched into one call of ``f``.

    Parameters
    ----------
    f : callable
        Maps a batch ``(N, ...)`` to outputs ``(N, ...)``.
    x : Tensor
        Data ``(B, ...)``.
    group : Group
    rep_in, rep_out : Rep or callable
        Input action :math:`\phi` and output action :math:`\rho` (a Rep, or ``action(g, x)``
        with ``g`` ``(N, n, n)`` acting on ``x[k]`` elementwise, e.g. ``transform_image``).
    num_samples : int
        ``M`` (default 100, as in 001 sec. 4.3).
    reduction : {"mean", "none"}
        Average over the data (eq. 12) or the per-point values ``(B,)``.

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V
    >>> x = torch.randn(8, 2, dtype=torch.float64)
    >>> float(equivariance_error(lambda z: 3 * z, x, SO2(), V(SO2()), V(SO2()))) < 1e-12
    True
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    g = _elements(group, num_samples, elements, generator, x.device)
    lhs, rhs = equivariance_pairs(f, x, g, group, rep_in, rep_out)
    per_point = _norms(rhs.mean(0) - lhs.mean(0))
    return per_point.mean() if reduction == "mean" else per_point


def equivariance_error_pointwise(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    num_samples: int = 100,
    elements: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""The pointwise equivariance error :math:`E'(f, G)` of 001 eq. 13.

    .. math::

        E' = \frac{1}{|D|}\sum_{x\in D}\frac{1}{M}\sum_i
             \|f(\phi(g_i)x) - \rho(g_i) f(x)\|_2.

    Arguments as in :func:`equivariance_error`; ``reduction="none"`` returns the ``(M, B)``
    matrix of norms.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    g = _elements(group, num_samples, elements, generator, x.device)
    lhs, rhs = equivariance_pairs(f, x, g, group, rep_in, rep_out)
    m, b = lhs.shape[:2]
    norms = _norms((lhs - rhs).reshape(m * b, *lhs.shape[2:])).reshape(m, b)
    return norms.mean() if reduction == "mean" else norms
