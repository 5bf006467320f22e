r"""Maximum a posteriori estimation of a :class:`~symprior.models.SymmetryModel`."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import pyro
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import ComposeTransform, IndependentTransform, Transform

from symprior.inference._engine import Engine, TrainOptions, latent_sites
from symprior.inference._posterior import DeltaBlock, Posterior, SiteInfo, constraint_name
from symprior.models import SymmetryModel
from symprior.nn.remul import GradNorm

__all__ = ["MAP", "as_symmetry_model", "initial_value"]


def as_symmetry_model(model: Any) -> SymmetryModel:
    if not isinstance(model, SymmetryModel):
        raise TypeError(
            f"model must be a symprior.models.SymmetryModel, got {type(model).__name__}; "
            "symprior.fit(net, data, likelihood=...) wraps a network for you"
        )
    return model


def initial_value(model: SymmetryModel, name: str, site: dict[str, Any]) -> Tensor:
    r"""Where optimisation starts for a latent site: the network's current value if the site is
    a network parameter, else the prior mean (the median where the mean is not finite)."""
    params = dict(model.network.named_parameters())
    if name in params:
        return params[name].detach().clone()
    fn = site["fn"]
    try:
        value = fn.mean
        if bool(torch.isfinite(value).all()):
            return value.detach().clone()
    except NotImplementedError:
        pass
    return fn.icdf(torch.tensor(0.5)).detach().clone()


def is_identity(transform: Transform) -> bool:
    r"""Whether ``transform`` is the identity (real support): no log-Jacobian to add."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


