r"""ArviZ export of a :class:`~symprior.inference.Posterior` (ArviZ has no SVI/Laplace converter).

The naming rule of dims and the variable attributes are documented in :func:`to_arviz`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor

import symprior
from symprior.diagnostics._draws import (
    check_data,
    check_generator,
    check_num_samples,
    check_posterior,
    draw_values,
    network_device,
    num_draws,
    posterior_draws,
)
from symprior.inference import Posterior, SiteInfo
from symprior.inference._posterior import evaluation, substituted
from symprior.nn import RelaxedModule, equivariance_levels

__all__ = ["LEVEL", "OBS", "log_likelihood_draws", "site_dims", "to_arviz"]

#: Name of the posterior variable holding the per-layer equivariance levels.
LEVEL = "equivariance_level"
#: Name of the observed, log-likelihood and posterior-predictive variable (the Pyro site name).
OBS = "obs"

_PER_GENERATOR_ROLES = frozenset({"omega_prime", "width", "magnitude"})
_MATRIX_ROLES = frozenset({"residual", "residual_network"})


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def site_kinds(posterior: Posterior) -> dict[str, str]:
    r"""The kind of every latent site: relaxation, hyperparameter, weight or likelihood."""
    names = posterior.model.site_names()
    kinds = {}
    for site in posterior.sites:
        if site.name in names["relaxations"]:
            kinds[site.name] = "relaxation"
        elif site.name in names["hyperparameters"]:
            kinds[site.name] = "hyperparameter"
        elif site.name in names["weights"]:
            kinds[site.name] = "weight"
        else:
            kinds[site.name] = "likelihood"
    return kinds


def site_dims(
    sites: Sequence[SiteInfo], roles: Mapping[str, str]
) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    r"""Dims and coords of the sites' value axes by the rule of the module docstring.

    Parameters
    ----------
    sites : sequence of SiteInfo
    roles : mapping from site name to :attr:`Relaxation.role` (relaxation sites only)

    Returns
    -------
    dims : dict from site name to its dim names (sites with value axes only)
    coords : dict from dim name to integer coordinates (the shared ``generator`` dim only)
    """
    per_generator = [
        s for s in sites if roles.get(s.name) in _PER_GENERATOR_ROLES and len(s.shape) == 1
    ]
    shared = len({s.shape for s in per_generator}) == 1
    dims: dict[str, list[str]] = {}
    coords: dict[str, list[int]] = {}
    for s in sites:
        if not s.shape:
            continue
        role = roles.get(s.name)
        if s in per_generator:
            dims[s.name] = ["generator" if shared else f"{s.name}_generator"]
            if shared:
                coords["generator"] = list(range(s.shape[0]))
        elif role in _MATRIX_ROLES:
            named = [f"{s.name}_out", f"{s.name}_in"][: len(s.shape)]
            dims[s.name] = named + [f"{s.name}_dim_{i}" for i in range(len(named), len(s.shape))]
        else:
            dims[s.name] = [f"{s.name}_dim_{i}" for i in range(len(s.shape))]
    return dims, coords


def _layer_of(name: str, layers: Sequence[str], root: str) -> str:
    owners = [m for m in layers if m and name.startswith(m + ".")]
    return max(owners, key=len) if owners else root


def level_draws(
    posterior: Posterior, draws: Mapping[str, Tensor], num: int
) -> tuple[list[str], Tensor]:
    r"""Layer names and the equivariance level of every layer for each draw, ``(S, L)``."""
    net = posterior.model.network
    rows = []
    names: list[str] = []
    for i in range(num):
        with torch.no_grad(), substituted(net, draw_values(posterior, draws, i)):
            levels = equivariance_levels(net)
        names = list(levels)
        if not names:  # a network without relaxed layers (e.g. REMUL's unconstrained MLP)
            break
        rows.append(torch.stack([levels[k].detach().double().cpu() for k in names]))
    if not names:
        return [], torch.zeros(num, 0, dtype=torch.float64)
    return names, torch.stack(rows)


def _seed(generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device))


def log_likelihood_draws(
    posterior: Posterior,
    draws: Mapping[str, Tensor],
    num: int,
    x: Tensor,
    y: Tensor,
    *,
    predictive: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Pointwise log-likelihood ``(S, N)`` of each draw and, on request, predictive draws of ``y``.

    Runs ``poutine.trace(poutine.condition(model, data=draw)).get_trace(x, y)`` per draw (point
    weights substituted into the param sites) and evaluates the ``"obs"`` site's
    ``fn.log_prob(value)``: one unscaled term per observation (the data plate's axis). The model
    runs in a private Pyro parameter scope and a forked RNG seeded from ``generator``, so neither
    the caller's parameter store nor its global RNG change.
    """
    model = posterior.model
    device = network_device(posterior)
    x, y = x.to(device), y.to(device)
    seed = _seed(generator)
    devices = [device.index or torch.cuda.current_device()] if device.type == "cuda" else []
    store = pyro.get_param_store()
    rows: list[Tensor] = []
    samples: list[Tensor] = []
    with (
        store.scope(),
        torch.random.fork_rng(devices=devices),
        torch.no_grad(),
        evaluation(model.network),  # the function predictions use
    ):
        torch.manual_seed(seed)
        point: dict[str, Tensor] | None = None
        for i in range(num):
            latent = {k: v[i].to(device) for k, v in draws.items()}
            if point is None:
                point = _param_values(posterior, latent, x, y, device)
            conditioned = pyro.poutine.substitute(
                pyro.poutine.condition(model, data=latent), data=point
            )
            trace = pyro.poutine.trace(conditioned).get_trace(x, y)
            if OBS not in trace.nodes:
                raise ValueError(
                    "the posterior's model has no 'obs' site (a Gaussian or Categorical "
                    "likelihood): there is no pointwise log-likelihood to export"
                )
            fn: Any = trace.nodes[OBS]["fn"]
            rows.append(fn.log_prob(trace.nodes[OBS]["value"]).detach().double().cpu())
            if predictive:
                samples.append(fn.sample().detach().cpu())
    return torch.stack(rows), (torch.stack(samples) if predictive else None)


