r"""Equivariance metrics, ArviZ export, summaries, plots and model comparison."""

from symprior.diagnostics._equivariance import equivariance_error, equivariance_error_pointwise

__all__ = ["equivariance_error", "equivariance_error_pointwise"]
