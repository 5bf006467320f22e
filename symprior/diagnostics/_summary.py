r"""Tabular summaries of posterior equivariance levels and relaxation parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from symprior.inference import Posterior

__all__ = ["as_inference_data", "default_var_names", "summary"]

_SUMMARY_KINDS = ("equivariance_level", "relaxation", "hyperparameter", "likelihood")


def as_inference_data(
    posterior_or_idata: Any,
    *,
    num_samples: int,
    generator: torch.Generator | None,
    name: str = "posterior_or_idata",
) -> Any:
    r"""An ``InferenceData`` from a Posterior (via :func:`to_arviz`) or the data itself."""
    import arviz as az

    if isinstance(posterior_or_idata, Posterior):
        from symprior.diagnostics._arviz import to_arviz

        return to_arviz(posterior_or_idata, num_samples=num_samples, generator=generator)
    if isinstance(posterior_or_idata, az.InferenceData):
        if "posterior" not in posterior_or_idata.groups():
            raise ValueError(f"{name} has no posterior group")
        return posterior_or_idata
    raise TypeError(
        f"{name} must be a symprior Posterior or an arviz.InferenceData, got "
        f"{type(posterior_or_idata).__name__}"
    )


def default_var_names(idata: Any, kinds: Sequence[str]) -> list[str]:
    r"""Posterior variables whose ``kind`` attribute (set by :func:`to_arviz`) is in ``kinds``."""
    return [
        str(name)
        for name, var in idata.posterior.data_vars.items()
        if var.attrs.get("kind") in kinds
    ]


def _hdi_names(hdi_prob: float) -> tuple[str, str]:
    alpha = 1 - hdi_prob
    return f"hdi_{100 * alpha / 2:g}%", f"hdi_{100 * (1 - alpha / 2):g}%"


def summary(
    posterior_or_idata: Any,
    *,
    hdi_prob: float = 0.94,
    var_names: Sequence[str] | None = None,
    relaxations: bool = True,
    num_samples: int = 500,
    generator: torch.Generator | None = None,
) -> Any:
    r"""Per-layer equivariance levels (and relaxation parameters) with mean, sd and HDI.

    Computed with :func:`arviz.summary` (no rounding): ``mean``, ``sd`` and the bounds of the
    ``hdi_prob`` highest-density interval (``hdi_3%``, ``hdi_97%`` for 0.94); with more than one
    chain (MCMC-like data) also ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail`` and
    ``r_hat``. A point posterior (one draw, e.g. MAP) reports its value as the mean and both HDI
    bounds, with ``sd`` 0.

    Parameters
    ----------
    posterior_or_idata : Posterior or arviz.InferenceData
        A posterior is exported with :func:`to_arviz` (``num_samples`` draws from
        ``generator``); ``InferenceData`` is used as is.
    hdi_prob : float
        Probability mass of the HDI, in (0, 1).
    var_names : sequence of str, optional
        Posterior variables to summarise. Default: ``equivariance_level`` and, with
        ``relaxations``, every relaxation, hyperparameter and likelihood site (weights never).
    relaxations : bool
    num_samples : int
    generator : torch.Generator, optional

    Returns
    -------
    pandas.DataFrame
        One row per scalar entry, labelled as ArviZ does (``equivariance_level[layers.0]``).

    Examples
    --------
    >>> import arviz as az, numpy as np
    >>> draws = np.abs(np.random.default_rng(0).normal(size=(1, 100, 2)))
    >>> idata = az.from_dict(posterior={"equivariance_level": draws},
    ...                      dims={"equivariance_level": ["layer"]}, coords={"layer": ["a", "b"]})
    >>> table = summary(idata, var_names=["equivariance_level"])
    >>> list(table.index), list(table.columns)
    (['equivariance_level[a]', 'equivariance_level[b]'], ['mean', 'sd', 'hdi_3%', 'hdi_97%'])
    """
    import arviz as az

    if isinstance(hdi_prob, bool) or not isinstance(hdi_prob, int | float) or not 0 < hdi_prob < 1:
        raise ValueError(f"hdi_prob must be a number in (0, 1), got {hdi_prob!r}")
    if not isinstance(relaxations, bool):
        raise TypeError(f"relaxations must be a bool, got {type(relaxations).__name__}")
    idata = as_inference_data(posterior_or_idata, num_samples=num_samples, generator=generator)
    if var_names is None:
        kinds = _SUMMARY_KINDS if relaxations else _SUMMARY_KINDS[:1]
        names = default_var_names(idata, kinds)
    else:
        if isinstance(var_names, str) or not all(isinstance(v, str) for v in var_names):
            raise TypeError(f"var_names must be a sequence of str, got {var_names!r}")
        names = list(var_names)
        missing = [v for v in names if v not in idata.posterior.data_vars]
        if missing:
            raise ValueError(
                f"var_names {missing} are not posterior variables; they are "
                f"{sorted(map(str, idata.posterior.data_vars))}"
            )
    if not names:
        raise ValueError(
            "nothing to summarise: the posterior has no equivariance_level or relaxation "
            "variables; pass var_names"
        )
    chains = idata.posterior.sizes["chain"]
    draws = idata.posterior.sizes["draw"]
    if chains * draws == 1:
        lower, upper = _hdi_names(hdi_prob)
        point = {
            "mean": np.mean,
            "sd": lambda v: 0.0,
            lower: np.min,
            upper: np.max,
        }
        return az.summary(idata, var_names=names, extend=False, stat_funcs=point, round_to="none")
    return az.summary(
        idata,
        var_names=names,
        kind="all" if chains > 1 else "stats",
        hdi_prob=hdi_prob,
        round_to="none",
    )
