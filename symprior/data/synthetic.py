r"""A synthetic regression task whose symmetry-breaking strength :math:`\epsilon` is known.

Inputs :math:`x \sim N(0, I_2)` in the plane, targets

.. math::

    y = f_{inv}(x) + \epsilon\, f_{break}(x) + \sigma\,\xi, \qquad \xi \sim N(0, 1),

with :math:`f_{inv}(x) = \sin(\|x\|^2)` exactly :math:`SO(2)`-invariant and :math:`f_{break}` of
unit variance under the input distribution and zero mean over every rotation orbit:

* ``"linear"``: :math:`f_{break}(x) = x_1`, breaking every non-trivial rotation;
* ``"quadrupole"``: :math:`f_{break}(x) = (x_1^2 - x_2^2)/2 = \tfrac12 r^2\cos 2\phi`, invariant
  under the 180-degree rotation (the group :math:`C_2`) but not under :math:`C_4` or
  :math:`SO(2)`.

The noise-free target :math:`f = f_{inv} + \epsilon f_{break}` is :math:`\epsilon`-almost
invariant (000 Def. 4.1), and its equivariance error :math:`E` (001 eq. 12) has a closed form:
for group elements whose average of :math:`f_{break}` along every orbit vanishes (Haar-distributed
rotations in the limit, or exactly the :math:`M \ge 3` equally spaced rotations of :math:`C_M`),

.. math::

    E(f, SO(2)) = \frac{1}{|D|}\sum_{x \in D} \Big| f(x) - \frac1M\sum_i f(g_i x) \Big|
                = \epsilon\,\frac{1}{|D|}\sum_{x\in D} |f_{break}(x)|,

whose expectation over :math:`x \sim N(0, I_2)` is :math:`\epsilon\sqrt{2/\pi}` (linear) or
:math:`2\epsilon/\pi` (quadrupole), the value of
:meth:`SyntheticData.expected_equivariance_error`.
The task is a calibration target: the posterior equivariance level should track :math:`\epsilon`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import Tensor

from symprior.data._common import (
    SupervisedData,
    check_dtype,
    check_float,
    check_int,
    make_generator,
)
from symprior.groups import SO2, Rep, Scalar, V

__all__ = ["SyntheticData", "breaking_part", "invariant_part", "synthetic"]

Breaking = Literal["linear", "quadrupole"]
_BREAKINGS = ("linear", "quadrupole")
#: E|f_break(x)| for x ~ N(0, I_2): E|x_1| and E|r^2 cos 2 phi| / 2 = 2 * (2 / pi) / 2.
_MEAN_ABS_BREAK = {"linear": math.sqrt(2 / math.pi), "quadrupole": 2 / math.pi}


def _check_points(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != 2:
        raise ValueError("x must be a Tensor of shape (..., 2)")
    return x


def invariant_part(x: Tensor) -> Tensor:
    r""":math:`f_{inv}(x) = \sin(\|x\|^2)`, ``(..., 2) -> (..., 1)``."""
    return torch.sin(_check_points(x).square().sum(-1, keepdim=True))


def breaking_part(x: Tensor, breaking: Breaking = "linear") -> Tensor:
    r""":math:`f_{break}(x)` of unit variance under :math:`N(0, I_2)`, ``(..., 2) -> (..., 1)``."""
    _check_points(x)
    if breaking == "linear":
        return x[..., :1]
    if breaking == "quadrupole":
        return 0.5 * (x[..., :1].square() - x[..., 1:].square())
    raise ValueError(f"breaking must be one of {_BREAKINGS}, got {breaking!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticData(SupervisedData):
    r"""The synthetic task (module docstring).

    Attributes
    ----------
    x : Tensor
        ``(N, 2)`` points, acted on by ``rep_in`` = ``V(SO2())``.
    y : Tensor
        ``(N, 1)`` targets, acted on by ``rep_out`` = ``Scalar(SO2())`` (invariance).
    epsilon : float
        The symmetry-breaking strength.
    noise_std : float
        :math:`\sigma`.
    breaking : str
        ``"linear"`` or ``"quadrupole"``.
    """

    epsilon: float
    noise_std: float
    breaking: Breaking

    @property
    def group(self) -> SO2:
        """The approximate symmetry, :math:`SO(2)`."""
        return SO2()

    @property
    def rep_in(self) -> Rep:
        """Action on inputs: the defining representation."""
        return V(SO2())

    @property
    def rep_out(self) -> Rep:
        """Action on targets: trivial (the symmetry is an invariance)."""
        return Scalar(SO2())

    def target_function(self, x: Tensor) -> Tensor:
        r"""The noise-free target :math:`f_{inv}(x) + \epsilon f_{break}(x)`, ``(..., 1)``."""
        return invariant_part(x) + self.epsilon * breaking_part(x, self.breaking)

    def expected_equivariance_error(self) -> float:
        r""":math:`E` of :meth:`target_function` for Haar-averaged rotations and
        :math:`x \sim N(0, I_2)`: :math:`\epsilon\sqrt{2/\pi}` or :math:`2\epsilon/\pi`."""
        return self.epsilon * _MEAN_ABS_BREAK[self.breaking]


def synthetic(
    num_samples: int = 256,
    *,
    epsilon: float = 0.1,
    breaking: Breaking = "linear",
    noise_std: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SyntheticData:
    r"""Regression with a known symmetry-breaking strength ``epsilon`` (module docstring).

    Parameters
    ----------
    num_samples : int
        ``N``.
    epsilon : float
        :math:`\epsilon \ge 0`; 0 gives an exactly :math:`SO(2)`-invariant target.
    breaking : {"linear", "quadrupole"}
        The form of :math:`f_{break}`.
    noise_std : float
        :math:`\sigma \ge 0`.
    seed : int
    dtype : torch.dtype

    Returns
    -------
    SyntheticData
        ``x`` ``(N, 2)``, ``y`` ``(N, 1)``.

    Examples
    --------
    >>> from symprior.diagnostics import equivariance_error
    >>> data = synthetic(64, epsilon=0.5, dtype=torch.float64)
    >>> c4 = data.group.exp(torch.arange(4.0, dtype=torch.float64)[:, None] * math.pi / 2)
    >>> err = equivariance_error(data.target_function, data.x, data.group, data.rep_in,
    ...                          data.rep_out, elements=c4)
    >>> bool(torch.isclose(err, 0.5 * data.x[:, 0].abs().mean()))
    True
    """
    check_int(num_samples, "num_samples")
    eps = check_float(epsilon, "epsilon", minimum=0.0)
    noise = check_float(noise_std, "noise_std", minimum=0.0)
    if breaking not in _BREAKINGS:
        raise ValueError(f"breaking must be one of {_BREAKINGS}, got {breaking!r}")
    check_dtype(dtype)
    gen = make_generator(seed)
    x = torch.randn(num_samples, 2, generator=gen, dtype=torch.float64)
    y = invariant_part(x) + eps * breaking_part(x, breaking)
    y = y + noise * torch.randn(num_samples, 1, generator=gen, dtype=torch.float64)
    return SyntheticData(
        x=x.to(dtype), y=y.to(dtype), epsilon=eps, noise_std=noise, breaking=breaking
    )
