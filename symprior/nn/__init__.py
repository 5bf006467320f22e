r"""Relaxed (approximately equivariant) layers, one module per family, and the relaxation registry.

Nothing here imports Pyro: every layer is a plain :class:`torch.nn.Module`.
"""

from symprior.nn._native import native_status
from symprior.nn._relaxation import (
    FAMILIES,
    Relaxation,
    RelaxedModule,
    equivariance_levels,
    relaxation_parameters,
    set_strict,
)
from symprior.nn.lie_algebra import LieAlgebraConv
from symprior.nn.nonstationary import (
    NonStationaryConv2d,
    NonStationaryGroupConv,
    NonStationaryKernelConfig,
    NonStationaryLifting,
    RandomFourierKernel,
    lifted_action,
    sample_grid_offset,
)
from symprior.nn.power import (
    IMAGE_GENERATOR_KINDS,
    ImageGenerator,
    PowerBlock,
    PowerLayer,
    PowerNet,
    affine_generators,
    image_generators,
    shannon_whittaker_derivative,
)
from symprior.nn.remul import (
    GradNorm,
    RemulLoss,
    augmentation_loss,
    equivariance_loss,
    equivariance_pairs,
    remul_objective,
)
from symprior.nn.rpp import (
    RPPMLP,
    EquivariantLinear,
    GatedNonlinearity,
    RPPLinear,
    hidden_rep,
)

__all__ = [
    "FAMILIES",
    "IMAGE_GENERATOR_KINDS",
    "RPPMLP",
    "EquivariantLinear",
    "GatedNonlinearity",
    "GradNorm",
    "ImageGenerator",
    "LieAlgebraConv",
    "NonStationaryConv2d",
    "NonStationaryGroupConv",
    "NonStationaryKernelConfig",
    "NonStationaryLifting",
    "PowerBlock",
    "PowerLayer",
    "PowerNet",
    "RPPLinear",
    "RandomFourierKernel",
    "Relaxation",
    "RelaxedModule",
    "RemulLoss",
    "affine_generators",
    "augmentation_loss",
    "equivariance_levels",
    "equivariance_loss",
    "equivariance_pairs",
    "hidden_rep",
    "image_generators",
    "lifted_action",
    "native_status",
    "relaxation_parameters",
    "remul_objective",
    "sample_grid_offset",
    "set_strict",
    "shannon_whittaker_derivative",
]
