r"""Relaxed (approximately equivariant) layers, one module per family, and the relaxation registry.

Nothing here imports Pyro: every layer is a plain :class:`torch.nn.Module`.
"""

from symprior.nn._relaxation import (
    FAMILIES,
    Relaxation,
    RelaxedModule,
    equivariance_levels,
    relaxation_parameters,
    set_strict,
)

__all__ = [
    "FAMILIES",
    "Relaxation",
    "RelaxedModule",
    "equivariance_levels",
    "relaxation_parameters",
    "set_strict",
]
