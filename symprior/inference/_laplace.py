r"""Laplace approximation of a :class:`~symprior.models.SymmetryModel`'s posterior and evidence.

Around the mode :math:`u^*` of the joint density in *unconstrained* coordinates
:math:`u` (positive sites in log space; the density includes the log-Jacobian of
:func:`~torch.distributions.biject_to`), the posterior is approximated by
:math:`N(u^*, H^{-1})` with :math:`H = -\nabla^2_u \log p(\mathcal D, u)|_{u^*}` or a structured
approximation of it (:mod:`symprior.inference._curvature`), and the log marginal likelihood by

.. math::

    \log p(\mathcal D) \approx \log p(\mathcal D, u^*) + \frac d2 \log 2\pi
    - \frac12 \log\det H ,

``d`` the dimension of the Laplace subset (MacKay 1992; for networks Immer et al. 2021). The
evidence is differentiable in fixed tensor hyperparameters (prior scales, 004 app. B.2's
:math:`\lambda`, the Gaussian noise), which :class:`Laplace` uses to learn them by alternating MAP
steps with gradient steps on the evidence (van der Ouderaa, Immer & van der Wilk 2023).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import pyro
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from symprior.inference._curvature import (
    EIGENVALUE_FLOOR,
    CurvaturePart,
    CurvatureWarning,
    DensePrecision,
    DiagonalPrecision,
    KroneckerEigenBlock,
    KroneckerPrecision,
    LossCurvature,
    find_kron_layers,
    gaussian_log_normaliser,
    ggn_diagonal,
    hessian,
    kron_factors,
    output_jacobian,
    separable_diagonal,
)
from symprior.inference._data import Batches, as_batches
from symprior.inference._engine import Engine, TrainOptions, check_values
from symprior.inference._map import MAP, _Latents, _point_values, as_symmetry_model
from symprior.inference._posterior import (
    Block,
    DeltaBlock,
    DiagonalBlock,
    FullBlock,
    KroneckerBlock,
    LowRankBlock,
    Posterior,
    SiteInfo,
    evaluation,
)
from symprior.models import Categorical, Gaussian, Likelihood, SymmetryLikelihood, SymmetryModel
from symprior.priors import Hyperparameter

__all__ = [
    "STRUCTURES",
    "SUBSETS",
    "CurvatureWarning",
    "Laplace",
    "learnable_hyperparameters",
    "linearized_predict",
    "linearized_predictive_mean",
]

#: The smallest default batch of the curvature pass (larger batches amortise per-batch work;
#: the pass sums over all the data exactly whatever the batch size).
CURVATURE_BATCH_SIZE = 256

#: Which latent sites get a Gaussian: relaxations and hyperparameters, or everything.
SUBSETS = ("relaxation", "all")


# ---------------------------------------------------------------------------- the problem
class _Problem:
    r"""The negative log joint around the current point, as functions of unconstrained subsets.

    Every evaluation sums the likelihood over all batches of the data exactly (no N / batch
    scaling), adds the prior and the log-Jacobian of the unconstrained coordinates once, and runs
    under a fixed seed with the network in eval mode, so stochastic likelihoods give one
    deterministic function, the one predictions use (the MAP steps themselves train in the
    network's own mode).
    """

    def __init__(
        self,
        model: SymmetryModel,
        latents: _Latents,
        batches: Batches,
        *,
        seed: int,
        floor: float,
    ) -> None:
        self.model = model
        self.latents = latents
        self.batches = batches
        self.seed = seed
        self.floor = floor
        self.site = {s.name: s for s in latents.sites}
        params = dict(model.network.named_parameters())
        self.network_names = [n for n in latents.names if n in params]
        self.device = batches.device
        self.fast = model.fast_log_joint_supported()
        #: A Hessian evaluation kept for the next :meth:`hessian` call at the same point (one
        #: use; see :meth:`hold_hessian`).
        self._held: tuple[tuple[str, ...], Tensor, tuple[Tensor, Tensor, Tensor]] | None = None

    # ------------------------------------------------------------------ coordinates
    def flat(self, names: Sequence[str]) -> Tensor:
        r"""The current unconstrained values of ``names``, flattened and concatenated."""
        parts = [self.latents.unconstrained[n].detach().reshape(-1) for n in names]
        if not parts:
            like = next(iter(self.model.network.parameters()), torch.zeros(()))
            return like.new_zeros(0)
        return torch.cat(parts)

    def split(self, names: Sequence[str], u: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for n in names:
            site = self.site[n]
            out[n] = u[i : i + site.numel].reshape(site.shape)
            i += site.numel
        return out

    def assign(self, names: Sequence[str], u: Tensor) -> None:
        r"""Write ``u`` into the latent tensors (network parameters in place)."""
        with torch.no_grad():
            for n, piece in self.split(names, u).items():
                self.latents.unconstrained[n].copy_(piece)

    def values(self, names: Sequence[str], u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        r"""Constrained values of every latent site (``names`` from ``u``) and the log-Jacobian."""
        pieces = self.split(names, u)
        values: dict[str, Tensor] = {}
        logdet = u.new_zeros(())
        for n in self.latents.names:
            raw = pieces.get(n)
            if raw is None:
                raw = self.latents.unconstrained[n].detach()
            transform = self.latents.transforms[n]
            value = transform(raw)
            values[n] = value
            if not self.latents.identity[n]:
                logdet = logdet + transform.log_abs_det_jacobian(raw, value).sum()
        return values, logdet

    def point_values(self) -> dict[str, Tensor]:
        r"""The point-estimated weights from the param store (held fixed)."""
        store = pyro.get_param_store()
        return {n: store[n] for n in self.model.point_names if n in store}

    @contextmanager
    def seeded(self) -> Iterator[None]:
        r"""A fixed seed and the network in eval mode: the deterministic function that the
        posterior's predictions use (fixed rotation grids, batch-norm running statistics, no
        dropout), as laplace-torch evaluates curvature in eval mode."""
        with _seeded(self.seed, self.device), evaluation(self.model.network):
            yield

    def data(self) -> Iterator[tuple[int, Tensor, Tensor]]:
        for i, (xb, yb) in enumerate(self.batches.epoch(0)):
            yield i, xb, _need_targets(yb)

    # ------------------------------------------------------------------ densities
    def trace(self, values: Mapping[str, Tensor], xb: Tensor, yb: Tensor) -> Any:
        conditioned = pyro.poutine.condition(self.model, data=dict(values))
        with self.seeded():
            return pyro.poutine.trace(conditioned).get_trace(xb, yb)

    def batch_term(
        self, values: Mapping[str, Tensor], xb: Tensor, yb: Tensor, *, prior: bool
    ) -> Tensor:
        r"""``-log p(y_b | ...)`` of one batch, plus ``-log p(latents)`` when ``prior``."""
        if self.fast:
            # The model's direct log joint (no tracing); unscaled: num_data is the batch size.
            with self.seeded():
                return -self.model.log_joint(values, xb, yb, num_data=len(xb), prior=prior)
        tr = self.trace(values, xb, yb)
        tr.compute_log_prob()
        latent = set(self.latents.names)
        terms = [
            site["log_prob_sum"]
            for name, site in tr.nodes.items()
            if site["type"] == "sample"
            and not site_is_subsample(site)
            and (prior or name not in latent)
        ]
        return -_total(terms, xb)

    def neg_log_joint(self, names: Sequence[str], u: Tensor) -> Tensor:
        r""":math:`-\log p(\mathcal D, u)` with ``names`` taken from ``u``."""
        values, logdet = self.values(names, u)
        total = -logdet
        for i, xb, yb in self.data():
            total = total + self.batch_term(values, xb, yb, prior=i == 0)
        return total

    def hold_hessian(
        self, names: Sequence[str], u: Tensor, result: tuple[Tensor, Tensor, Tensor]
    ) -> None:
        r"""Keep ``result`` (of :meth:`hessian` at ``u``) for the next call, if it asks for the
        same point without a graph: the last Newton step's Hessian, when the polish stops
        without moving, is then the evidence's, not recomputed (one full pass over the data
        with a backward pass per row)."""
        self._held = (tuple(names), u.detach().clone(), result)

    def hessian(self, names: Sequence[str], *, create_graph: bool) -> tuple[Tensor, Tensor, Tensor]:
        r"""Value, gradient and exact Hessian of the negative log joint in ``names``."""
        u = self.flat(names)
        held, self._held = self._held, None
        if (
            held is not None
            and not create_graph
            and held[0] == tuple(names)
            and torch.equal(held[1], u.detach())
        ):
            return held[2]
        value: Tensor | None = None
        grad: Tensor | None = None
        hess: Tensor | None = None
        for i, xb, yb in self.data():

            def fn(v: Tensor, xb: Tensor = xb, yb: Tensor = yb, first: bool = i == 0) -> Tensor:
                values, logdet = self.values(names, v)
                term = self.batch_term(values, xb, yb, prior=first)
                return term - logdet if first else term

            v, g, h = hessian(fn, u, create_graph=create_graph)
            value = v if value is None else value + v
            grad = g if grad is None else grad + g
            hess = h if hess is None else hess + h
        assert value is not None and grad is not None and hess is not None
        return value, grad, hess

    def prior_diagonal(self, names: Sequence[str], *, create_graph: bool) -> Tensor:
        r"""Diagonal of the prior (and log-Jacobian) Hessian in ``names`` (factorised priors)."""
        _, xb, yb = next(self.data())

        def fn(v: Tensor) -> Tensor:
            values, logdet = self.values(names, v)
            if self.fast:
                return -logdet - self.model.log_prior(values)
            tr = self.trace(values, xb, yb)
            tr.compute_log_prob(lambda name, site: name in values)
            total = -logdet
            for name in values:
                total = total - tr.nodes[name]["log_prob_sum"]
            return total

        return separable_diagonal(fn, self.flat(names), create_graph=create_graph)

    # ------------------------------------------------------------------ network views
    def run(self, names: Sequence[str], u: Tensor, xb: Tensor) -> Tensor:
        r"""The network output on ``xb`` with the sites ``names`` taken from ``u``."""
        values, _ = self.values(names, u)
        params = self.point_values()
        params.update({n: values[n] for n in self.network_names})
        with self.seeded():
            return self.model.run(params, xb)

    def loss_curvature(self, xb: Tensor, yb: Tensor) -> Callable[[Tensor], LossCurvature]:
        r"""The likelihood's Hessian in the network output, as a function of that output.

        For the likelihoods of the direct log joint it is built from the output the curvature
        pass computes anyway; otherwise from the observation site of a traced model call.
        """
        values, _ = self.values([], self.flat([]))
        if self.fast:
            model = self.model
            return lambda out: LossCurvature.from_distribution(
                model.likelihood_distribution(out.detach(), values)
            )
        tr = self.trace(values, xb, yb)
        curvature = LossCurvature.from_distribution(tr.nodes["obs"]["fn"])
        return lambda out: curvature

    def ggn_diagonal(self, names: Sequence[str]) -> Tensor:
        r"""Diagonal of the likelihood's GGN in the network sites ``names``, over all data."""
        u = self.flat(names)
        total = u.new_zeros(u.numel())
        for _, xb, yb in self.data():
            loss = self.loss_curvature(xb, yb)
            total = total + ggn_diagonal(partial(self.run, names, xb=xb), u, loss)
        return total

    def hyperparameters_require_grad(self) -> bool:
        return any(
            isinstance(h.value, Tensor) and h.value.requires_grad
            for _, h in _all_hyperparameters(self.model)
        )

    # ------------------------------------------------------------------ evidence
    def log_evidence(
        self, names: Sequence[str], structure: _Structure, *, create_graph: bool
    ) -> tuple[Tensor, Tensor, list[CurvaturePart]]:
        r"""Laplace log evidence, log joint at the point, and the curvature parts of ``names``."""
        neg_log_joint, parts = structure.evidence_terms(self, names, create_graph=create_graph)
        log_joint = -neg_log_joint
        dim = sum(p.dim for p in parts)
        logdet = sum((p.logdet() for p in parts), log_joint.new_zeros((), dtype=torch.float64))
        value = log_joint.double() + gaussian_log_normaliser(dim) - 0.5 * logdet
        return value, log_joint, parts


