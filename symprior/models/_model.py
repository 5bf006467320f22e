r"""The Pyro model of a relaxed network: priors on relaxation parameters plus a likelihood."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.func import functional_call

from symprior.models._likelihoods import Categorical, Gaussian, Likelihood
from symprior.nn import Relaxation, relaxation_parameters
from symprior.priors import Prior, PriorSpec, as_prior, default_prior
from symprior.priors._base import NormalPrior, _on, isotropic_log_prob

__all__ = ["SymmetryModel"]


class SymmetryModel(PyroModule):
    r"""A Pyro model whose relaxation parameters are random variables.

    Calling ``model(x, y)`` samples every relaxation parameter of ``net`` from its prior (sample
    site = the qualified parameter name of :func:`symprior.nn.relaxation_parameters`), runs the
    network with those values, and observes ``y`` inside the plate ``"data"``. The other weights
    are point estimates (param sites with their qualified names, initialised at the network's
    values) unless ``weight_prior`` is given, which makes them sample sites too.

    As for any Pyro model, param sites live in Pyro's global param store under those names: two
    models whose networks have parameters of the same names share them there. The engines run
    each fit in its own scope of the store; when calling models directly (``Predictive``, a
    hand-written SVI loop), call ``pyro.clear_param_store()`` before switching models. A store
    entry of another shape is reported as such.

    Parameters
    ----------
    net : nn.Module
        A network with relaxed layers (the relaxation registry of :mod:`symprior.nn`).
    likelihood : Likelihood or sequence of Likelihood
        e.g. :class:`Gaussian`, :class:`Categorical`, plus :class:`SymmetryLikelihood`.
    priors : mapping from glob pattern to prior spec, optional
        Overrides of the family defaults. Patterns match qualified parameter names
        (:func:`fnmatch.fnmatchcase`); the first matching pattern wins; a pattern that matches no
        relaxation parameter is an error.
    weight_prior : prior spec or mapping from glob pattern to prior spec, optional
        Prior of the non-relaxation weights. A mapping must cover every weight.

    Examples
    --------
    >>> import torch, pyro
    >>> from symprior.groups import SO2, V
    >>> from symprior.nn.rpp import RPPLinear
    >>> from symprior.models import Gaussian
    >>> model = SymmetryModel(RPPLinear(V(SO2()), V(SO2())), Gaussian(0.1))
    >>> trace = pyro.poutine.trace(model).get_trace(torch.zeros(4, 2), torch.zeros(4, 2))
    >>> sorted(model.site_names()["relaxations"])
    ['bias_residual', 'residual']
    >>> [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    ['residual', 'bias_residual', 'data']
    """

    def __init__(
        self,
        net: nn.Module,
        likelihood: Likelihood | Sequence[Likelihood],
        priors: Mapping[str, PriorSpec] | None = None,
        weight_prior: PriorSpec | Mapping[str, PriorSpec] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        likelihoods = [likelihood] if isinstance(likelihood, Likelihood) else list(likelihood)
        if not likelihoods or not all(isinstance(lk, Likelihood) for lk in likelihoods):
            raise TypeError(
                "likelihood must be a symprior Likelihood (Gaussian, Categorical, "
                "SymmetryLikelihood) or a non-empty sequence of them"
            )
        self.net = net
        self.likelihoods = nn.ModuleList(likelihoods)
        # Reads go through _modules: PyroModule.__getattr__ would register every weight of a plain
        # submodule as a Pyro param under a second name.
        self.relaxation_sites: dict[str, tuple[nn.Parameter, Relaxation]] = {
            name: (param, rel) for name, param, rel in relaxation_parameters(net)
        }
        self.priors: dict[str, Prior] = self._resolve_priors(priors)
        relax_ids = {id(p) for p, _ in self.relaxation_sites.values()}
        self.point_names: list[str] = [
            name for name, p in net.named_parameters() if id(p) not in relax_ids and p.requires_grad
        ]
        self.weight_priors: dict[str, Prior] | None = self._resolve_weight_prior(weight_prior)

    @property
    def network(self) -> nn.Module:
        r"""The wrapped network (read without registering its weights a second time)."""
        net = self._modules["net"]
        assert net is not None
        return net

    @property
    def likelihood_list(self) -> list[Likelihood]:
        r"""The likelihoods, in the order they are observed."""
        holder = self._modules["likelihoods"]
        return [
            lk
            for lk in (holder.children() if holder is not None else [])
            if isinstance(lk, Likelihood)
        ]

    # --------------------------------------------------------------------- prior resolution
    def _resolve_priors(self, priors: Mapping[str, PriorSpec] | None) -> dict[str, Prior]:
        if priors is not None and not isinstance(priors, Mapping):
            raise TypeError(
                f"priors must be a mapping from glob patterns to prior specs, got "
                f"{type(priors).__name__}"
            )
        patterns = {pat: as_prior(spec, f"priors[{pat!r}]") for pat, spec in (priors or {}).items()}
        used = dict.fromkeys(patterns, False)
        defaults: dict[tuple[str, str], Prior] = {}
        out: dict[str, Prior] = {}
        for name, (param, rel) in self.relaxation_sites.items():
            for pat, prior in patterns.items():
                if fnmatch.fnmatchcase(name, pat):
                    out[name] = prior
                    used[pat] = True
                    break
            else:
                key = (rel.family, rel.role)
                if key not in defaults:
                    defaults[key] = default_prior(rel)
                out[name] = defaults[key]
            # Fail now, not at the first model call, if the prior cannot fit the parameter.
            out[name].distribution(name, param.detach(), rel, cache=_DryRunCache())
        unused = [pat for pat, hit in used.items() if not hit]
        if unused:
            raise ValueError(
                f"priors pattern(s) {unused} match no relaxation parameter; the relaxation "
                f"parameters are {sorted(self.relaxation_sites)}"
            )
        return out

    def _resolve_weight_prior(
        self, weight_prior: PriorSpec | Mapping[str, PriorSpec] | None
    ) -> dict[str, Prior] | None:
        if weight_prior is None:
            return None
        params = dict(self.network.named_parameters())
        out: dict[str, Prior] = {}
        if isinstance(weight_prior, Mapping):
            patterns = {
                pat: as_prior(spec, f"weight_prior[{pat!r}]") for pat, spec in weight_prior.items()
            }
            used = dict.fromkeys(patterns, False)
            for name in self.point_names:
                for pat, prior in patterns.items():
                    if fnmatch.fnmatchcase(name, pat):
                        out[name] = prior
                        used[pat] = True
                        break
                else:
                    raise ValueError(
                        f"weight_prior has no pattern for the weight {name!r}; give a pattern for "
                        "every weight (e.g. '*') or a single prior spec"
                    )
            unused = [pat for pat, hit in used.items() if not hit]
            if unused:
                raise ValueError(f"weight_prior pattern(s) {unused} match no weight")
        else:
            prior = as_prior(weight_prior, "weight_prior")
            out = dict.fromkeys(self.point_names, prior)
        for name, prior in out.items():
            prior.distribution(name, params[name].detach(), None, cache=_DryRunCache())
        return out

    # ------------------------------------------------------------------------------ model
    def sample_parameters(self) -> dict[str, Tensor]:
        r"""Sample (or read) every parameter of the network in this model call.

        Returns the mapping from qualified names to tensors that :meth:`forward` substitutes
        into the network.
        """
        cache: dict[str, Tensor] = {}
        values: dict[str, Tensor] = {}
        for name, (param, rel) in self.relaxation_sites.items():
            values[name] = pyro.sample(
                name, self.priors[name].distribution(name, param, rel, cache)
            )
        params = dict(self.network.named_parameters())
        for name in self.point_names:
            param = params[name]
            if self.weight_priors is None:
                values[name] = pyro.param(name, param)
                if values[name].shape != param.shape:
                    raise ValueError(
                        f"Pyro's param store holds {name!r} with shape "
                        f"{tuple(values[name].shape)}, but this model's parameter has shape "
                        f"{tuple(param.shape)}: the store holds another model's parameters "
                        f"under the same names. Call pyro.clear_param_store() before using "
                        f"another model, or run each in its own pyro.get_param_store().scope() "
                        f"(as the engines do)"
                    )
            else:
                prior = self.weight_priors[name]
                values[name] = pyro.sample(name, prior.distribution(name, param, None, cache))
        return values

    def fast_log_joint_supported(self) -> bool:
        r"""Whether :meth:`log_joint` covers this model (one Gaussian of fixed or random noise,
        or one Categorical likelihood)."""
        likelihoods = self.likelihood_list
        if len(likelihoods) != 1:
            return False
        lik = likelihoods[0]
        return isinstance(lik, Categorical) or (isinstance(lik, Gaussian) and lik.hyper is not None)

    def log_joint(
        self,
        latent: Mapping[str, Tensor],
        x: Tensor,
        y: Tensor | None,
        *,
        num_data: int | None = None,
        prior: bool = True,
    ) -> Tensor:
        r"""The log joint density at given latent values, computed without Pyro's tracing.

        Equals ``trace.log_prob_sum()`` of the model conditioned on ``latent`` and run on
        ``(x, y, num_data=num_data)``: the priors of the relaxation parameters, their random
        hyperparameters, random weights and noise (:meth:`log_prior`), plus the likelihood
        (:meth:`log_likelihood`) scaled by ``num_data / len(x)``. Point weights are the network's
        own parameters. It is the MAP and SVI engines' objective when
        :meth:`fast_log_joint_supported`; the tracing path stays the reference (a test checks
        they agree). With ``prior=False`` only the (scaled) likelihood term is returned.
        """
        self._check_fast()
        if y is None:
            raise ValueError("log_joint needs observations y")
        output = self.run(self.network_values(latent), x)
        scale = (num_data if num_data is not None else x.shape[0]) / x.shape[0]
        ll = scale * self.log_likelihood(output, y, latent)
        return ll + self.log_prior(latent).to(ll) if prior else ll

    def _check_fast(self) -> None:
        if not self.fast_log_joint_supported():
            raise ValueError("log_joint covers one Gaussian (fixed or random noise) or Categorical")

    def network_values(self, latent: Mapping[str, Tensor]) -> dict[str, Tensor]:
        r"""The network parameters that ``latent`` holds: relaxation parameters, and the weights
        too when they are random (point weights stay the network's own, see :meth:`run`)."""
        names = list(self.relaxation_sites)
        if self.weight_priors is not None:
            names += self.point_names
        return {name: latent[name] for name in names}

    def log_prior(self, latent: Mapping[str, Tensor]) -> Tensor:
        r"""The log prior density of the latent values: relaxation parameters, their random
        hyperparameters, random weights and a random noise scale (no tracing)."""
        self._check_fast()
        cache: dict[str, Tensor] = {}
        terms: list[Tensor] = []

        def hyper_terms(site_prior: Prior, name: str) -> None:
            for h in site_prior.hyperparameters():
                if h.is_random:
                    site = h.site(name)
                    if site not in cache:
                        value = latent[site]
                        cache[site] = value
                        terms.append(_on(h.value, value.dtype, value.device).log_prob(value).sum())

        def site_term(site_prior: Prior, name: str, param: Tensor, rel: Relaxation | None) -> None:
            fixed = site_prior.fixed_isotropic(rel) if isinstance(site_prior, NormalPrior) else None
            if fixed is not None:
                # Fixed numeric centre and scale: two operations on the value, no distribution.
                terms.append(isotropic_log_prob(latent[name], *fixed))
                return
            hyper_terms(site_prior, name)
            terms.append(site_prior.distribution(name, param, rel, cache).log_prob(latent[name]))

        for name, (param, rel) in self.relaxation_sites.items():
            site_term(self.priors[name], name, param, rel)
        if self.weight_priors is not None:
            params = dict(self.network.named_parameters())
            for name in self.point_names:
                site_term(self.weight_priors[name], name, params[name], None)
        lik = self.likelihood_list[0]
        if isinstance(lik, Gaussian) and lik.hyper is not None and lik.hyper.is_random:
            sigma = latent["noise_scale"]
            terms.append(_on(lik.hyper.value, sigma.dtype, sigma.device).log_prob(sigma))
        if not terms:
            like = next(iter(self.network.parameters()), torch.zeros(()))
            return like.new_zeros(())
        return torch.stack([t.reshape(()) for t in terms]).sum()

    def likelihood_distribution(
        self, output: Tensor, latent: Mapping[str, Tensor] | None = None
    ) -> torch.distributions.Distribution:
        r"""The observation distribution given the network ``output``: ``Normal(output, sigma)``
        (a random noise scale read from ``latent``) or ``Categorical(logits=output)``."""
        self._check_fast()
        lik = self.likelihood_list[0]
        if not isinstance(lik, Gaussian):
            return torch.distributions.Categorical(logits=output, validate_args=False)
        assert lik.hyper is not None
        if lik.hyper.is_random:
            if latent is None or "noise_scale" not in latent:
                raise ValueError("the noise scale is random: pass its value in latent")
            sigma = latent["noise_scale"]
        else:
            sigma = lik.hyper.resolve("noise_scale", None, dtype=output.dtype, device=output.device)
        return torch.distributions.Normal(output, sigma, validate_args=False)

    def log_likelihood(
        self, output: Tensor, y: Tensor, latent: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        r""":math:`\sum_n \log p(y_n \mid f_n)` of the network ``output`` (unscaled); a random
        noise scale is read from ``latent``."""
        self._check_fast()
        lik = self.likelihood_list[0]
        lik.check_observations(output, y)
        fixed = lik.hyper.value if isinstance(lik, Gaussian) and lik.hyper is not None else None
        if isinstance(fixed, int | float) and not isinstance(fixed, bool):
            # A fixed numeric noise: the isotropic Gaussian density of the residuals.
            return isotropic_log_prob(y - output, 0.0, float(fixed))
        return self.likelihood_distribution(output, latent).log_prob(y).sum()

    def run(self, values: Mapping[str, Tensor], x: Tensor) -> Tensor:
        r"""The network's output on ``x`` with parameters replaced by ``values``.

        Only the values that are not already the network's own parameter tensors are swapped in
        (a MAP step optimises most of them in place), and none at all when every value is.
        """
        own = dict(self.network.named_parameters())
        swapped = {n: v for n, v in values.items() if own.get(n) is not v}
        if not swapped:
            return self.network(x)
        return functional_call(self.network, swapped, (x,), strict=False)

    def forward(
        self,
        x: Tensor,
        y: Tensor | None = None,
        *,
        num_data: int | None = None,
        subsample_size: int | None = None,
    ) -> Tensor:
        r"""Sample the parameters, run the network and observe ``y``.

        Parameters
        ----------
        x : Tensor
            Inputs ``(N, ...)``: the whole data set, or a minibatch when ``num_data`` is given.
        y : Tensor, optional
            Targets ``(N, ...)``; ``None`` samples them (prior/posterior predictive).
        num_data : int, optional
            Size of the full data set when ``x`` is a minibatch: the likelihood is scaled by
            ``num_data / len(x)``.
        subsample_size : int, optional
            Let the plate draw a random subsample of this size from ``x`` (scaled likewise).

        Returns
        -------
        Tensor
            The network output on the (sub)batch.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if y is not None and (not isinstance(y, Tensor) or y.shape[0] != x.shape[0]):
            raise ValueError(
                f"y must be a tensor with the same leading size as x ({x.shape[0]}), got "
                f"{getattr(y, 'shape', type(y).__name__)}"
            )
        values = self.sample_parameters()
        likelihoods = self.likelihood_list
        # Global likelihood sites take the dtype and device of the network's parameters.
        like = next((v for v in values.values() if v.is_floating_point()), None)
        if like is None:
            like = x if x.is_floating_point() else torch.zeros((), device=x.device)
        sites = [lk.global_sites(like) for lk in likelihoods]
        size = x.shape[0]
        if num_data is not None:
            if subsample_size is not None:
                raise ValueError("give num_data (x is a minibatch) or subsample_size, not both")
            if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < size:
                raise ValueError(
                    f"num_data must be an int >= the batch size {size}, got {num_data!r}"
                )
            plate = pyro.plate("data", size=num_data, subsample=torch.arange(size, device=x.device))
        else:
            plate = pyro.plate(
                "data", size=size, subsample_size=subsample_size, device=str(x.device)
            )
        with plate as idx:
            if num_data is None and subsample_size is not None:
                x = x[idx]
                y = None if y is None else y[idx]

            def fn(inputs: Tensor) -> Tensor:
                return self.run(values, inputs)

            output = fn(x)
            for likelihood, site_values in zip(likelihoods, sites, strict=True):
                if y is not None:
                    likelihood.check_observations(output, y)
                likelihood(output, y, fn=fn, x=x, sites=site_values)
        return output

    # ----------------------------------------------------------------------- introspection
    def site_names(self) -> dict[str, list[str]]:
        r"""The latent site names by kind: relaxations, hyperparameters, weights."""
        hyper: list[str] = []
        for name, prior in self.priors.items():
            for h in prior.hyperparameters():
                if h.is_random and h.site(name) not in hyper:
                    hyper.append(h.site(name))
        return {
            "relaxations": list(self.relaxation_sites),
            "hyperparameters": hyper,
            "weights": list(self.point_names) if self.weight_priors is not None else [],
        }

    def __repr__(self) -> str:
        return (
            f"SymmetryModel(net={type(self.network).__name__}, "
            f"likelihoods={self.likelihood_list}, "
            f"relaxations={len(self.relaxation_sites)})"
        )


class _DryRunCache(dict):
    """A cache that answers every hyperparameter with 1 so priors can be checked offline."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> Tensor:
        return torch.ones((), dtype=torch.float64)
