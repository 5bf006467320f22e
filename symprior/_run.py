r"""Executing a run configuration into a run directory (the engine behind ``symprior fit``).

A run directory holds::

    config.toml        the configuration as given (or config.yaml)
    config.json        the validated configuration
    checkpoints/       the engine's checkpoint (resume with ``symprior fit RUN_DIR --resume``)
    posterior.pt       the Posterior (plain tensors)
    posterior.nc       ArviZ InferenceData (netCDF)
    summary.csv        per-layer posterior equivariance levels: mean, sd, HDI
    levels.png         forest plot of the levels
    result.json        engine, log evidence, levels, held-out metrics

Files are written atomically; an existing finished run is never overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from symprior._config import (
    ConfigError,
    RunConfig,
    _hyper,
    check_standardize,
    load_config,
    make_prior,
)
from symprior._files import atomic_write

__all__ = ["build", "execute", "hdi", "input_statistics", "load_run"]

CONFIG_NAMES = ("config.toml", "config.yaml", "config.yml")


def hdi(samples: torch.Tensor, prob: float = 0.94) -> tuple[float, float]:
    r"""The narrowest interval holding ``prob`` of the draws (highest density interval)."""
    x = samples.detach().double().flatten().sort().values
    n = x.numel()
    if n == 1:
        return float(x[0]), float(x[0])
    k = max(1, min(n - 1, math.ceil(prob * n) - 1))
    widths = x[k:] - x[: n - k]
    i = int(widths.argmin())
    return float(x[i]), float(x[i + k])


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def build(config: RunConfig) -> tuple[Any, Any, Any]:
    r"""The model, the training data ``(x, y)`` and the held-out data (or ``None``)."""
    from symprior.data import DATASETS
    from symprior.models import Categorical, Gaussian, SymmetryModel
    from symprior.models.zoo import ZOO

    run = config.run
    torch.manual_seed(int(run.get("seed", 0)))
    options = {k: v for k, v in config.data.items() if k != "name"}
    try:
        dataset = DATASETS[config.data["name"]](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[data]: {err}") from None
    x, y = dataset.x, dataset.y
    dtype = torch.float64 if run.get("dtype") == "float64" else torch.float32
    if x.is_floating_point():
        x = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    fraction = float(run.get("test_fraction", 0.0))
    held_out = None
    if fraction > 0:
        n_test = max(1, round(fraction * x.shape[0]))
        held_out = (x[-n_test:], y[-n_test:])
        x, y = x[:-n_test], y[:-n_test]
    x_shift, x_scale = input_statistics(x, str(run.get("standardize", "none")))
    if (x_shift, x_scale) != (0.0, 1.0):
        x = (x - x_shift) / x_scale
        if held_out is not None:
            held_out = ((held_out[0] - x_shift) / x_scale, held_out[1])
    model_options = {k: v for k, v in config.model.items() if k != "name"}
    try:
        net = ZOO[config.model["name"]](**model_options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model]: {err}") from None
    lik: Any
    if config.likelihood["name"] == "categorical":
        lik = Categorical()
    else:
        scale = config.likelihood.get("scale")
        lik = Gaussian(None if scale is None else _hyper(scale, "[likelihood] scale"))
    priors = {
        pattern: make_prior(dict(spec), f"[priors.{pattern!r}]")
        for pattern, spec in config.priors.items()
    }
    try:
        model = SymmetryModel(net.to(x.dtype), lik, priors=priors or None)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[priors]: {err}") from None
    return model, (x, y), held_out


def input_statistics(x: torch.Tensor, how: str) -> tuple[float, float]:
    r"""``(shift, scale)`` of ``[run] standardize`` from the training inputs ``x``.

    * ``"none"``: ``(0, 1)``;
    * ``"scale"``: ``(0, rms)``, one positive factor for every input entry. A scalar multiple
      commutes with every linear group action, so it keeps an equivariant model equivariant
      whatever the input representation (vectors, tensors, images);
    * ``"center_scale"``: ``(mean, std)`` over all entries. Subtracting a constant commutes with
      the action only where constants are invariant (scalar inputs, images under rotations and
      circular shifts), not for vector inputs: use ``"scale"`` there.

    Statistics come from the training split only and apply unchanged to the held-out split; the
    split and the data are rebuilt from the configuration, so a finished run reloads with the
    same statistics. Integer inputs (class indices) are left alone.
    """
    check_standardize(how)
    if how == "none" or not x.is_floating_point() or x.numel() == 0:
        return 0.0, 1.0
    values = x.detach().double()
    if how == "scale":
        shift, scale = 0.0, float(values.square().mean().sqrt())
    else:
        shift = float(values.mean())
        scale = float(values.std()) if values.numel() > 1 else 0.0
    if not math.isfinite(scale) or scale <= 0.0:
        raise ConfigError(
            f"[run] standardize = {how!r}: the training inputs have no spread to scale by "
            f"(scale {scale!r})"
        )
    return shift, scale


def load_run(run_dir: str | Path) -> tuple[RunConfig, Any, Any, Any, Any]:
    r"""Rebuild ``(config, model, data, held_out, posterior)`` of a finished run directory."""
    from symprior.inference import Posterior

    run_dir = Path(run_dir)
    config_path = next((run_dir / n for n in CONFIG_NAMES if (run_dir / n).exists()), None)
    if config_path is None:
        raise ConfigError(f"{run_dir} is not a run directory (no config.toml)")
    if not (run_dir / "posterior.pt").exists():
        raise ConfigError(f"{run_dir} holds no finished run (no posterior.pt); resume it first")
    config = load_config(config_path)
    model, data, held_out = build(config)
    posterior = Posterior.load(run_dir / "posterior.pt", model=model)
    return config, model, data, held_out, posterior


def _level_rows(posterior: Any, num_samples: int, prob: float) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    levels = posterior.equivariance_levels(num_samples, gen)
    rows = []
    for layer, draws in levels.items():
        lo, hi = hdi(draws, prob)
        rows.append(
            {
                "layer": layer,
                "mean": float(draws.double().mean()),
                "sd": float(draws.double().std()) if draws.numel() > 1 else 0.0,
                f"hdi_{int(prob * 100)}_low": lo,
                f"hdi_{int(prob * 100)}_high": hi,
            }
        )
    return rows


def _metrics(posterior: Any, model: Any, held_out: Any, num_samples: int) -> dict[str, float]:
    if held_out is None:
        return {}
    x, y = held_out
    pred = posterior.predict(x, num_samples, torch.Generator().manual_seed(1))
    if model.likelihood_list[0].__class__.__name__ == "Categorical":
        return {"test_accuracy": float((pred.argmax(-1) == y).double().mean())}
    return {"test_rmse": float(((pred - y) ** 2).mean().sqrt())}


def execute(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    config_source: Path | None = None,
    checkpoint_every: int = 10,
) -> dict[str, Any]:
    r"""Fit ``config`` into ``run_dir`` and write the run files; returns ``result.json``'s dict."""
    from symprior.inference._fit import make_engine

    run_dir = Path(run_dir)
    if (run_dir / "posterior.pt").exists() and not resume:
        raise ConfigError(
            f"{run_dir} already holds a finished run; choose another [run] output or remove it"
        )
    if (run_dir / "checkpoints").exists() and not resume:
        raise ConfigError(f"{run_dir} holds an interrupted run; add --resume to continue it")
    run_dir.mkdir(parents=True, exist_ok=True)
    if config_source is not None and config_source.resolve().parent != run_dir.resolve():
        target = run_dir / ("config" + config_source.suffix)
        content = config_source.read_bytes()
        atomic_write(target, lambda handle: handle.write(content))
    _write_text(run_dir / "config.json", json.dumps(config.as_dict(), indent=2, default=str))

    model, data, held_out = build(config)
    run = config.run
    engine_options = {k: v for k, v in config.engine.items() if k != "name"}
    engine_options.setdefault("checkpoint_dir", str(run_dir / "checkpoints"))
    engine_options.setdefault("checkpoint_every", checkpoint_every)
    engine_options["progress"] = not quiet and engine_options.get("progress", True)
    engine_options.setdefault("seed", int(run.get("seed", 0)))
    engine_options.setdefault("device", str(run.get("device", "cpu")))
    try:
        engine = make_engine(config.engine["name"], **engine_options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[engine]: {err}") from None
    posterior = engine.fit(model, data, resume=resume)
    posterior.save(run_dir / "posterior.pt")

    num_samples = int(run.get("num_samples", 200))
    rows = _level_rows(posterior, num_samples, 0.94)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _write_text(run_dir / "summary.csv", buffer.getvalue())
    result: dict[str, Any] = {
        "engine": posterior.engine,
        "levels": rows,
        **_metrics(posterior, model, held_out, num_samples),
    }
    if "log_evidence" in posterior.info:
        result["log_evidence"] = float(posterior.info["log_evidence"])
    _write_diagnostics(posterior, data, run_dir, num_samples)
    _write_text(run_dir / "result.json", json.dumps(result, indent=2))
    return result


def _write_diagnostics(posterior: Any, data: Any, run_dir: Path, num_samples: int) -> None:
    from symprior import diagnostics

    idata = diagnostics.to_arviz(
        posterior, data=data, num_samples=num_samples, generator=torch.Generator().manual_seed(2)
    )
    tmp = run_dir / ".posterior.nc.tmp"
    idata.to_netcdf(str(tmp))
    os.replace(tmp, run_dir / "posterior.nc")
    figure = diagnostics.plot_equivariance_levels(idata)
    atomic_write(run_dir / "levels.png", lambda h: figure.savefig(h, format="png", dpi=120))