# -------------------------------------------------------------------------- the structures
class _Structure(abc.ABC):
    r"""How the precision over a set of sites is computed (one subclass per ``structure``)."""

    key: str

    @abc.abstractmethod
    def build(
        self, problem: _Problem, names: Sequence[str], *, create_graph: bool
    ) -> list[CurvaturePart]:
        r"""The curvature parts covering ``names`` (each site in exactly one part)."""

    def evidence_terms(
        self, problem: _Problem, names: Sequence[str], *, create_graph: bool
    ) -> tuple[Tensor, list[CurvaturePart]]:
        r"""The negative log joint at the point and the curvature parts of ``names``."""
        value = problem.neg_log_joint(problem.latents.names, problem.flat(problem.latents.names))
        return value, self.build(problem, names, create_graph=create_graph)

    @staticmethod
    def _hessian_part(
        problem: _Problem, names: Sequence[str], create_graph: bool
    ) -> list[CurvaturePart]:
        if not names:
            return []
        _, _, hess = problem.hessian(names, create_graph=create_graph)
        return [
            DensePrecision(
                names,
                hess,
                floor=problem.floor,
                method="hessian",
                absolute_floor=_prior_floor(problem, names),
            )
        ]

    @staticmethod
    def _split(problem: _Problem, names: Sequence[str]) -> tuple[list[str], list[str]]:
        network = set(problem.network_names)
        return [n for n in names if n in network], [n for n in names if n not in network]


