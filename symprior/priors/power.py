r"""Priors of the PowerNet family (003: "group structure is maintained but the associated
parameters become distributions", sec. 1 and 3).

The magnitudes :math:`t_k` of the base matrices :math:`A_k = \exp(t_k G_k)` get a Gaussian centred
on the layer's reference (strict) magnitude: the posterior spread of :math:`t_k` is the
quasi-equivariance the data allow.
"""

from __future__ import annotations

from typing import Any

from symprior.priors._base import Hyperparameter, NormalPrior

__all__ = ["DEFAULT_MAGNITUDE_SCALE", "MagnitudePrior"]

#: A 10% spread around the reference magnitude.
DEFAULT_MAGNITUDE_SCALE = 0.1


class MagnitudePrior(NormalPrior):
    r"""Gaussian prior :math:`N(\mathrm{loc}, \mathrm{scale}^2)` on PowerNet magnitudes ``t_k``.

    Parameters
    ----------
    loc : float, optional
        Centre; default the relaxation's strict (reference) magnitude.
    scale : float or Distribution
        Default :data:`DEFAULT_MAGNITUDE_SCALE`; a distribution gives the site
        ``"magnitude_scale"``.
    shared : bool
    """

    def __init__(
        self, loc: float | None = None, scale: Any = DEFAULT_MAGNITUDE_SCALE, *, shared: bool = True
    ) -> None:
        super().__init__(
            Hyperparameter(scale, "scale", shared=shared, site_name="magnitude_scale"), loc
        )
