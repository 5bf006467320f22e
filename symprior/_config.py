r"""Run configurations for the ``symprior`` command: loading, validation and building.

A configuration is a TOML (or YAML) file with the tables ``data``, ``model``, ``likelihood``,
``priors`` (optional), ``engine`` and ``run`` (optional)::

    [data]                      # a symprior.data.DATASETS name and its keyword options
    name = "synthetic"
    num_samples = 256
    epsilon = 0.5

    [model]                     # a symprior.models.zoo.ZOO name and its keyword options
    name = "rpp_mlp"
    group = "SO2"
    rep_in = "V"
    rep_out = "Scalar"
    hidden = "8V + 8Scalar"

    [likelihood]
    name = "gaussian"           # or "categorical"
    scale = 0.1                 # omit to learn the noise

    [priors."*residual"]        # glob over relaxation parameters -> a prior
    name = "residual"           # residual | frequency | magnitude | width | residual_network
    scale = 0.1                 # a number, or {distribution = "gamma", concentration = 2, rate = 20}

    [engine]
    name = "laplace"            # map | svi | laplace, plus the engine's options
    num_epochs = 200

    [run]
    seed = 0
    device = "cpu"
    output = "runs/demo"
    num_samples = 200           # posterior draws for summaries
    dtype = "float32"           # or "float64" for data and model
    test_fraction = 0.2         # the last fifth of the data is held out
    standardize = "scale"       # inputs / their RMS ("center_scale": (x - mean) / std); "none"

Every problem is reported as one :class:`ConfigError` line naming the key.
"""

from __future__ import annotations

import inspect
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro.distributions as dist

__all__ = ["ConfigError", "RunConfig", "load_config", "parse_config"]

TABLES = ("data", "model", "likelihood", "priors", "engine", "run")
RUN_KEYS = {
    "seed": int,
    "device": str,
    "output": str,
    "num_samples": int,
    "test_fraction": float,
    "dtype": str,
    "standardize": str,
}

#: ``[run] standardize`` values: how inputs are rescaled by statistics of the training split.
STANDARDIZE = ("none", "scale", "center_scale")


class ConfigError(ValueError):
    r"""A problem with a run configuration, as one line naming the key."""


def check_standardize(value: object) -> str:
    r"""``value`` if it is one of :data:`STANDARDIZE`, else a :class:`ConfigError` naming the key."""
    if not isinstance(value, str) or value not in STANDARDIZE:
        raise ConfigError(
            f"[run] standardize must be one of {', '.join(map(repr, STANDARDIZE))}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class RunConfig:
    r"""A validated configuration (plain dicts, ready to build)."""

    data: dict[str, Any]
    model: dict[str, Any]
    likelihood: dict[str, Any]
    priors: dict[str, dict[str, Any]]
    engine: dict[str, Any]
    run: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "model": self.model,
            "likelihood": self.likelihood,
            "priors": self.priors,
            "engine": self.engine,
            "run": self.run,
        }