class _Latents:
    r"""Unconstrained tensors for a model's latent sites (shared by MAP and Laplace)."""

    def __init__(self, model: SymmetryModel, trace: pyro.poutine.Trace) -> None:
        self.names = latent_sites(trace)
        self.sites: list[SiteInfo] = []
        self.transforms: dict[str, Transform] = {}
        self.identity: dict[str, bool] = {}
        self.unconstrained: dict[str, Tensor] = {}
        params = dict(model.network.named_parameters())
        for name in self.names:
            site: dict[str, Any] = dict(trace.nodes[name])
            fn: Any = site["fn"]
            support = fn.support
            self.sites.append(SiteInfo(name, tuple(fn.shape()), constraint_name(support)))
            transform = biject_to(support)
            self.transforms[name] = transform
            self.identity[name] = is_identity(transform)
            base = (
                support.base_constraint if isinstance(support, constraints.independent) else support
            )
            if name in params and base is constraints.real:
                # Optimise the network's own parameter: after MAP the network holds the mode.
                self.unconstrained[name] = params[name]
            else:
                value = initial_value(model, name, site)
                self.unconstrained[name] = (
                    transform.inv(value).detach().clone().requires_grad_(True)
                )

    def values(self) -> dict[str, Tensor]:
        return {n: self.transforms[n](u) for n, u in self.unconstrained.items()}

    def values_and_logdet(self, like: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        r"""Constrained values and the log-Jacobian of the map from the unconstrained tensors
        (a zero like ``like`` when every site has real support)."""
        values: dict[str, Tensor] = {}
        logdet = like.new_zeros(())
        for n, raw in self.unconstrained.items():
            transform = self.transforms[n]
            value = transform(raw)
            values[n] = value
            if not self.identity[n]:
                logdet = logdet + transform.log_abs_det_jacobian(raw, value).sum()
        return values, logdet

    def flat(self) -> Tensor:
        if not self.names:
            return torch.zeros(0)
        return torch.cat([u.detach().reshape(-1) for u in self.unconstrained.values()])


def _excess_losses(trace: Any, sites: Sequence[str]) -> Tensor:
    r"""Each site's negative log-likelihood above its value at the distribution's mean.

    GradNorm compares losses to their first values (001 Algorithm 1, line 3), so they must be
    positive; a Gaussian's normalising constant can make a negative log-likelihood negative
    without changing any gradient with respect to the network, so it is removed here.
    """
    out = []
    for name in sites:
        site = trace.nodes[name]
        fn, value = site["fn"], site["value"]
        nll = -fn.log_prob(value)
        if not fn.support.is_discrete:
            nll = nll + fn.log_prob(fn.mean)
        out.append(nll.sum() * site["scale"])
    return torch.stack(out)


def _point_values() -> dict[str, Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in store.keys()}


class MAP(Engine):
    r"""Point estimates of everything: the mode of the joint density.

    Minimises :math:`-\log p(\mathcal{D}, \theta)` (the negative log joint of the model, with the
    likelihood scaled by N / batch) with Adam over minibatch epochs. Latent sites with real
    support that are network parameters are optimised in place, so after :meth:`fit` the network
    holds the MAP values; positive sites (scales, precisions) are optimised in log space.

    Parameters
    ----------
    gradnorm : GradNorm, optional
        Balance the likelihood terms named in ``gradnorm_sites`` (by default the task ``"obs"``
        and REMUL's ``"symmetry"``) with GradNorm (001 Algorithm 1): the loss is
        :math:`-\log p(\theta) + \sum_i w_i \mathcal{L}_i` with :math:`\mathcal{L}_i` the
        negative log-likelihood of site ``i``, and the weights :math:`w` are updated after every
        step against the gradients of the network's weights. The final weights are reported in
        ``posterior.info``.
    gradnorm_sites : sequence of str
        The likelihood sites that GradNorm weighs, in the order of its weights.
    options : TrainOptions, optional
        Or the same fields as keywords: ``num_epochs``, ``batch_size``, ``lr``, ``scheduler``,
        ``clip_norm``, ``progress``, ``checkpoint_dir``, ``checkpoint_every``, ``check_every``,
        ``seed``, ``device``.

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V
    >>> from symprior.models import Gaussian, SymmetryModel
    >>> from symprior.nn import RPPLinear
    >>> model = SymmetryModel(RPPLinear(V(SO2()), V(SO2())), Gaussian(0.1))
    >>> x = torch.randn(32, 2)
    >>> post = MAP(num_epochs=5, progress=False).fit(model, (x, x))
    >>> post.engine
    'map'
    """

    name = "map"

    def __init__(
        self,
        options: TrainOptions | None = None,
        *,
        gradnorm: GradNorm | None = None,
        gradnorm_sites: Sequence[str] = ("obs", "symmetry"),
        **kwargs: Any,
    ) -> None:
        super().__init__(options, **kwargs)
        if gradnorm is not None and not isinstance(gradnorm, GradNorm):
            raise TypeError(
                f"gradnorm must be a symprior.nn.GradNorm, got {type(gradnorm).__name__}"
            )
        sites = list(gradnorm_sites)
        if gradnorm is not None and gradnorm.num_tasks != len(sites):
            raise ValueError(
                f"gradnorm weighs {gradnorm.num_tasks} tasks but gradnorm_sites names {len(sites)}"
            )
        self.gradnorm = gradnorm
        self.gradnorm_sites = sites

    def fit(self, model: Any, data: Any, *, resume: bool = False) -> Posterior:
        model = as_symmetry_model(model)
        o = self.options
        store = pyro.get_param_store()
        with self._session(model, data) as (batches, trace, _):
            latents = _Latents(model, trace)
            params = dict(latents.unconstrained)
            for name, value in store.named_parameters():
                params.setdefault(name, value)
            num_data = batches.num_data

            gradnorm = self.gradnorm
            if gradnorm is not None:
                gradnorm.to(o.torch_device)
                missing = [s for s in self.gradnorm_sites if s not in trace.nodes]
                if missing:
                    raise ValueError(f"gradnorm_sites {missing} are not sites of the model")
            shared = [p for n, p in model.network.named_parameters() if n not in latents.names]

            # Without GradNorm the objective is the model's log joint computed directly, which
            # skips Pyro's per-step tracing; the traced log joint is its tested reference.
            fast = gradnorm is None and model.fast_log_joint_supported()

            def objective(xb: Tensor, yb: Tensor | None, *, balance: bool = True) -> Tensor:
                if fast:
                    return -model.log_joint(latents.values(), xb, yb, num_data=num_data)
                conditioned = pyro.poutine.condition(model, data=latents.values())
                tr = pyro.poutine.trace(conditioned).get_trace(xb, yb, num_data=num_data)
                if gradnorm is None:
                    return -cast(Tensor, tr.log_prob_sum())
                tr.compute_log_prob()
                tasks = torch.stack([-tr.nodes[s]["log_prob_sum"] for s in self.gradnorm_sites])
                rest = sum(
                    (
                        site["log_prob_sum"]
                        for n, site in tr.nodes.items()
                        if site["type"] == "sample"
                        and n not in self.gradnorm_sites
                        and "log_prob_sum" in site
                    ),
                    torch.zeros((), device=tasks.device, dtype=tasks.dtype),
                )
                # A copy: GradNorm's step below updates its weights in place, and autograd needs
                # the values this loss was computed with (``.to`` copies only across dtypes).
                loss = -rest + (gradnorm.weights.detach().clone().to(tasks) * tasks).sum()
                if balance:
                    gradnorm.step(_excess_losses(tr, self.gradnorm_sites), shared)
                return loss

            def make_posterior() -> Posterior:
                return Posterior(
                    latents.sites,
                    [DeltaBlock(list(latents.names), latents.flat())] if latents.names else [],
                    _point_values(),
                    engine=self.name,
                    info={"losses": list(self.losses), **self._gradnorm_info()},
                    model=model,
                )

            self._run(
                objective,
                params,
                batches,
                make_posterior,
                resume=resume,
                description="MAP",
                evaluate=partial(objective, balance=False),
            )
            return make_posterior()

    def _gradnorm_info(self) -> dict[str, float]:
        if self.gradnorm is None:
            return {}
        weights = self.gradnorm.weights.detach().cpu().tolist()
        return {
            f"gradnorm.{site}": float(w)
            for site, w in zip(self.gradnorm_sites, weights, strict=True)
        }
