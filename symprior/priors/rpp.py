r"""Priors of the residual pathway family (Finzi, Benton and Wilson 2021; DESIGN.md family 1).

RPP puts a broad Gaussian on the equivariant coefficients ``a`` and a narrow one on the residual
``B``. The reference code trains by MAP with weight decays :math:`1e{-3}` (equivariant) and
:math:`1e2` (residual); a penalty :math:`\mathrm{wd}\,\|w\|^2` is the negative log density of
:math:`N(0, 1/(2\,\mathrm{wd}))`, so the default scales are :math:`(2\,\mathrm{wd})^{-1/2}`.
"""

from __future__ import annotations

import math
from typing import Any

from symprior.priors._base import Hyperparameter, NormalPrior

__all__ = [
    "EQUIVARIANT_SCALE",
    "RESIDUAL_SCALE",
    "EquivariantPrior",
    "ResidualPrior",
    "scale_from_weight_decay",
]


def scale_from_weight_decay(weight_decay: float) -> float:
    r"""The Gaussian scale whose negative log density is :math:`\mathrm{wd}\,\|w\|^2` + const."""
    if not weight_decay > 0:
        raise ValueError(f"weight_decay must be > 0, got {weight_decay!r}")
    return 1.0 / math.sqrt(2.0 * weight_decay)


#: :math:`(2 \cdot 10^2)^{-1/2} \approx 0.0707`, the RPP reference residual weight decay.
RESIDUAL_SCALE = scale_from_weight_decay(1e2)
#: :math:`(2 \cdot 10^{-3})^{-1/2} \approx 22.4`, the RPP reference equivariant weight decay.
EQUIVARIANT_SCALE = scale_from_weight_decay(1e-3)


class ResidualPrior(NormalPrior):
    r"""Gaussian prior :math:`N(0, \mathrm{scale}^2 I)` on RPP residual weights ``B``.

    Parameters
    ----------
    scale : float or Distribution
        Default :data:`RESIDUAL_SCALE` (reference weight decay 1e2). A distribution makes a
        hierarchical prior whose site (``"residual_scale"``) measures how much symmetry the data
        allow.
    shared : bool
        One scale site for every residual (default) or one per layer parameter, named
        ``"<parameter>:residual_scale"``.

    Examples
    --------
    >>> import torch
    >>> p = ResidualPrior(0.1)
    >>> round(float(p.distribution("w", torch.zeros(3)).log_prob(torch.zeros(3))), 4)
    4.1509
    """

    def __init__(self, scale: Any = RESIDUAL_SCALE, *, shared: bool = True) -> None:
        super().__init__(Hyperparameter(scale, "scale", shared=shared, site_name="residual_scale"))


class EquivariantPrior(NormalPrior):
    r"""Broad Gaussian :math:`N(0, \mathrm{scale}^2 I)` on equivariant coefficients ``a``.

    Default :data:`EQUIVARIANT_SCALE` (reference weight decay 1e-3); used as a ``weight_prior``.
    """

    def __init__(self, scale: Any = EQUIVARIANT_SCALE, *, shared: bool = True) -> None:
        super().__init__(
            Hyperparameter(scale, "scale", shared=shared, site_name="equivariant_scale")
        )
