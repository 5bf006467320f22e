r"""Priors over relaxation parameters, one module per family, and the default for each role."""

from symprior.priors._base import (
    CallablePrior,
    DistributionPrior,
    Hyperparameter,
    NormalPrior,
    Prior,
    PriorSpec,
    as_prior,
    expand_to,
)
from symprior.priors._defaults import default_prior
from symprior.priors.lie_algebra import ResidualNetworkPrior, WidthPrior
from symprior.priors.nonstationary import FrequencyPrior
from symprior.priors.power import MagnitudePrior
from symprior.priors.remul import PrecisionPrior
from symprior.priors.rpp import EquivariantPrior, ResidualPrior, scale_from_weight_decay

__all__ = [
    "CallablePrior",
    "DistributionPrior",
    "EquivariantPrior",
    "FrequencyPrior",
    "Hyperparameter",
    "MagnitudePrior",
    "NormalPrior",
    "PrecisionPrior",
    "Prior",
    "PriorSpec",
    "ResidualNetworkPrior",
    "ResidualPrior",
    "WidthPrior",
    "as_prior",
    "default_prior",
    "expand_to",
    "scale_from_weight_decay",
]
