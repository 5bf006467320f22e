r"""Plots of posterior equivariance: levels per layer, relaxation posteriors, E and E'.

Figures are built as :class:`matplotlib.figure.Figure` with an Agg canvas attached directly, never
through :mod:`matplotlib.pyplot`: no global backend is switched and no window opens, so the
functions are safe in scripts, on servers and in notebooks (which display a returned Figure).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from symprior._files import atomic_write
from symprior.diagnostics._summary import as_inference_data, default_var_names

__all__ = ["plot_equivariance_errors", "plot_equivariance_levels", "plot_relaxation_posteriors"]

_RELAXATION_KINDS = ("relaxation", "hyperparameter", "likelihood")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str] | None) -> Any:
    if path is not None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str, a path or None, got {type(path).__name__}")
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return fig


def _hdi(values: np.ndarray, hdi_prob: float) -> tuple[float, float]:
    r"""The narrowest interval holding ``ceil(hdi_prob * n)`` of the sorted draws."""
    v = np.sort(values)
    n = v.size
    k = min(n, max(1, math.ceil(hdi_prob * n)))
    widths = v[k - 1 :] - v[: n - k + 1]
    i = int(np.argmin(widths))
    return float(v[i]), float(v[i + k - 1])


def _check_prob(hdi_prob: Any) -> float:
    if isinstance(hdi_prob, bool) or not isinstance(hdi_prob, int | float) or not 0 < hdi_prob < 1:
        raise ValueError(f"hdi_prob must be a number in (0, 1), got {hdi_prob!r}")
    return float(hdi_prob)


def plot_equivariance_levels(
    posterior_or_idata: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    hdi_prob: float = 0.94,
    num_samples: int = 500,
    generator: torch.Generator | None = None,
) -> Any:
    r"""Forest plot of the posterior equivariance level of every relaxed layer.

    One row per layer (top to bottom in network order, y tick labels = layer names): the
    posterior mean (dot) and the ``hdi_prob`` highest-density interval (line); x axis
    "equivariance level", with the strict value 0 marked.

    Parameters
    ----------
    posterior_or_idata : Posterior or arviz.InferenceData
        Data with an ``equivariance_level`` variable (from :func:`to_arviz`).
    path : str or PathLike, optional
        Where to save the figure as PNG.
    hdi_prob : float
    num_samples : int
        Posterior draws when a Posterior is given.
    generator : torch.Generator, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from symprior.diagnostics._arviz import LEVEL

    hdi_prob = _check_prob(hdi_prob)
    idata = as_inference_data(posterior_or_idata, num_samples=num_samples, generator=generator)
    if LEVEL not in idata.posterior.data_vars:
        raise ValueError(
            "posterior_or_idata has no 'equivariance_level' variable (a network without "
            "relaxed layers?)"
        )
    levels = idata.posterior[LEVEL]
    layers = [str(v) for v in levels.coords["layer"].values]
    values = np.asarray(levels.values).reshape(-1, len(layers))
    fig = _figure(6.0, 1.2 + 0.45 * len(layers))
    ax = fig.add_subplot()
    rows = np.arange(len(layers))
    bounds = np.array([_hdi(values[:, j], hdi_prob) for j in range(len(layers))])
    ax.hlines(rows, bounds[:, 0], bounds[:, 1], color="C0", linewidth=2.5)
    ax.plot(values.mean(0), rows, "o", color="C0", markeredgecolor="white")
    ax.axvline(0.0, color="0.5", linestyle="--", linewidth=1)
    ax.set_yticks(rows, layers)
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_xlabel("equivariance level")
    ax.set_ylabel("layer")
    ax.set_title(f"posterior mean and {100 * hdi_prob:g}% HDI")
    return _save(fig, path)


