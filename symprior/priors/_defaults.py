r"""The default prior of each ``(family, role)`` of the relaxation registry."""

from __future__ import annotations

from collections.abc import Callable

from symprior.nn import Relaxation
from symprior.priors._base import Prior
from symprior.priors.lie_algebra import ResidualNetworkPrior, WidthPrior
from symprior.priors.nonstationary import FrequencyPrior
from symprior.priors.power import MagnitudePrior
from symprior.priors.rpp import ResidualPrior

__all__ = ["DEFAULTS", "default_prior"]

#: One factory per ``(family, role)``; a fresh prior object per model keeps hyperparameter sites
#: of different models apart.
DEFAULTS: dict[tuple[str, str], Callable[[], Prior]] = {
    ("rpp", "residual"): ResidualPrior,
    ("nonstationary", "omega_prime"): FrequencyPrior,
    ("lie_algebra", "width"): WidthPrior,
    ("lie_algebra", "residual_network"): ResidualNetworkPrior,
    ("power", "magnitude"): MagnitudePrior,
}


def default_prior(relaxation: Relaxation) -> Prior:
    r"""The documented default prior for a relaxation parameter."""
    try:
        return DEFAULTS[(relaxation.family, relaxation.role)]()
    except KeyError:
        raise ValueError(
            f"no default prior for family {relaxation.family!r}, role {relaxation.role!r}; "
            "pass one in priors={pattern: spec}"
        ) from None
