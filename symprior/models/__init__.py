r"""The Pyro model (:class:`SymmetryModel`), likelihoods and ready-made networks."""

from symprior.models._likelihoods import Categorical, Gaussian, Likelihood, SymmetryLikelihood
from symprior.models._model import SymmetryModel
from symprior.models._prior_predictive import PriorSymmetry, prior_predictive_symmetry

__all__ = [
    "Categorical",
    "Gaussian",
    "Likelihood",
    "PriorSymmetry",
    "SymmetryLikelihood",
    "SymmetryModel",
    "prior_predictive_symmetry",
]