def _param_values(
    posterior: Posterior,
    latent: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    device: torch.device,
) -> dict[str, Tensor]:
    r"""The point estimates of the model's param sites (weights, a learned noise scale).

    Only names the model really reads are returned: Pyro's ``substitute`` warns about others.
    """
    probe = pyro.poutine.trace(pyro.poutine.condition(posterior.model, data=dict(latent)))
    names = {n for n, s in probe.get_trace(x[:1], y[:1]).nodes.items() if s["type"] == "param"}
    return {k: v.to(device) for k, v in posterior.point.items() if k in names}


def _attrs(posterior: Posterior, num: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "inference_library": "symprior",
        "inference_library_version": symprior.__version__,
        "engine": posterior.engine,
        "num_draws": num,
    }
    for key, value in posterior.info.items():
        if isinstance(value, bool):
            attrs[key] = int(value)
        elif isinstance(value, int | float | str):
            attrs[key] = value
    return attrs


def to_arviz(
    posterior: Posterior,
    *,
    data: tuple[Tensor, Tensor] | None = None,
    num_samples: int = 500,
    generator: torch.Generator | None = None,
    posterior_predictive: bool = False,
    pointwise: bool = True,
    weights: bool = False,
) -> Any:
    r"""ArviZ ``InferenceData`` of a posterior, built with :func:`arviz.from_dict`.

    Groups:

    * ``posterior``: one variable per relaxation parameter, hyperparameter and likelihood site
      (e.g. a random noise scale), weights too with ``weights=True`` (models with a
      ``weight_prior``), and ``equivariance_level`` with dim ``layer`` (the draws of every relaxed
      layer's :meth:`~symprior.nn.RelaxedModule.equivariance_level`, computed from the same draws).
      Dims follow the naming rule in the notes below.
      One chain: ``num_samples`` draws for Gaussian posteriors (SVI, Laplace), **one draw** for
      a point posterior (MAP, an SVI ``delta`` guide).
    * ``observed_data`` and ``constant_data`` (``obs`` = y, ``x``) when ``data=(x, y)`` is given.
    * ``log_likelihood`` (with ``data`` and ``pointwise``): ``obs`` ``(chain, draw, obs_id)``,
      the unscaled log-likelihood of each observation under each draw, so ``az.loo`` works.
    * ``posterior_predictive`` (with ``posterior_predictive=True``): one draw of ``y`` per
      posterior draw.

    Parameters
    ----------
    posterior : Posterior
        With its model attached.
    data : (Tensor, Tensor), optional
        ``(x, y)``, ``x`` ``(N, ...)`` and ``y`` ``(N, ...)``.
    num_samples : int
        Posterior draws (ignored for point posteriors).
    generator : torch.Generator, optional
        Source of the draws (and of the posterior-predictive noise).
    posterior_predictive, pointwise, weights : bool

    Returns
    -------
    arviz.InferenceData

    Notes
    -----
    Dims of a site's value axes (after ``chain`` and ``draw``):

    * ``equivariance_level`` has the dim ``layer``; its coordinates are the relaxed layers'
      module names (those of :func:`symprior.nn.equivariance_levels`).
    * A 1-D relaxation parameter with one entry per generator (roles ``omega_prime``, ``width``
      and ``magnitude``) has the dim ``generator`` (coordinates ``0, 1, ...``) when every such
      site of the posterior has the same length, else ``<site>_generator``.
    * A relaxation parameter of role ``residual`` or ``residual_network`` (a weight matrix
      ``(out, in)`` or a bias ``(out,)``) has the dims ``<site>_out`` and ``<site>_in``, then
      ``<site>_dim_<i>`` for any further axis.
    * Every other axis is ArviZ's default ``<site>_dim_<i>``; scalar sites have no extra dim.
    * Data: ``obs_id`` indexes observations; further axes of ``y`` are ``obs_dim_<i>`` and of
      ``x`` ``x_dim_<i>``.

    Each posterior variable carries ``attrs``: ``kind`` (``"relaxation"``, ``"hyperparameter"``,
    ``"weight"``, ``"likelihood"`` or ``"equivariance_level"``) and, for relaxations, ``family``,
    ``role`` and ``layer``; the plots and summaries read them, so they work on data read back
    from netCDF. ``idata.attrs`` (and the posterior group's) hold the engine, the number of draws
    and the engine's scalar ``info`` (e.g. ``log_evidence``).

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V
    >>> from symprior.inference import SVI
    >>> from symprior.models import Gaussian, SymmetryModel
    >>> from symprior.nn import RPPLinear
    >>> _ = torch.manual_seed(0)
    >>> model = SymmetryModel(RPPLinear(V(SO2()), V(SO2())), Gaussian(0.1))
    >>> x = torch.randn(16, 2)
    >>> post = SVI(num_epochs=2, progress=False).fit(model, (x, x))
    >>> gen = torch.Generator().manual_seed(0)
    >>> idata = to_arviz(post, data=(x, x), num_samples=20, generator=gen)
    >>> idata.posterior["equivariance_level"].dims
    ('chain', 'draw', 'layer')
    >>> idata.log_likelihood["obs"].shape
    (1, 20, 16)
    """
    import arviz as az

    posterior = check_posterior(posterior)
    num_samples = check_num_samples(num_samples)
    generator = check_generator(generator)
    for name, flag in (
        ("posterior_predictive", posterior_predictive),
        ("pointwise", pointwise),
        ("weights", weights),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    xy = check_data(data) if data is not None else None
    if posterior_predictive and xy is None:
        raise ValueError("posterior_predictive=True needs data=(x, y)")

    model = posterior.model
    draws = posterior_draws(posterior, num_samples, generator)
    num = num_draws(posterior, draws, num_samples)
    kinds = site_kinds(posterior)
    exported = [s for s in posterior.sites if weights or kinds[s.name] != "weight"]
    relaxations = {name: rel for name, (_, rel) in model.relaxation_sites.items()}
    dims, coords = site_dims(exported, {k: r.role for k, r in relaxations.items()})

    post: dict[str, np.ndarray] = {s.name: _numpy(draws[s.name])[None] for s in exported}
    layers, levels = level_draws(posterior, draws, num)
    if layers:
        post[LEVEL] = _numpy(levels)[None]
        dims[LEVEL] = ["layer"]
    observed: dict[str, np.ndarray] | None = None
    constant: dict[str, np.ndarray] | None = None
    loglik_group: dict[str, np.ndarray] | None = None
    predictive_group: dict[str, np.ndarray] | None = None
    all_coords: dict[str, Any] = {**coords, "layer": layers}
    if xy is not None:
        x, y = xy
        observed = {OBS: _numpy(y)}
        constant = {"x": _numpy(x)}
        dims[OBS] = ["obs_id"] + [f"obs_dim_{i}" for i in range(y.ndim - 1)]
        dims["x"] = ["obs_id"] + [f"x_dim_{i}" for i in range(x.ndim - 1)]
        all_coords["obs_id"] = list(range(x.shape[0]))
        if pointwise or posterior_predictive:
            loglik, predictive = log_likelihood_draws(
                posterior, draws, num, x, y, predictive=posterior_predictive, generator=generator
            )
            if pointwise:
                loglik_group = {OBS: _numpy(loglik)[None]}
            if predictive is not None:
                predictive_group = {OBS: _numpy(predictive)[None]}

    attrs = _attrs(posterior, num)
    idata = az.from_dict(
        posterior=post,
        posterior_predictive=predictive_group,
        log_likelihood=loglik_group,
        observed_data=observed,
        constant_data=constant,
        coords=all_coords,
        dims=dims,
        attrs=attrs,
    )
    if "posterior" not in idata.groups():
        # Nothing to export (no relaxed layers, weights not asked for): the log-likelihood and
        # data groups alone, which is all PSIS-LOO needs.
        return idata
    idata.posterior.attrs.update(attrs)
    net_layers = [n for n, m in model.network.named_modules() if isinstance(m, RelaxedModule)]
    root = type(model.network).__name__
    for s in exported:
        var_attrs = {"kind": kinds[s.name]}
        if s.name in relaxations:
            rel = relaxations[s.name]
            var_attrs.update(
                family=rel.family, role=rel.role, layer=_layer_of(s.name, net_layers, root)
            )
        idata.posterior[s.name].attrs.update(var_attrs)
    if layers:
        idata.posterior[LEVEL].attrs.update(kind=LEVEL)
    return idata