def _prior_floor(problem: _Problem, names: Sequence[str]) -> Tensor | None:
    """The smallest positive prior precision over ``names`` (the floor of the repair)."""
    diag = problem.prior_diagonal(names, create_graph=False).detach()
    positive = diag[diag > 0]
    return positive.min() if positive.numel() else None


class _FullStructure(_Structure):
    r"""The exact Hessian over all the sites (double back-propagation)."""

    key = "full"

    def build(self, problem, names, *, create_graph):
        return self._hessian_part(problem, names, create_graph)

    def evidence_terms(self, problem, names, *, create_graph):
        if not names:
            return super().evidence_terms(problem, names, create_graph=create_graph)
        # The Hessian's pass already evaluates the whole negative log joint.
        value, _, hess = problem.hessian(names, create_graph=create_graph)
        part = DensePrecision(
            names,
            hess,
            floor=problem.floor,
            method="hessian",
            absolute_floor=_prior_floor(problem, names),
        )
        return value, [part]


class _DiagStructure(_Structure):
    r"""Network sites: diagonal GGN of the likelihood plus the exact prior Hessian diagonal.

    Other sites (hyperparameters, a random noise scale) get the exact Hessian among themselves.
    """

    key = "diag"

    def build(self, problem, names, *, create_graph):
        network, rest = self._split(problem, names)
        parts: list[CurvaturePart] = []
        if network:
            diag = problem.ggn_diagonal(network) + problem.prior_diagonal(
                network, create_graph=create_graph
            )
            parts.append(DiagonalPrecision(network, diag, floor=problem.floor))
        return parts + self._hessian_part(problem, rest, create_graph)


class _KronStructure(_Structure):
    r"""KFAC blocks for layer weights, exact GGN blocks for their biases, diagonal GGN otherwise.

    Layer weights are those of :data:`~symprior.inference._curvature.KFAC_LAYERS` (``nn.Linear``,
    ``nn.Conv2d``, the RPP residual of ``RPPLinear``) whose prior Hessian is isotropic; every
    other network site falls back to the diagonal GGN (reported in the posterior ``info`` as
    ``curvature.<site> = "diag-ggn"``). Non-network sites get the exact Hessian among themselves.
    """

    key = "kron"

    def build(self, problem, names, *, create_graph):
        network, rest = self._split(problem, names)
        parts: list[CurvaturePart] = []
        if network:
            parts.extend(self._network_parts(problem, network, create_graph))
        return parts + self._hessian_part(problem, rest, create_graph)

    def evidence_terms(self, problem, names, *, create_graph):
        network, rest = self._split(problem, names)
        if not (problem.fast and network):
            return super().evidence_terms(problem, names, create_graph=create_graph)
        # The KFAC pass runs the network on every batch at the point: the likelihood part of
        # the negative log joint is read off the same outputs (no second pass over the data).
        all_names = problem.latents.names
        values, logdet = problem.values(all_names, problem.flat(all_names))
        nll: list[Tensor] = []
        parts = self._network_parts(problem, network, create_graph, values=values, nll=nll)
        parts += self._hessian_part(problem, rest, create_graph)
        value = -logdet - problem.model.log_prior(values)
        for term in nll:
            value = value + term.to(value)
        return value, parts

    def _network_parts(
        self,
        problem: _Problem,
        names: list[str],
        create_graph: bool,
        *,
        values: Mapping[str, Tensor] | None = None,
        nll: list[Tensor] | None = None,
    ) -> list[CurvaturePart]:
        layers = find_kron_layers(problem.model.network, names)
        u = problem.flat(names)
        factors: dict[str, Any] = {}
        for _, xb, yb in problem.data():
            loss = problem.loss_curvature(xb, yb)
            on_output = None
            if nll is not None:

                def on_output(out: Tensor, yb: Tensor = yb) -> None:
                    nll.append(-problem.model.log_likelihood(out, yb, values))

            batch = kron_factors(
                partial(problem.run, names, xb=xb), u, loss, layers, on_output=on_output
            )
            for site, f in batch.items():
                if site not in factors:
                    factors[site] = f
                    continue
                acc = factors[site]
                acc.a_sum = acc.a_sum + f.a_sum
                acc.g_sum = acc.g_sum + f.g_sum
                if acc.bias_sum is not None and f.bias_sum is not None:
                    acc.bias_sum = acc.bias_sum + f.bias_sum
                acc.count += f.count
        prior = problem.split(names, problem.prior_diagonal(names, create_graph=create_graph))
        bias_of = {layer.bias: layer.weight for layer in layers if layer.bias is not None}

        def isotropic(delta: Tensor) -> bool:
            return bool(torch.allclose(delta, delta.mean().expand_as(delta)))

        iso = {name: isotropic(prior[name].reshape(-1)) for name in names}
        kron: dict[str, KroneckerPrecision] = {}
        for name in names:
            delta = prior[name].reshape(-1)
            if name in factors and iso[name]:
                kron[name] = KroneckerPrecision(
                    name, factors[name], delta.mean(), floor=problem.floor
                )
        parts: list[CurvaturePart] = []
        fallback: list[str] = []
        for name in names:
            delta = prior[name].reshape(-1)
            if name in kron:
                parts.append(kron[name])
            elif name in bias_of and bias_of[name] in factors:
                weight = bias_of[name]
                bias_sum = factors[weight].bias_sum
                assert bias_sum is not None
                decomposition = None
                if factors[weight].bias_is_g and weight in kron and iso[name]:
                    # G_sum + delta I has the eigenvectors of G_sum, already decomposed.
                    eig_g, vectors = kron[weight].g_decomposition
                    decomposition = (eig_g + delta.mean().to(eig_g), vectors)
                parts.append(
                    DensePrecision(
                        [name],
                        bias_sum + torch.diag(delta.to(bias_sum)),
                        floor=problem.floor,
                        method="kron-bias",
                        decomposition=decomposition,
                        eigen_block=True,
                    )
                )
            else:
                fallback.append(name)
        if fallback:
            pieces = [prior[n].reshape(-1) for n in fallback]
            diag = problem.ggn_diagonal(fallback) + torch.cat(pieces)
            parts.append(DiagonalPrecision(fallback, diag, floor=problem.floor))
        return parts


