r"""Priors of the Lie-algebra convolution family (000 Def. 4.2, sec. 4.3).

A :class:`~symprior.nn.lie_algebra.LieAlgebraConv` has two kinds of relaxation parameters: the
sampling widths of the Lie-algebra distribution (strict: the whole group for compact directions,
a reference width for the others) and the output layer of the residual network :math:`R_\theta`
in :math:`N_\theta = \exp + R_\theta` (strict: 0). Both priors are Gaussians centred on the strict
value; their scales say how far from the group structure the data may pull the layer.
"""

from __future__ import annotations

from typing import Any

from symprior.priors._base import Hyperparameter, NormalPrior

__all__ = [
    "DEFAULT_RESIDUAL_NETWORK_SCALE",
    "DEFAULT_WIDTH_SCALE",
    "ResidualNetworkPrior",
    "WidthPrior",
]

#: Residual-network output weights of this size perturb N_theta by a few percent.
DEFAULT_RESIDUAL_NETWORK_SCALE = 0.05
#: Widths may shrink by about a third of a radian (or of the reference width) a priori.
DEFAULT_WIDTH_SCALE = 0.3


class WidthPrior(NormalPrior):
    r"""Gaussian :math:`N(w^*, \mathrm{scale}^2 I)` on the sampling widths, :math:`w^*` strict.

    Parameters
    ----------
    scale : float or Distribution
        Default :data:`DEFAULT_WIDTH_SCALE`; a distribution gives the site ``"width_scale"``.
    loc : float, optional
        Overrides the centre (default: the layer's strict widths).
    shared : bool
    """

    def __init__(
        self, scale: Any = DEFAULT_WIDTH_SCALE, *, loc: float | None = None, shared: bool = True
    ) -> None:
        super().__init__(
            Hyperparameter(scale, "scale", shared=shared, site_name="width_scale"), loc
        )


class ResidualNetworkPrior(NormalPrior):
    r"""Gaussian :math:`N(0, \mathrm{scale}^2 I)` on the output layer of :math:`R_\theta`.

    Parameters
    ----------
    scale : float or Distribution
        Default :data:`DEFAULT_RESIDUAL_NETWORK_SCALE`; a distribution gives the site
        ``"residual_network_scale"``.
    shared : bool
    """

    def __init__(self, scale: Any = DEFAULT_RESIDUAL_NETWORK_SCALE, *, shared: bool = True) -> None:
        super().__init__(
            Hyperparameter(scale, "scale", shared=shared, site_name="residual_network_scale")
        )
