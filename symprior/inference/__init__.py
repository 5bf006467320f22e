r"""Inference engines (MAP, SVI, Laplace) and the Posterior they return."""

from symprior.inference._engine import DivergenceError, Engine, TrainOptions
from symprior.inference._fit import ENGINES, fit, make_engine
from symprior.inference._laplace import (
    STRUCTURES,
    SUBSETS,
    CurvatureWarning,
    Laplace,
    linearized_predict,
)
from symprior.inference._map import MAP
from symprior.inference._posterior import (
    DeltaBlock,
    DiagonalBlock,
    FullBlock,
    KroneckerBlock,
    LowRankBlock,
    NoEvidenceError,
    Posterior,
    SiteInfo,
)
from symprior.inference._svi import GUIDES, SVI

__all__ = [
    "ENGINES",
    "GUIDES",
    "MAP",
    "STRUCTURES",
    "SUBSETS",
    "SVI",
    "CurvatureWarning",
    "DeltaBlock",
    "DiagonalBlock",
    "DivergenceError",
    "Engine",
    "FullBlock",
    "KroneckerBlock",
    "Laplace",
    "LowRankBlock",
    "NoEvidenceError",
    "Posterior",
    "SiteInfo",
    "TrainOptions",
    "fit",
    "linearized_predict",
    "make_engine",
]