def plot_relaxation_posteriors(
    posterior_or_idata: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    var_names: Sequence[str] | None = None,
    bins: int = 30,
    max_components: int = 8,
    num_samples: int = 500,
    generator: torch.Generator | None = None,
) -> Any:
    r"""Histograms of the posterior of each relaxation site (one panel per site).

    A site with at most ``max_components`` entries (``omega_prime``, magnitudes, widths,
    residual scales) gets one histogram per entry, labelled by its coordinates; a larger site (an
    RPP residual matrix) gets the histogram of its per-draw L2 norm :math:`\lVert\cdot\rVert_2`.
    A point posterior (one draw) is drawn as vertical lines at the estimates.

    Parameters
    ----------
    posterior_or_idata : Posterior or arviz.InferenceData
    path : str or PathLike, optional
        Where to save the figure as PNG.
    var_names : sequence of str, optional
        Default: every relaxation, hyperparameter and likelihood site (``kind`` attribute).
    bins : int
    max_components : int
    num_samples : int
    generator : torch.Generator, optional

    Returns
    -------
    matplotlib.figure.Figure
        Panel titles are the site names; x labels the value (or ``‖site‖₂``), y labels "density".
    """
    for name, value in (("bins", bins), ("max_components", max_components)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    idata = as_inference_data(posterior_or_idata, num_samples=num_samples, generator=generator)
    if var_names is None:
        names = default_var_names(idata, _RELAXATION_KINDS)
    else:
        if isinstance(var_names, str) or not all(isinstance(v, str) for v in var_names):
            raise TypeError(f"var_names must be a sequence of str, got {var_names!r}")
        names = list(var_names)
        missing = [v for v in names if v not in idata.posterior.data_vars]
        if missing:
            raise ValueError(f"var_names {missing} are not posterior variables")
    if not names:
        raise ValueError("posterior_or_idata has no relaxation sites to plot")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(4.0 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes, names, strict=False):
        var = idata.posterior[name]
        chain_draw = var.sizes["chain"] * var.sizes["draw"]
        flat = np.asarray(var.values, dtype=np.float64).reshape(chain_draw, -1)
        event_dims = [d for d in var.dims if d not in ("chain", "draw")]
        if flat.shape[1] <= max_components:
            columns = flat
            labels = _component_labels(var, event_dims)
            ax.set_xlabel(name if len(labels) == 1 else "value")
        else:
            columns = np.linalg.norm(flat, axis=1, keepdims=True)
            labels = [f"‖{name}‖₂"]
            ax.set_xlabel(f"‖{name}‖₂")
        for j, label in enumerate(labels):
            if chain_draw == 1:
                ax.axvline(columns[0, j], color=f"C{j % 10}", label=label)
            else:
                ax.hist(columns[:, j], bins=bins, density=True, alpha=0.5, label=label)
        ax.set_title(name)
        ax.set_ylabel("density")
        if len(labels) > 1:
            ax.legend(fontsize="small")
    return _save(fig, path)


def _component_labels(var: Any, event_dims: Sequence[str]) -> list[str]:
    if not event_dims:
        return [str(var.name)]
    grids = np.meshgrid(*[var.coords[d].values for d in event_dims], indexing="ij")
    return [", ".join(str(g.flat[i]) for g in grids) for i in range(grids[0].size)]


def _as_values(value: Any, where: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where} must be a tensor or an array of numbers") from err
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"{where} must hold at least one finite value and no NaN/inf")
    return array


def plot_equivariance_errors(
    errors: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    *,
    metric: str = "E",
) -> Any:
    r"""Box plots of equivariance errors, one box per model (e.g. strict / relaxed / none).

    Parameters
    ----------
    errors : mapping from model name to values
        Each value is a tensor or array of draws (the posterior distribution of :math:`E` or
        :math:`E'`, e.g. from :func:`posterior_equivariance_errors`; a single number for a
        deterministic model), or a mapping from metric names to such draws (``{"E": ...,
        "E'": ...}``), which gives one panel per metric.
    path : str or PathLike, optional
        Where to save the figure as PNG.
    metric : str
        The y label when the values are draws of a single metric.

    Returns
    -------
    matplotlib.figure.Figure
        x tick labels are the model names, y labels the metric names (``E``, ``E'``).

    Examples
    --------
    >>> import torch
    >>> draws = torch.rand(50, generator=torch.Generator().manual_seed(0))
    >>> fig = plot_equivariance_errors({"strict": torch.zeros(1), "relaxed": draws})
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()], fig.axes[0].get_ylabel()
    (['strict', 'relaxed'], 'E')
    """
    if not isinstance(errors, Mapping) or not errors:
        raise TypeError("errors must be a non-empty mapping from model names to error draws")
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, got {type(metric).__name__}")
    nested = [isinstance(v, Mapping) for v in errors.values()]
    if any(nested) and not all(nested):
        raise TypeError(
            "errors values must all be draws or all be mappings from metric names to draws"
        )
    panels: dict[str, dict[str, np.ndarray]] = {}
    for model, value in errors.items():
        by_metric = value if isinstance(value, Mapping) else {metric: value}
        for name, draws in by_metric.items():
            panels.setdefault(str(name), {})[str(model)] = _as_values(
                draws, f"errors[{model!r}][{name!r}]"
            )
    fig = _figure(1.5 + 1.3 * len(errors) * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (name, by_model) in zip(axes, panels.items(), strict=True):
        models = list(by_model)
        positions = np.arange(1, len(models) + 1)
        data = [by_model[m] for m in models]
        ax.boxplot(data, positions=positions, widths=0.6, showfliers=False)
        for pos, values in zip(positions, data, strict=True):
            jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
            ax.plot(pos + jitter, values, ".", color="C0", alpha=0.4, markersize=4)
        ax.set_xticks(positions, models)
        ax.set_ylabel(name)
        ax.set_xlabel("model")
        ax.set_title(f"posterior of {name}")
    return _save(fig, path)