#: The curvature structures, by key.
STRUCTURES: dict[str, type[_Structure]] = {
    cls.key: cls for cls in (_FullStructure, _DiagStructure, _KronStructure)
}


# ---------------------------------------------------------------------- hyperparameters
def _all_hyperparameters(model: SymmetryModel) -> list[tuple[str, Hyperparameter]]:
    r"""``(parameter or site, hyperparameter)`` of every prior and likelihood, without repeats."""
    found: list[tuple[str, Hyperparameter]] = []
    seen: set[int] = set()

    def add(owner: str, h: Hyperparameter) -> None:
        if id(h) not in seen:
            seen.add(id(h))
            found.append((owner, h))

    for name, prior in model.priors.items():
        for h in prior.hyperparameters():
            add(name, h)
    for name, prior in (model.weight_priors or {}).items():
        for h in prior.hyperparameters():
            add(name, h)
    for likelihood in model.likelihood_list:
        if isinstance(likelihood, Gaussian) and likelihood.hyper is not None:
            add("obs", likelihood.hyper)
        if isinstance(likelihood, SymmetryLikelihood):
            add("symmetry", likelihood.beta)
    return found


def learnable_hyperparameters(model: SymmetryModel) -> dict[str, Hyperparameter]:
    r"""The fixed positive hyperparameters of ``model``, keyed by site name.

    Keys are the hyperparameters' site names (``"residual_scale"``, ``"equivariant_scale"``,
    ``"lam"``, ``"noise_scale"``, ``"symmetry_precision"``); two different hyperparameters with
    the same site name are told apart as ``"<parameter>.<site name>"``.
    """
    fixed = [(owner, h) for owner, h in _all_hyperparameters(model) if not h.is_random]
    counts = Counter(h.site_name for _, h in fixed)
    return {
        (h.site_name if counts[h.site_name] == 1 else f"{owner}.{h.site_name}"): h
        for owner, h in fixed
    }


class _HyperLearner:
    r"""Adam on the logs of fixed hyperparameters, bound into the priors as tensors."""

    def __init__(self, hypers: Mapping[str, Hyperparameter], *, lr: float, device: Any) -> None:
        self.hypers = dict(hypers)
        self.original = {k: h.value for k, h in self.hypers.items()}
        self.logs = {
            k: torch.tensor(
                math.log(float(h.value)), dtype=torch.float64, device=device, requires_grad=True
            )
            for k, h in self.hypers.items()
        }
        self.optimizer = torch.optim.Adam(list(self.logs.values()), lr=lr)

    def bind(self, differentiable: bool) -> None:
        for k, h in self.hypers.items():
            log = self.logs[k]
            h.value = log.exp() if differentiable else log.detach().exp()

    def step(self, loss: Tensor) -> None:
        tensors = list(self.logs.values())
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.zeros_like(t) if g is None else g.detach()
        self.optimizer.step()

    def finish(self) -> dict[str, float]:
        learned = {k: float(self.logs[k].detach().exp()) for k in self.hypers}
        for k, h in self.hypers.items():
            h.value = learned[k]
        return learned

    def restore(self) -> None:
        for k, h in self.hypers.items():
            h.value = self.original[k]


