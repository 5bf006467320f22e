r"""Equivariance metrics, ArviZ export, summaries, plots and model comparison.

The ArviZ, plotting and comparison names load on first use: ``symprior.models`` imports the
metrics from here, and importing it should not pay for ArviZ and Matplotlib.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from symprior.diagnostics._equivariance import equivariance_error, equivariance_error_pointwise

if TYPE_CHECKING:
    from symprior.diagnostics._arviz import to_arviz
    from symprior.diagnostics._compare import compare
    from symprior.diagnostics._plots import (
        plot_equivariance_errors,
        plot_equivariance_levels,
        plot_relaxation_posteriors,
    )
    from symprior.diagnostics._posterior_errors import posterior_equivariance_errors
    from symprior.diagnostics._summary import summary

__all__ = [
    "compare",
    "equivariance_error",
    "equivariance_error_pointwise",
    "plot_equivariance_errors",
    "plot_equivariance_levels",
    "plot_relaxation_posteriors",
    "posterior_equivariance_errors",
    "summary",
    "to_arviz",
]

_LAZY = {
    "to_arviz": "_arviz",
    "compare": "_compare",
    "plot_equivariance_errors": "_plots",
    "plot_equivariance_levels": "_plots",
    "plot_relaxation_posteriors": "_plots",
    "posterior_equivariance_errors": "_posterior_errors",
    "summary": "_summary",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"symprior.diagnostics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'symprior.diagnostics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
