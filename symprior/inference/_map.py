r"""Maximum a posteriori estimation of a :class:`~symprior.models.SymmetryModel`."""

from __future__ import annotations

from typing import Any, cast

import pyro
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from symprior.inference._engine import Engine, latent_sites
from symprior.inference._posterior import DeltaBlock, Posterior, SiteInfo, constraint_name
from symprior.models import SymmetryModel

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


class _Latents:
    r"""Unconstrained tensors for a model's latent sites (shared by MAP and Laplace)."""

    def __init__(self, model: SymmetryModel, trace: pyro.poutine.Trace) -> None:
        self.names = latent_sites(trace)
        self.sites: list[SiteInfo] = []
        self.transforms = {}
        self.unconstrained: dict[str, Tensor] = {}
        params = dict(model.network.named_parameters())
        for name in self.names:
            site: dict[str, Any] = dict(trace.nodes[name])
            fn: Any = site["fn"]
            support = fn.support
            self.sites.append(SiteInfo(name, tuple(fn.shape()), constraint_name(support)))
            transform = biject_to(support)
            self.transforms[name] = transform
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

    def flat(self) -> Tensor:
        if not self.names:
            return torch.zeros(0)
        return torch.cat([u.detach().reshape(-1) for u in self.unconstrained.values()])


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

    def fit(self, model: Any, data: Any, *, resume: bool = False) -> Posterior:
        model = as_symmetry_model(model)
        o = self.options
        batches = self._batches(data)
        model.to(o.torch_device)
        store = pyro.get_param_store()
        devices = [o.torch_device.index or 0] if o.torch_device.type == "cuda" else []
        with store.scope(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(o.seed)
            x0, y0 = next(iter(batches.epoch(0)))
            trace = pyro.poutine.trace(model).get_trace(x0, y0, num_data=batches.num_data)
            latents = _Latents(model, trace)
            params = dict(latents.unconstrained)
            for name, value in store.named_parameters():
                params.setdefault(name, value)
            num_data = batches.num_data

            def objective(xb: Tensor, yb: Tensor | None) -> Tensor:
                conditioned = pyro.poutine.condition(model, data=latents.values())
                tr = pyro.poutine.trace(conditioned).get_trace(xb, yb, num_data=num_data)
                return -cast(Tensor, tr.log_prob_sum())

            def make_posterior() -> Posterior:
                return Posterior(
                    latents.sites,
                    [DeltaBlock(list(latents.names), latents.flat())] if latents.names else [],
                    _point_values(),
                    engine=self.name,
                    info={"losses": list(self.losses)},
                    model=model,
                )

            self._run(objective, params, batches, make_posterior, resume=resume, description="MAP")
            return make_posterior()