def load_config(path: str | Path) -> RunConfig:
    r"""Read and validate a TOML (``.toml``) or YAML (``.yaml``/``.yml``) configuration file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config must be a file, got the directory {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as err:  # pragma: no cover - pyyaml is a dependency
            raise ConfigError("reading YAML configs needs pyyaml (pip install pyyaml)") from err
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None
    elif path.suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    else:
        raise ConfigError(f"config must be a .toml, .yaml or .yml file, got {path.name}")
    return parse_config(raw)


def _table(raw: Mapping[str, Any], name: str, required: bool) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        if required:
            raise ConfigError(f"missing table [{name}]")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {type(value).__name__}")
    return dict(value)


def _check_kwargs(fn: Callable[..., Any], options: Mapping[str, Any], where: str) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{where}: unknown key {key!r} (accepted: {', '.join(accepted)})")


def parse_config(raw: Any) -> RunConfig:
    r"""Validate a configuration given as nested mappings."""
    from symprior.data import DATASETS
    from symprior.models.zoo import ZOO

    if not isinstance(raw, Mapping):
        raise ConfigError("a config must be a table of tables ([data], [model], ...)")
    unknown = [k for k in raw if k not in TABLES]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (tables: {', '.join(TABLES)})")
    data = _table(raw, "data", True)
    model = _table(raw, "model", True)
    likelihood = _table(raw, "likelihood", True)
    priors = _table(raw, "priors", False)
    engine = _table(raw, "engine", False) or {"name": "map"}
    run = _table(raw, "run", False)

    for table, registry, where in ((data, DATASETS, "data"), (model, ZOO, "model")):
        name = table.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"[{where}] needs name = one of {sorted(registry)}")
        if name not in registry:
            raise ConfigError(f"[{where}] name {name!r} is not one of {sorted(registry)}")
        _check_kwargs(registry[name], {k: v for k, v in table.items() if k != "name"}, f"[{where}]")

    lik = likelihood.get("name")
    if lik not in ("gaussian", "categorical"):
        raise ConfigError(f"[likelihood] name must be 'gaussian' or 'categorical', got {lik!r}")
    allowed = {"gaussian": {"name", "scale"}, "categorical": {"name"}}[lik]
    for key in likelihood:
        if key not in allowed:
            raise ConfigError(f"[likelihood]: unknown key {key!r} for {lik}")
    if "scale" in likelihood:
        _hyper(likelihood["scale"], "[likelihood] scale")

    for pattern, spec in priors.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"[priors] {pattern!r} must be a table with name = ...")
        make_prior(dict(spec), f"[priors.{pattern!r}]")

    name = engine.get("name", "map")
    if name not in ("map", "svi", "laplace"):
        raise ConfigError(f"[engine] name must be 'map', 'svi' or 'laplace', got {name!r}")
    engine = {"name": name, **{k: v for k, v in engine.items() if k != "name"}}

    for key, value in run.items():
        if key not in RUN_KEYS:
            raise ConfigError(f"[run]: unknown key {key!r} (accepted: {', '.join(RUN_KEYS)})")
        expected = RUN_KEYS[key]
        ok = isinstance(value, expected) and not isinstance(value, bool)
        if expected is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(
                f"[run] {key} must be {expected.__name__}, got {type(value).__name__} {value!r}"
            )
    if run.get("dtype", "float32") not in ("float32", "float64"):
        raise ConfigError(f"[run] dtype must be 'float32' or 'float64', got {run['dtype']!r}")
    check_standardize(run.get("standardize", "none"))
    if "test_fraction" in run and not 0 <= run["test_fraction"] < 1:
        raise ConfigError(f"[run] test_fraction must be in [0, 1), got {run['test_fraction']!r}")
    return RunConfig(data, model, likelihood, {k: dict(v) for k, v in priors.items()}, engine, run)


_DISTRIBUTIONS: dict[str, Callable[..., Any]] = {
    "gamma": dist.Gamma,
    "lognormal": dist.LogNormal,
    "halfnormal": dist.HalfNormal,
    "halfcauchy": dist.HalfCauchy,
}


def _hyper(value: Any, where: str) -> Any:
    """A number or a {distribution = ..., ...} table -> a number or a Pyro distribution."""
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a positive number or a distribution table")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where} must be > 0, got {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        kind = value.get("distribution")
        if kind not in _DISTRIBUTIONS:
            raise ConfigError(
                f"{where}: distribution must be one of {sorted(_DISTRIBUTIONS)}, got {kind!r}"
            )
        options = {k: v for k, v in value.items() if k != "distribution"}
        try:
            return _DISTRIBUTIONS[kind](**{k: float(v) for k, v in options.items()})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: bad {kind} parameters {options}: {err}") from None
    raise ConfigError(f"{where} must be a positive number or a distribution table, got {value!r}")


def make_prior(spec: dict[str, Any], where: str) -> Any:
    r"""A prior object from a ``{name = ..., ...}`` table."""
    from symprior import priors

    makers: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
        "residual": (priors.ResidualPrior, ("scale", "shared")),
        "frequency": (priors.FrequencyPrior, ("lam", "shared")),
        "magnitude": (priors.MagnitudePrior, ("loc", "scale", "shared")),
        "width": (priors.WidthPrior, ("scale", "loc", "shared")),
        "residual_network": (priors.ResidualNetworkPrior, ("scale", "shared")),
        "normal": (lambda scale: dist.Normal(0.0, scale), ("scale",)),
    }
    name = spec.get("name")
    if name not in makers:
        raise ConfigError(f"{where} name must be one of {sorted(makers)}, got {name!r}")
    maker, keys = makers[name]
    options = {}
    for key, value in spec.items():
        if key == "name":
            continue
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r} for {name} (accepted: {keys})")
        if key in ("scale", "lam"):
            value = _hyper(value, f"{where} {key}")
        elif key == "shared" and not isinstance(value, bool):
            raise ConfigError(f"{where} shared must be true or false")
        options[key] = value
    try:
        return maker(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