# ---------------------------------------------------------------------------- the engine
def _positive_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class Laplace(Engine):
    r"""Laplace approximation at the MAP point: Gaussian posterior blocks and the log evidence.

    ``fit`` first finds the mode of the joint density in unconstrained coordinates (the MAP
    objective of :class:`~symprior.inference.MAP` plus the log-Jacobian of positive sites), then
    computes the precision of the Laplace subset at the mode:

    * ``subset="relaxation"``: the relaxation parameters and hyperparameter sites, with the other
      weights held at their MAP values;
    * ``subset="all"``: every latent site, weights included (needs a model built with
      ``weight_prior``).

    and ``structure`` says how:

    * ``"full"``: the exact Hessian (double back-propagation; small subsets). Followed by up to
      ``newton_steps`` damped Newton steps on the subset from the MAP point (exact for a
      quadratic log joint, so linear-Gaussian models get their closed-form posterior);
    * ``"diag"``: the diagonal GGN of the likelihood plus the exact diagonal of the prior Hessian
      for network parameters;
    * ``"kron"``: KFAC (Ritter et al. 2018) for ``nn.Linear``/``nn.Conv2d`` weights and RPP
      residuals, exact GGN blocks for their biases, the diagonal GGN for the rest.

    Sites that are not network parameters (hyperparameter sites, a random noise scale) always get
    the exact Hessian among themselves. The GGN structures need a single Gaussian or Categorical
    likelihood and a network that processes data points independently. A precision that is not
    positive definite has its eigenvalues raised to ``eigenvalue_floor`` times the largest one,
    with a :class:`CurvatureWarning`.

    The posterior's ``info`` holds ``log_evidence``, ``log_joint`` (at the mode),
    ``repaired_eigenvalues``, ``subset``, ``structure``, ``curvature.<site>`` (``"hessian"``,
    ``"diag-ggn"``, ``"kron"``, ``"kron-bias"`` or ``"point"``), the MAP ``losses`` and, after
    learning, ``hyper.<name>``.

    Parameters
    ----------
    subset : {"relaxation", "all"}
    structure : {"full", "diag", "kron"}
    learn_hyperparameters : bool or sequence of str
        Learn fixed positive hyperparameters by maximising the Laplace evidence: ``True`` for all
        of :func:`learnable_hyperparameters`, or a list of their names (e.g.
        ``["residual_scale", "noise_scale"]``). MAP runs in rounds of ``hyper_every`` epochs; in
        between, ``hyper_steps`` Adam steps (learning rate ``hyper_lr``) on the log
        hyperparameters maximise the evidence at the current mode, differentiating through the
        curvature. The learned values are written back into the prior/likelihood objects as
        floats and reported as ``info["hyper.<name>"]``.
    hyper_every, hyper_steps : int
    hyper_lr : float
    newton_steps : int, optional
        Newton polish steps for ``structure="full"`` (default 5, stopping once converged); 0
        keeps the MAP point as is. Other structures use the MAP point.
    eigenvalue_floor : float
        Relative floor of the eigenvalue repair.
    curvature_batch_size : int, optional
        Data points per batch of the curvature and evidence pass, which sums over all the data
        exactly whatever the batches: only memory and speed depend on it. Default: the larger of
        ``batch_size`` and :data:`CURVATURE_BATCH_SIZE` (all the data when ``batch_size`` is
        ``None``). Networks whose output on a point depends on the rest of its batch (batch
        normalisation in training mode) are outside the Laplace engine's assumptions anyway.
    map_options : TrainOptions, optional
        Options of the MAP loop; default: ``options``.
    options : TrainOptions, optional
        Or the same fields as keywords (see :class:`~symprior.inference.MAP`).

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V
    >>> from symprior.models import Gaussian, SymmetryModel
    >>> from symprior.nn import RPPLinear
    >>> from symprior.priors import ResidualPrior
    >>> _ = torch.manual_seed(0)
    >>> model = SymmetryModel(RPPLinear(V(SO2()), V(SO2())).double(), Gaussian(0.1),
    ...                       priors={"*": ResidualPrior(0.1)})
    >>> x = torch.randn(32, 2, dtype=torch.float64)
    >>> post = Laplace(num_epochs=30, lr=0.05, progress=False).fit(model, (x, x))
    >>> [b.kind for b in post.blocks], post.blocks[0].dim
    (['full'], 6)
    >>> bool(torch.isfinite(post.log_evidence()))
    True
    """

    name = "laplace"

    def __init__(
        self,
        subset: str = "relaxation",
        structure: str = "full",
        *,
        learn_hyperparameters: bool | Sequence[str] = False,
        hyper_every: int = 20,
        hyper_steps: int = 5,
        hyper_lr: float = 0.05,
        newton_steps: int | None = None,
        eigenvalue_floor: float = EIGENVALUE_FLOOR,
        curvature_batch_size: int | None = None,
        map_options: TrainOptions | None = None,
        options: TrainOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(options, **kwargs)
        if curvature_batch_size is not None:
            _count(curvature_batch_size, "curvature_batch_size", 1)
        self.curvature_batch_size = curvature_batch_size
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {tuple(STRUCTURES)}, got {structure!r}")
        if not isinstance(learn_hyperparameters, bool):
            if isinstance(learn_hyperparameters, str) or not all(
                isinstance(n, str) for n in learn_hyperparameters
            ):
                raise TypeError(
                    "learn_hyperparameters must be a bool or a list of hyperparameter names, got "
                    f"{learn_hyperparameters!r}"
                )
            learn_hyperparameters = list(learn_hyperparameters)
        if map_options is not None:
            if not isinstance(map_options, TrainOptions):
                raise TypeError(
                    f"map_options must be a TrainOptions, got {type(map_options).__name__}"
                )
            if map_options.torch_device != self.options.torch_device:
                raise ValueError(
                    f"map_options.device ({map_options.device!r}) must equal the engine's device "
                    f"({self.options.device!r})"
                )
        self.subset = subset
        self.structure = structure
        self.learn_hyperparameters: bool | list[str] = learn_hyperparameters
        self.hyper_every = _count(hyper_every, "hyper_every", 1)
        self.hyper_steps = _count(hyper_steps, "hyper_steps", 1)
        self.hyper_lr = _positive_number(hyper_lr, "hyper_lr")
        if newton_steps is None:
            newton_steps = 5 if structure == "full" else 0
        self.newton_steps = _count(newton_steps, "newton_steps", 0)
        if self.newton_steps and structure != "full":
            raise ValueError("newton_steps needs structure='full' (the exact Hessian)")
        floor = _positive_number(eigenvalue_floor, "eigenvalue_floor")
        if floor >= 1:
            raise ValueError(f"eigenvalue_floor must be < 1, got {eigenvalue_floor!r}")
        self.eigenvalue_floor = floor
        self.map_options = map_options if map_options is not None else self.options
        self._structure = STRUCTURES[structure]()

    # ------------------------------------------------------------------ checks
    def _check(self, model: Any) -> SymmetryModel:
        model = as_symmetry_model(model)
        if self.subset == "all" and model.weight_priors is None:
            raise ValueError(
                "subset='all' needs a model built with weight_prior=... (the weights must be "
                "random); use subset='relaxation' otherwise"
            )
        if self.structure != "full":
            likelihoods = model.likelihood_list
            if len(likelihoods) != 1 or not isinstance(likelihoods[0], Gaussian | Categorical):
                raise ValueError(
                    f"structure={self.structure!r} (a generalised Gauss-Newton approximation) "
                    "needs a single Gaussian or Categorical likelihood; use structure='full'"
                )
        return model

    def _hypers(self, model: SymmetryModel) -> dict[str, Hyperparameter]:
        if self.learn_hyperparameters is False:
            return {}
        available = learnable_hyperparameters(model)
        if self.learn_hyperparameters is True:
            if not available:
                raise ValueError(
                    "learn_hyperparameters=True, but the model has no fixed positive "
                    "hyperparameters (prior scales, lam, a fixed Gaussian noise)"
                )
            return available
        unknown = [n for n in self.learn_hyperparameters if n not in available]
        if unknown:
            raise ValueError(
                f"learn_hyperparameters names {unknown} that the model does not have; its fixed "
                f"hyperparameters are {sorted(available)}"
            )
        return {n: available[n] for n in self.learn_hyperparameters}

    def _subset(self, model: SymmetryModel, latents: _Latents) -> list[str]:
        if self.subset == "all":
            return list(latents.names)
        weights = set(model.site_names()["weights"])
        return [n for n in latents.names if n not in weights]

    def _curvature_batches(self, data: Any) -> Batches:
        o = self.options
        size = self.curvature_batch_size
        if size is None and o.batch_size is not None:
            size = max(o.batch_size, CURVATURE_BATCH_SIZE)
        return as_batches(data, batch_size=size, seed=o.seed, device=o.torch_device, shuffle=False)

    # ------------------------------------------------------------------ fitting
    def fit(self, model: Any, data: Any, *, resume: bool = False) -> Posterior:
        model = self._check(model)
        mo = self.map_options
        hypers = self._hypers(model)
        if hypers:
            if resume or mo.checkpoint_dir is not None:
                raise ValueError(
                    "checkpoints and resume are not supported while learning hyperparameters "
                    "(learn_hyperparameters); leave checkpoint_dir unset"
                )
            if mo.num_epochs <= self.hyper_every:
                raise ValueError(
                    f"hyper_every ({self.hyper_every}) must be smaller than num_epochs "
                    f"({mo.num_epochs}) to leave room for hyperparameter steps"
                )
        device = self.options.torch_device
        map_batches = as_batches(data, batch_size=mo.batch_size, seed=mo.seed, device=device)
        curvature_batches = self._curvature_batches(data)
        model.to(device)
        store = pyro.get_param_store()
        devices = [device.index or 0] if device.type == "cuda" else []
        learner = _HyperLearner(hypers, lr=self.hyper_lr, device=device) if hypers else None
        try:
            with store.scope(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(mo.seed)
                x0, y0 = next(iter(map_batches.epoch(0)))
                _need_targets(y0)
                if learner is not None:
                    learner.bind(differentiable=False)
                trace = pyro.poutine.trace(model).get_trace(x0, y0, num_data=map_batches.num_data)
                check_values(model, trace, map_batches)
                latents = _Latents(model, trace)
                problem = _Problem(
                    model,
                    latents,
                    curvature_batches,
                    seed=self.options.seed,
                    floor=self.eigenvalue_floor,
                )
                names = self._subset(model, latents)
                self._optimise(model, data, problem, names, learner, resume=resume)
                if self.newton_steps:
                    self._polish(problem, names)
                evidence, log_joint, parts = problem.log_evidence(
                    names, self._structure, create_graph=False
                )
                repaired = _warn_repaired(parts)
                learned = learner.finish() if learner is not None else {}
                info: dict[str, Any] = {
                    "log_evidence": float(evidence.detach()),
                    "log_joint": float(log_joint.detach()),
                    "repaired_eigenvalues": repaired,
                    "subset": self.subset,
                    "structure": self.structure,
                    "num_data": curvature_batches.num_data,
                    "losses": list(self.losses),
                }
                info.update({f"hyper.{k}": v for k, v in learned.items()})
                return self._posterior(model, problem, parts, info)
        except BaseException:
            if learner is not None and learner.logs:
                learner.restore()
            raise

    def _optimise(
        self,
        model: SymmetryModel,
        data: Any,
        problem: _Problem,
        names: list[str],
        learner: _HyperLearner | None,
        *,
        resume: bool,
    ) -> None:
        r"""MAP, in rounds of ``hyper_every`` epochs separated by evidence steps when learning."""
        mo = self.map_options
        latents = problem.latents
        store = pyro.get_param_store()
        params = dict(latents.unconstrained)
        for n, value in store.named_parameters():
            params.setdefault(n, value)

        def make_posterior() -> Posterior:
            return Posterior(
                latents.sites,
                [DeltaBlock(list(latents.names), latents.flat())] if latents.names else [],
                _point_values(),
                engine=self.name,
                info={"losses": list(self.losses)},
                model=model,
            )

        device = self.options.torch_device
        total, every = mo.num_epochs, self.hyper_every
        # (first epoch, epochs) of each round; one round without learning.
        rounds = (
            [(0, total)]
            if learner is None
            else [(s, min(every, total - s)) for s in range(0, total, every)]
        )
        self.losses = []
        for start, epochs in rounds:
            if learner is not None and start > 0:
                self._hyper_round(problem, names, learner)
            # Each round's data order continues the epoch numbering of a single run.
            seed = mo.seed + start
            options = dataclasses.replace(mo, num_epochs=epochs, seed=seed)
            batches = as_batches(data, batch_size=mo.batch_size, seed=seed, device=device)
            objective = partial(_map_loss, problem, num_data=batches.num_data)
            loop = MAP(options=options)
            loop._run(
                objective,
                params,
                batches,
                make_posterior,
                resume=resume,
                description="Laplace: MAP",
                engine=self.name,
            )
            self.losses.extend(loop.losses)

    def _hyper_round(self, problem: _Problem, names: list[str], learner: _HyperLearner) -> None:
        if self.newton_steps:
            self._polish(problem, names)
        for _ in range(self.hyper_steps):
            learner.bind(differentiable=True)
            evidence, _, _ = problem.log_evidence(names, self._structure, create_graph=True)
            learner.step(-evidence)
        learner.bind(differentiable=False)

    def _polish(self, problem: _Problem, names: list[str]) -> None:
        r"""Damped Newton steps on the subset (exact Hessian, backtracking line search)."""
        if not names:
            return
        for _ in range(self.newton_steps):
            u = problem.flat(names)
            value, grad, hess = problem.hessian(names, create_graph=False)
            # Whenever the polish stops here, the point is where this Hessian was taken: the
            # evidence that follows reuses it.
            problem.hold_hessian(names, u, (value, grad, hess))
            part = DensePrecision(names, hess.detach(), floor=self.eigenvalue_floor)
            if part.num_repaired:
                # Not in a convex basin: a Newton step would follow the floor's huge variances.
                return
            direction = -part.solve(grad.detach())
            decrement = float(-(grad.detach().double() @ direction.double()))
            current = float(value.detach())
            if not decrement > 1e-14 * max(1.0, abs(current)):
                return
            step = 1.0
            for _ in range(30):
                candidate = u + step * direction
                try:
                    with torch.no_grad():
                        new = float(problem.neg_log_joint(names, candidate))
                except ValueError:
                    # Distribution arguments out of their support (e.g. a scale underflowing
                    # to 0): the step is too long.
                    new = math.inf
                if math.isfinite(new) and new <= current - 1e-4 * step * decrement:
                    problem.assign(names, candidate)
                    break
                step *= 0.5
            else:
                return

    def _posterior(
        self,
        model: SymmetryModel,
        problem: _Problem,
        parts: list[CurvaturePart],
        info: dict[str, Any],
    ) -> Posterior:
        latents = problem.latents
        blocks: list[Block] = [p.block(problem.flat(p.names)) for p in parts]
        covered = {n for p in parts for n in p.names}
        rest = [n for n in latents.names if n not in covered]
        if rest:
            blocks.append(DeltaBlock(rest, problem.flat(rest)))
        for p in parts:
            for n in p.names:
                info[f"curvature.{n}"] = p.method
        for n in rest:
            info[f"curvature.{n}"] = "point"
        order = [n for b in blocks for n in b.names]
        sites = [problem.site[n] for n in order]
        return Posterior(sites, blocks, _point_values(), engine=self.name, info=info, model=model)

    # ------------------------------------------------------------------ evidence
    def log_evidence(
        self, model: Any, data: Any, params: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        r"""The Laplace log evidence of ``model`` at a given point, without any optimisation.

        Differentiable in every hyperparameter whose ``value`` is a tensor that requires grad
        (e.g. ``prior.lam.value = torch.tensor(0.1, requires_grad=True)``): the curvature is then
        built with ``create_graph=True``. The model is left unchanged.

        Parameters
        ----------
        model : SymmetryModel
        data
            ``(x, y)`` tensors, a Dataset or a DataLoader.
        params : mapping from str to Tensor, optional
            Constrained values of latent sites and of point-estimated parameters (weights, a
            learned ``noise_scale``), e.g. ``{**posterior.mean(), **posterior.point}``; missing
            ones are the network's current values (latent sites that are not network parameters:
            their prior mean).

        Returns
        -------
        Tensor
            Scalar, float64.
        """
        model = self._check(model)
        batches = self._curvature_batches(data)
        device = self.options.torch_device
        model.to(device)
        store = pyro.get_param_store()
        with store.scope():
            problem_seed = self.options.seed
            devices = [device.index or 0] if device.type == "cuda" else []
            x0, y0 = next(iter(batches.epoch(0)))
            _need_targets(y0)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(problem_seed)
                trace = pyro.poutine.trace(model).get_trace(x0, y0)
            latents = _Latents(model, trace)
            for n in latents.names:
                latents.unconstrained[n] = latents.unconstrained[n].detach().clone()
            for n, value in (params or {}).items():
                if not isinstance(value, Tensor):
                    raise TypeError(f"params[{n!r}] must be a tensor, got {type(value).__name__}")
                if n in latents.unconstrained:
                    raw = latents.transforms[n].inv(value.detach().to(device))
                    latents.unconstrained[n] = raw.reshape(latents.unconstrained[n].shape).clone()
                elif n in store:
                    store[n] = value.detach().to(device).clone()
                else:
                    raise ValueError(
                        f"params has {n!r}, which is neither a latent site {latents.names} nor a "
                        f"point-estimated parameter of the model"
                    )
            problem = _Problem(
                model, latents, batches, seed=problem_seed, floor=self.eigenvalue_floor
            )
            names = self._subset(model, latents)
            evidence, _, parts = problem.log_evidence(
                names, self._structure, create_graph=problem.hyperparameters_require_grad()
            )
            _warn_repaired(parts)
            return evidence


def _need_targets(y: Tensor | None) -> Tensor:
    if y is None:
        raise ValueError("data must hold targets: Laplace needs (x, y) pairs, got x alone")
    return y


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    r"""Run with the global RNG of ``device`` (and the CPU) seeded, restoring it afterwards."""
    cuda = device.type == "cuda"
    index = device.index or 0 if cuda else 0
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(index) if cuda else None
    # Seeding the two generators directly: torch.manual_seed also visits every backend.
    torch.default_generator.manual_seed(seed)
    if cuda:
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, index)


def _map_loss(problem: _Problem, xb: Tensor, yb: Tensor | None, *, num_data: int) -> Tensor:
    r"""The minibatch MAP objective in unconstrained coordinates (log-Jacobian included)."""
    values, logdet = problem.latents.values_and_logdet(
        xb if xb.is_floating_point() else problem.flat([])
    )
    if problem.fast:
        return -problem.model.log_joint(values, xb, yb, num_data=num_data) - logdet
    conditioned = pyro.poutine.condition(problem.model, data=values)
    tr = pyro.poutine.trace(conditioned).get_trace(xb, yb, num_data=num_data)
    return -tr.log_prob_sum() - logdet


def _total(terms: Sequence[Tensor], like: Tensor) -> Tensor:
    r"""The sum of scalar tensors (promoting dtypes), or a zero like ``like``."""
    if not terms:
        return like.new_zeros((), dtype=like.dtype if like.is_floating_point() else None)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _warn_repaired(parts: Sequence[CurvaturePart]) -> int:
    repaired = sum(p.num_repaired for p in parts)
    if repaired:
        where = ", ".join(f"{'/'.join(p.names)}: {p.num_repaired}" for p in parts if p.num_repaired)
        warnings.warn(
            f"the Laplace precision is not positive definite: {repaired} eigenvalue(s) were "
            f"raised to the floor ({where}); the point may not be a mode",
            CurvatureWarning,
            stacklevel=3,
        )
    return repaired


# ------------------------------------------------------------------------ linearised predictive
def _output_factor(block: Block, jac: Tensor) -> Tensor | None:
    r"""``F`` ``(B, K, r)`` with :math:`F F^\top = J \Sigma J^\top` for a block's covariance
    :math:`\Sigma` and ``jac`` ``(B, K, dim)``; ``None`` for a block known only by its dense
    covariance."""
    if isinstance(block, DiagonalBlock):
        return jac * block.scale.to(jac)
    if isinstance(block, FullBlock):
        return jac @ block.scale_tril.to(jac)
    if isinstance(block, LowRankBlock):
        return torch.cat([jac @ block.cov_factor.to(jac), jac * block.cov_diag.to(jac).sqrt()], -1)
    if isinstance(block, KroneckerBlock):
        p, q = block.tril_a.shape[0], block.tril_g.shape[0]
        m = block.tril_a.to(jac).T @ jac.reshape(*jac.shape[:2], p, q) @ block.tril_g.to(jac)
        return m.reshape(*jac.shape[:2], p * q)
    if isinstance(block, KroneckerEigenBlock):
        p, q = block.variances.shape
        m = block.rows.to(jac).T @ jac.reshape(*jac.shape[:2], p, q) @ block.cols.to(jac)
        return (m * block.variances.to(jac).sqrt()).reshape(*jac.shape[:2], p * q)
    return None


def _output_covariance(block: Block, jac: Tensor, *, full: bool) -> Tensor:
    r"""``diag(J Σ J^T)`` ``(B, K)``, or with ``full`` all of it ``(B, K, K)``."""
    factor = _output_factor(block, jac)
    if factor is not None:
        return factor @ factor.mT if full else factor.square().sum(-1)
    cov = block.covariance().to(jac)
    return torch.einsum("bki,ij,blj->bkl" if full else "bki,ij,bkj->bk", jac, cov, jac)


#: Default batching of the linearised predictive: at most this many output entries per
#: Jacobian evaluation (the cost of reverse mode over a batch grows with the square of its rows)
JACOBIAN_OUTPUTS = 256
#: and at most this many Jacobian entries (memory).
JACOBIAN_NUMBERS = 2**24


def linearized_predict(
    posterior: Posterior,
    x: Tensor,
    *,
    batch_size: int | None = None,
    full_covariance: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of the network output under the linearised Laplace predictive.

    With the network linearised at the posterior location :math:`u^*` (unconstrained
    coordinates), :math:`f(x, u) \approx f(x, u^*) + J(x)(u - u^*)`, and
    :math:`u \sim N(u^*, \Sigma)` block by block, the output of each input row is Gaussian with
    mean :math:`f(x, u^*)` and covariance :math:`J \Sigma J^\top` (the GLM predictive of Immer,
    Korzepa & Bauer 2021). Only latent sites that are network parameters and lie in a Gaussian
    block enter :math:`J`; point weights and point (delta) sites stay at their values.

    These are moments of the network output :math:`f`, not of ``y``: for a
    :class:`~symprior.models.Gaussian` likelihood with noise :math:`\sigma` the predictive of
    ``y`` is :math:`N(f(x, u^*), \mathrm{variance} + \sigma^2)` (a learned :math:`\sigma` is
    ``posterior.point["noise_scale"]``). For a :class:`~symprior.models.Categorical` likelihood
    they are moments of the logits; :meth:`Posterior.predict` turns them into class
    probabilities.

    Parameters
    ----------
    posterior : Posterior
        With a model attached.
    x : Tensor
        Inputs ``(N, ...)``.
    batch_size : int, optional
        Rows of ``x`` per Jacobian evaluation (memory: ``batch_size * K * d`` numbers for ``K``
        outputs per row and ``d`` Gaussian network coordinates). By default at most
        ``JACOBIAN_OUTPUTS`` output entries and ``JACOBIAN_NUMBERS`` Jacobian entries per
        evaluation; the result does not depend on it (up to round-off).
    full_covariance : bool
        Return the covariance between the ``K`` output entries of each row instead of their
        variances.

    Returns
    -------
    mean : Tensor
        :math:`f(x, u^*)`, shaped like the network output ``(N, ...)``.
    variance : Tensor
        The diagonal of :math:`J \Sigma J^\top`, shaped like ``mean``; with
        ``full_covariance=True`` the covariance ``(N, K, K)`` over each row's output entries
        flattened row-major (rows are independent inputs; their cross-covariances are not
        returned).
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a Posterior, got {type(posterior).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if batch_size is not None:
        _count(batch_size, "batch_size", 1)
    if not isinstance(full_covariance, bool):
        raise TypeError(f"full_covariance must be a bool, got {type(full_covariance).__name__}")
    model = posterior._need_model()
    network = dict(model.network.named_parameters())
    device = next(iter(network.values())).device if network else x.device
    x = x.to(device)
    point = {k: v.to(device) for k, v in posterior.point.items() if k in set(model.point_names)}
    # Network sites of Gaussian blocks vary with u; those of point blocks are fixed values.
    loc = posterior.loc().to(device)
    net_sites: list[SiteInfo] = []
    pieces: list[Tensor] = []
    start = 0
    for block in posterior.blocks:
        for n in block.names:
            site = posterior._site[n]
            piece = loc[start : start + site.numel]
            start += site.numel
            if n not in network:
                continue
            if isinstance(block, DeltaBlock):
                point[n] = site.to_constrained(piece)
            else:
                net_sites.append(site)
                pieces.append(piece)
    u0 = torch.cat(pieces) if pieces else loc[:0]

    def run_on(xb: Tensor) -> Any:
        def run(u: Tensor) -> Tensor:
            values = dict(point)
            i = 0
            for s in net_sites:
                values[s.name] = s.to_constrained(u[i : i + s.numel])
                i += s.numel
            return model.run(values, xb)

        return run

    if batch_size is None:
        with torch.no_grad(), evaluation(model.network):
            per_row = max(1, run_on(x[:1])(u0)[:1].numel())
        batch_size = max(
            1,
            min(JACOBIAN_OUTPUTS // per_row, JACOBIAN_NUMBERS // (per_row * max(1, u0.numel()))),
        )
    means, variances = [], []
    for xb in x.split(batch_size):
        with evaluation(model.network):  # the function Posterior.predict uses
            out, jac = output_jacobian(run_on(xb), u0)
        columns: dict[str, Tensor] = {}
        i = 0
        for s in net_sites:
            columns[s.name] = jac[..., i : i + s.numel]
            i += s.numel
        b, k = jac.shape[:2]
        var = jac.new_zeros((b, k, k) if full_covariance else (b, k))
        for block in posterior.blocks:
            if isinstance(block, DeltaBlock):
                continue
            block_jac = [
                columns.get(n, jac.new_zeros(b, k, posterior._site[n].numel)) for n in block.names
            ]
            var = var + _output_covariance(block, torch.cat(block_jac, -1), full=full_covariance)
        means.append(out)
        variances.append(var if full_covariance else var.reshape(out.shape))
    return torch.cat(means), torch.cat(variances)


def linearized_predictive_mean(
    posterior: Posterior,
    x: Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
    *,
    batch_size: int | None = None,
) -> Tensor:
    r"""The mean of ``y`` under the linearised (GLM) predictive (:func:`linearized_predict`).

    The predictive mean of the likelihood (``predictive_mean``: the output for a Gaussian,
    the softmax for a Categorical) averaged over the Gaussian of the linearised network output,
    :math:`E[\mathrm{mean}(f)]` for :math:`f \sim N(f(x, u^*), J \Sigma J^\top)`:

    * likelihoods whose predictive mean is the output (:class:`~symprior.models.Gaussian`,
      REMUL's): exactly :math:`f(x, u^*)`, no draws;
    * others (:class:`~symprior.models.Categorical`): Monte Carlo over ``num_samples`` draws of
      :math:`f` in *function space*, each row's outputs drawn jointly from their full covariance
      (the GLM predictive of Immer, Korzepa & Bauer 2021, sec. 3; laplace-torch's
      ``link_approx="mc"``), in antithetic pairs :math:`f^* \pm R z` (unbiased; the error of
      the part of the mean that is linear in :math:`z` cancels). Cheap: no network
      evaluations beyond the Jacobian. The deterministic probit approximation
      :math:`\mathrm{softmax}(f^* / \sqrt{1 + \frac{\pi}{8}\mathrm{diag}\,J \Sigma J^\top})`
      (MacKay 1992; laplace-torch's default ``link_approx``) ignores the covariances between
      the logits: on small three-class networks with logit variances of 1 to 15 it was off by
      0.04 to 0.12 in the probabilities, against 0.01 to 0.03 for 100 draws here.
    """
    likelihood = posterior._need_model().likelihood_list[0]
    if type(likelihood).predictive_mean is Likelihood.predictive_mean:
        return linearized_predict(posterior, x, batch_size=batch_size)[0]
    mean, cov = linearized_predict(posterior, x, batch_size=batch_size, full_covariance=True)
    # R with R R^T = cov from the eigendecomposition: tolerates singular covariances (e.g. of
    # logits that can shift together).
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    root = eigenvectors * eigenvalues.clamp(min=0).sqrt().unsqueeze(-2)
    n, k = cov.shape[:2]
    z_device = generator.device if generator is not None else mean.device
    half = torch.randn(
        (num_samples + 1) // 2, n, k, generator=generator, dtype=mean.dtype, device=z_device
    )
    z = torch.cat([half, -half])[:num_samples]
    draws = mean.reshape(1, n, k) + torch.einsum("nkr,snr->snk", root, z.to(mean.device))
    predictions = likelihood.predictive_mean(draws.reshape(num_samples * n, *mean.shape[1:]))
    return predictions.reshape(num_samples, n, *predictions.shape[1:]).mean(0)
