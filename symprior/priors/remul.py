r"""Priors of REMUL's symmetry likelihood (001 eq. 5-8).

REMUL weighs the equivariance loss by :math:`\beta`; as a likelihood, :math:`f(\rho_{in}(g)x)` is
observed around :math:`\rho_{out}(g)f(x)` with precision :math:`\beta`. A Gamma prior on
:math:`\beta` lets the data decide how equivariant the model should be.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist

from symprior.priors._base import Prior

__all__ = ["PrecisionPrior"]


class PrecisionPrior(Prior):
    r"""Gamma prior :math:`\mathrm{Gamma}(\alpha, \beta_0)` on the symmetry precision ``beta``.

    The default :math:`\alpha = 1, \beta_0 = 0.1` has mean 10 and is broad (exponential).
    """

    def __init__(self, concentration: Any = 1.0, rate: Any = 0.1) -> None:
        for name, value in (("concentration", concentration), ("rate", rate)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.concentration = float(concentration)
        self.rate = float(rate)

    def distribution(self, name, param, relaxation=None, cache=None):
        base = dist.Gamma(
            param.new_full(param.shape, self.concentration), param.new_full(param.shape, self.rate)
        )
        return base.to_event(param.ndim) if param.ndim else base

    def __repr__(self) -> str:
        return f"PrecisionPrior(concentration={self.concentration}, rate={self.rate})"
