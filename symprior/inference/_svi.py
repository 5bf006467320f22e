r"""Stochastic variational inference over a :class:`~symprior.models.SymmetryModel`."""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import pyro
import torch
from pyro.distributions.transforms import SoftplusTransform as PyroSoftplusTransform
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_value,
)
from torch import Tensor
from torch.distributions import biject_to, transform_to
from torch.distributions.transforms import SoftplusTransform, Transform

from symprior.inference._engine import Engine, TrainOptions, latent_sites
from symprior.inference._map import as_symmetry_model, initial_value
from symprior.inference._posterior import (
    Block,
    DeltaBlock,
    DiagonalBlock,
    FullBlock,
    LowRankBlock,
    Posterior,
    SiteInfo,
    constraint_from_name,
    constraint_name,
)

__all__ = ["GUIDES", "SVI"]

#: The guide families, by key.
GUIDES = ("delta", "normal", "lowrank", "fullrank")

#: The scale transforms that :class:`_MeanFieldDraw` computes (``transform_to`` of Pyro's
#: ``softplus_positive``, the autoguides' scale constraint, is Pyro's own class).
_SOFTPLUS = (SoftplusTransform, PyroSoftplusTransform)


class _MeanFieldDraw(torch.autograd.Function):
    r"""One draw of a mean-field normal guide with softplus scales over all its sites, and its
    log density: ``z_i = loc_i + softplus(raw_i) * eps_i`` for every site ``i`` and

    .. math:: \log q = -\sum_i \Big[\sum \log \mathrm{softplus}(raw_i)
              + \tfrac12 \lVert \epsilon_i \rVert^2 + \tfrac{n_i}{2} \log 2\pi\Big],

    the density of the draw as a function of ``(loc, raw)`` (the reparameterised estimator
    Pyro's ``Trace_ELBO`` uses).

    Called as ``apply(count, *locs, *raws, *eps)`` with ``count`` sites and the standard normal
    noise ``eps`` drawn by the caller; returns ``(*z, log_q)``. The same values and gradients as
    the separate operations (the gradients of ``z_i`` and ``log_q`` with respect to the scale
    are summed before one softplus backward, as autograd does), in one autograd node for the
    whole guide and fewer passes over its parameters: a step of the mean-field guide touches
    every relaxation entry (~10^5 in an RPP MLP) several times, and these passes are most of
    SVI's cost beyond a MAP step.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, count: int, *tensors: Tensor) -> Any:
        locs, raws, noise = tensors[:count], tensors[count : 2 * count], tensors[2 * count :]
        scales = [torch.nn.functional.softplus(raw) for raw in raws]
        draws = [
            torch.addcmul(loc, scale, eps)
            for loc, scale, eps in zip(locs, scales, noise, strict=True)
        ]
        size = sum(eps.numel() for eps in noise)
        log_q = torch.stack(
            [
                scale.log().sum() + 0.5 * torch.dot(eps.reshape(-1), eps.reshape(-1))
                for scale, eps in zip(scales, noise, strict=True)
            ]
        ).sum()
        log_q = log_q.add_(0.5 * math.log(2 * math.pi) * size).neg_()
        ctx.count = count  # type: ignore[attr-defined]
        ctx.save_for_backward(*raws, *noise, *scales)
        return (*draws, log_q)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: Tensor) -> Any:
        count: int = ctx.count  # type: ignore[attr-defined]
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        raws, noise, scales = saved[:count], saved[count : 2 * count], saved[2 * count :]
        grad_log_q = grads[count]
        grad_raws = []
        for grad, raw, eps, scale in zip(grads[:count], raws, noise, scales, strict=True):
            # d log_q / d scale = -1 / scale
            grad_scale = torch.addcdiv(grad * eps, grad_log_q.expand_as(scale), scale, value=-1.0)
            grad_raws.append(torch.ops.aten.softplus_backward(grad_scale, raw, 1.0, 20.0))
        return (None, *grads[:count], *grad_raws, *(None,) * count)


class SVI(Engine):
    r"""Variational inference with a Pyro autoguide over the model's latent sites.

    The latent sites are the relaxation parameters (and hyperparameters) — the default, weights
    being point estimates optimised jointly with the ELBO — or, for a model built with a
    ``weight_prior``, every weight too ("a guide over everything").

    Parameters
    ----------
    guide : {"delta", "normal", "lowrank", "fullrank"}
        Point mass, mean-field normal, low-rank-plus-diagonal or full-rank multivariate normal
        (in unconstrained space).
    rank : int, optional
        Rank of the ``"lowrank"`` guide (Pyro's default when ``None``).
    num_particles : int
        Monte-Carlo samples per ELBO estimate.
    init_scale : float
        Initial scale of the Gaussian guides.
    options, **kwargs
        Loop options, as for :class:`MAP`.
    """

    name = "svi"

    def __init__(
        self,
        guide: str = "normal",
        *,
        rank: int | None = None,
        num_particles: int = 1,
        init_scale: float = 0.01,
        options: TrainOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(options, **kwargs)
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}")
        if (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int)
            or num_particles < 1
        ):
            raise ValueError(f"num_particles must be an int >= 1, got {num_particles!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank must be an int >= 1 or None, got {rank!r}")
        if not (isinstance(init_scale, int | float) and init_scale > 0):
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        self.guide_kind = guide
        self.rank = rank
        self.num_particles = num_particles
        self.init_scale = float(init_scale)

    def _guide(self, model: Any, init: dict[str, Tensor]) -> Any:
        init_fn = init_to_value(values=init)
        if self.guide_kind == "delta":
            return AutoDelta(model, init_loc_fn=init_fn)
        if self.guide_kind == "normal":
            return AutoNormal(model, init_loc_fn=init_fn, init_scale=self.init_scale)
        if self.guide_kind == "lowrank":
            return AutoLowRankMultivariateNormal(
                model, init_loc_fn=init_fn, init_scale=self.init_scale, rank=self.rank
            )
        return AutoMultivariateNormal(model, init_loc_fn=init_fn, init_scale=self.init_scale)

    def fit(self, model: Any, data: Any, *, resume: bool = False) -> Posterior:
        model = as_symmetry_model(model)
        store = pyro.get_param_store()
        with self._session(model, data) as (batches, trace, (x0, y0)):
            num_data = batches.num_data
            names = latent_sites(trace)
            sites = [
                SiteInfo(
                    n,
                    tuple(trace.nodes[n]["fn"].shape()),
                    constraint_name(trace.nodes[n]["fn"].support),
                )
                for n in names
            ]
            init = {n: initial_value(model, n, trace.nodes[n]) for n in names}
            guide = self._guide(model, init)
            elbo = Trace_ELBO(num_particles=self.num_particles)
            elbo.differentiable_loss(model, guide, x0, y0, num_data=num_data)  # creates params
            params = dict(store.named_parameters())

            # Where the model has a direct log joint, the ELBO is computed from the guide's
            # distribution without tracing model and guide every step; the traced Trace_ELBO is
            # its reference (a test checks they agree draw for draw).
            fast = model.fast_log_joint_supported()
            normal = self._normal_parameters(guide, sites, params) if fast else None

            def objective(xb: Tensor, yb: Tensor | None) -> Tensor:
                if fast:
                    return self._direct_loss(model, guide, sites, xb, yb, num_data, normal)
                return elbo.differentiable_loss(model, guide, xb, yb, num_data=num_data)

            def make_posterior() -> Posterior:
                return Posterior(
                    sites,
                    self._blocks(guide, names, sites),
                    {
                        n: store[n].detach().clone()
                        for n in store.keys()
                        if not n.startswith("Auto")
                    },
                    engine=self.name,
                    info={"guide": self.guide_kind, "losses": list(self.losses)},
                    model=model,
                )

            self._run(objective, params, batches, make_posterior, resume=resume, description="SVI")
            return make_posterior()

    def _normal_parameters(
        self, guide: Any, sites: list[SiteInfo], params: Mapping[str, Tensor]
    ) -> dict[str, tuple[Tensor, Tensor, Transform]] | None:
        r"""For the mean-field guide: each site's location, raw (unconstrained) scale and the
        scale's constraining transform, read once from the param store, so a step does not go
        through the autoguide's attribute machinery (the values are the same tensors)."""
        if self.guide_kind != "normal":
            return None
        prefix = getattr(guide, "_pyro_name", None)
        transform = transform_to(guide.scale_constraint)
        out = {}
        for s in sites:
            loc = params.get(f"{prefix}.locs.{s.name}")
            raw = params.get(f"{prefix}.scales.{s.name}")
            if loc is None or raw is None:
                return None  # another naming: go through the guide's accessors
            out[s.name] = (loc, raw, transform)
        return out

    def _draw(
        self,
        guide: Any,
        sites: list[SiteInfo],
        normal: Mapping[str, tuple[Tensor, Tensor, Transform]] | None = None,
    ) -> tuple[dict[str, Tensor], Tensor | float]:
        r"""One reparameterised draw from the guide: constrained values of every latent site and
        :math:`\log q` of the draw (the density of the unconstrained draw minus the log-Jacobian
        of the map to the constrained space), drawing random numbers in the same order as the
        autoguide's own ``forward``."""
        values: dict[str, Tensor] = {}
        if self.guide_kind == "delta":
            for s in sites:
                values[s.name] = operator.attrgetter(s.name)(guide)
            return values, 0.0  # a point mass has no density term
        log_q: Tensor | float = 0.0
        if self.guide_kind == "normal":
            # log N(loc + scale eps; loc, scale) as a function of (loc, scale): the same value
            # and the same gradients as the density at the draw, without a pass through it.
            # Noise is drawn site by site in the autoguide's order (the same random stream).
            if (
                normal is not None
                and sites
                and all(isinstance(normal[s.name][2], _SOFTPLUS) for s in sites)
            ):
                locs = [normal[s.name][0] for s in sites]
                noise = [torch.randn(v.shape, dtype=v.dtype, device=v.device) for v in locs]
                raws = [normal[s.name][1] for s in sites]
                *draws, log_q = _MeanFieldDraw.apply(len(sites), *locs, *raws, *noise)
                unconstrained = {s.name: z for s, z in zip(sites, draws, strict=True)}
            else:
                unconstrained = {}
                for s in sites:
                    if normal is not None:
                        loc, raw, to_scale = normal[s.name]
                        scale = to_scale(raw)
                    else:
                        loc, scale = guide._get_loc_and_scale(s.name)
                    eps = torch.randn(loc.shape, dtype=loc.dtype, device=loc.device)
                    unconstrained[s.name] = loc + scale * eps
                    log_q = log_q - 0.5 * eps.square().sum() - scale.log().sum()
                    log_q = log_q - 0.5 * math.log(2 * math.pi) * eps.numel()
        else:
            posterior = guide.get_posterior()
            latent = posterior.rsample()
            log_q = posterior.log_prob(latent)
            unconstrained = {}
            start = 0
            for s in sites:
                shape = guide._unconstrained_shapes[s.name]
                size = math.prod(shape)
                unconstrained[s.name] = latent[start : start + size].reshape(shape)
                start += size
        for s in sites:
            u = unconstrained[s.name]
            transform = biject_to(constraint_from_name(s.constraint))
            value = transform(u)
            if s.constraint != "real":
                log_q = log_q - transform.log_abs_det_jacobian(u, value).sum()
            values[s.name] = value
        return values, log_q

    def _direct_loss(
        self,
        model: Any,
        guide: Any,
        sites: list[SiteInfo],
        x: Tensor,
        y: Tensor | None,
        num_data: int,
        normal: Mapping[str, tuple[Tensor, Tensor, Transform]] | None = None,
    ) -> Tensor:
        r"""The negative ELBO, :math:`E_q[\log q(z) - \log p(\mathcal{D}, z)]`, estimated with
        ``num_particles`` draws (the estimator of Pyro's ``Trace_ELBO``)."""
        total: Tensor | float = 0.0
        for _ in range(self.num_particles):
            values, log_q = self._draw(guide, sites, normal)
            log_p = model.log_joint(values, x, y, num_data=num_data)
            total = total + (log_q - log_p)
        assert isinstance(total, Tensor)
        return total / self.num_particles

    def _blocks(self, guide: Any, names: list[str], sites: list[SiteInfo]) -> list[Block]:
        if not names:
            return []
        with torch.no_grad():
            if self.guide_kind == "delta":
                median = guide.median()
                loc = torch.cat([s.to_unconstrained(median[s.name]) for s in sites])
                return [DeltaBlock(list(names), loc)]
            if self.guide_kind == "normal":
                locs, scales = [], []
                for n in names:
                    loc, scale = guide._get_loc_and_scale(n)
                    locs.append(loc.detach().reshape(-1))
                    scales.append(scale.detach().reshape(-1))
                return [DiagonalBlock(list(names), torch.cat(locs), torch.cat(scales))]
            order = list(guide._unconstrained_shapes)
            if order != names:
                raise RuntimeError(f"guide site order {order} differs from the model's {names}")
            posterior = guide.get_posterior()
            if self.guide_kind == "lowrank":
                return [
                    LowRankBlock(
                        list(names),
                        posterior.loc.detach().clone(),
                        cov_factor=posterior.cov_factor.detach().clone(),
                        cov_diag=posterior.cov_diag.detach().clone(),
                    )
                ]
            return [
                FullBlock(
                    list(names),
                    posterior.loc.detach().clone(),
                    scale_tril=posterior.scale_tril.detach().clone(),
                )
            ]
