r"""Comparison of symmetry hypotheses by Laplace evidence and PSIS-LOO."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from importlib import import_module
from typing import Any

import numpy as np
import torch
from torch import Tensor

from symprior.diagnostics._arviz import OBS, to_arviz
from symprior.diagnostics._draws import check_data, check_generator, check_posterior, is_point
from symprior.inference import NoEvidenceError

__all__ = ["COMPARE_COLUMNS", "compare"]

#: The columns of :func:`compare`, in order.
COMPARE_COLUMNS = (
    "engine",
    "log_evidence",
    "d_log_evidence",
    "evidence_weight",
    "elpd_loo",
    "se",
    "p_loo",
    "elpd_diff",
    "dse",
    "pareto_k_max",
    "loo_warning",
    "rank",
)


def _log_evidence(posterior: Any) -> float:
    try:
        return float(posterior.log_evidence())
    except NoEvidenceError:
        return math.nan


def compare(
    posteriors: Mapping[str, Any],
    data: tuple[Tensor, Tensor],
    *,
    num_samples: int = 500,
    generator: torch.Generator | None = None,
) -> Any:
    r"""Rank symmetry hypotheses (strict / relaxed / none, or different groups) on the same data.

    Two criteria, both on the log scale (higher is better):

    * **Laplace log evidence** :math:`\log p(\mathcal D \mid \mathcal M)` (engines that have one;
      NaN otherwise), with ``d_log_evidence`` (best minus this) and ``evidence_weight``, the
      posterior probability of each hypothesis under equal prior odds (a softmax of the
      evidences; NaN unless every hypothesis has one).
    * **PSIS-LOO** (Vehtari, Gelman & Gabry 2017) with :func:`arviz.loo` on the pointwise
      log-likelihood of ``num_samples`` posterior draws (:func:`to_arviz`): ``elpd_loo``, its
      standard error ``se``, the effective number of parameters ``p_loo``, ``elpd_diff`` (best
      minus this) with the standard error ``dse`` of that paired difference, the largest Pareto
      :math:`\hat k` and ``loo_warning`` (some :math:`\hat k` above
      :math:`\min(1 - 1/\log_{10} S, 0.7)` for ``S`` draws: the estimate is unreliable; ArviZ's
      warning is reported in this column instead of raised). The draws are independent (Gaussian
      posteriors are sampled directly, not by a Markov chain), so the relative efficiency is 1.
      A point posterior (MAP) has no posterior spread, so its LOO columns are NaN.

    Rows are sorted best first **by log evidence when every hypothesis has one, else by
    elpd_loo** (NaN last); ``rank`` counts from 0 in that order and ``df.attrs["sorted_by"]``
    names the criterion.

    Parameters
    ----------
    posteriors : mapping from hypothesis name to Posterior
        Posteriors with their models attached, fitted to the same data.
    data : (Tensor, Tensor)
        ``(x, y)`` on which LOO is computed.
    num_samples : int
        Posterior draws per hypothesis for LOO.
    generator : torch.Generator, optional
        Source of the draws (used by each hypothesis in turn).

    Returns
    -------
    pandas.DataFrame
        Index: hypothesis names; columns :data:`COMPARE_COLUMNS`.
    """
    import arviz as az

    # pandas ships no type stubs and pandas-stubs is no dependency: use it untyped.
    pd: Any = import_module("pandas")

    if not isinstance(posteriors, Mapping) or not posteriors:
        raise TypeError(
            "posteriors must be a non-empty mapping from hypothesis names to Posteriors"
        )
    for name, post in posteriors.items():
        check_posterior(post, f"posteriors[{name!r}]")
    x, y = check_data(data)
    generator = check_generator(generator)

    rows: dict[str, dict[str, Any]] = {}
    pointwise: dict[str, np.ndarray] = {}
    for name, post in posteriors.items():
        row: dict[str, Any] = {"engine": post.engine, "log_evidence": _log_evidence(post)}
        row.update(
            elpd_loo=math.nan, se=math.nan, p_loo=math.nan, pareto_k_max=math.nan, loo_warning=False
        )
        if not is_point(post):
            idata = to_arviz(
                post, data=(x, y), num_samples=num_samples, generator=generator, pointwise=True
            )
            with warnings.catch_warnings():
                # Surfaced as the loo_warning column instead (as arviz.compare does).
                warnings.filterwarnings(
                    "ignore", message="Estimated shape parameter of Pareto", category=UserWarning
                )
                # Independent draws: relative efficiency 1 (and no posterior group is needed,
                # which a network without relaxation parameters does not have).
                loo = az.loo(idata, pointwise=True, var_name=OBS, reff=1.0)
            pareto_k = np.asarray(loo.pareto_k)
            row.update(
                elpd_loo=float(loo.elpd_loo),
                se=float(loo.se),
                p_loo=float(loo.p_loo),
                pareto_k_max=float(pareto_k.max()),
                loo_warning=bool(loo.warning),
            )
            pointwise[str(name)] = np.asarray(loo.loo_i).reshape(-1)
        rows[str(name)] = row

    df = pd.DataFrame.from_dict(rows, orient="index")
    evidence = df["log_evidence"].to_numpy(dtype=np.float64)
    all_evidence = bool(np.isfinite(evidence).all())
    df["d_log_evidence"] = np.nanmax(evidence) - evidence if np.isfinite(evidence).any() else np.nan
    if all_evidence:
        shifted = np.exp(evidence - evidence.max())
        df["evidence_weight"] = shifted / shifted.sum()
    else:
        df["evidence_weight"] = np.nan
    df["elpd_diff"] = np.nan
    df["dse"] = np.nan
    if pointwise:
        best = max(pointwise, key=lambda k: float(pointwise[k].sum()))
        for name, loo_i in pointwise.items():
            diff = pointwise[best] - loo_i
            df.loc[name, "elpd_diff"] = float(diff.sum())
            df.loc[name, "dse"] = float(math.sqrt(diff.size * diff.var()))
    key = "log_evidence" if all_evidence else "elpd_loo"
    df = df.sort_values(key, ascending=False, na_position="last", kind="stable")
    df["rank"] = np.arange(len(df))
    df = df[list(COMPARE_COLUMNS)]
    df.attrs["sorted_by"] = key
    return df
