r"""The Posterior every engine returns: Gaussian (or point) blocks over the latent sites.

Latent sites (relaxation parameters, hyperparameters and, with a ``weight_prior``, weights) are
represented in *unconstrained* coordinates, flattened and concatenated in site order. A posterior is
a list of blocks, each over a run of sites: a point (MAP), a diagonal, low-rank-plus-diagonal or
full Gaussian (SVI, Laplace), or a Kronecker-factored Gaussian (Laplace KFAC). Samples are mapped to
the constrained space site by site with :func:`torch.distributions.biject_to`. Non-latent weights
are point estimates stored beside the blocks.

``save``/``load`` write plain tensors, strings and numbers (``torch.load(weights_only=True)``), never
pickled code; a file is written to a temporary name and renamed, so it is never half-written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import biject_to, constraints

from symprior._files import atomic_write
from symprior.groups._group import check_generator
from symprior.nn import RelaxedModule
from symprior.priors._base import legacy_site_renames

__all__ = [
    "Block",
    "DeltaBlock",
    "DiagonalBlock",
    "FullBlock",
    "KroneckerBlock",
    "LowRankBlock",
    "NoEvidenceError",
    "Posterior",
    "SiteInfo",
    "atomic_save",
    "constraint_from_name",
    "constraint_name",
]

FORMAT = "symprior.posterior/1"

#: The ``method`` values of :meth:`Posterior.predict`.
PREDICT_METHODS = ("linearized", "montecarlo")

#: Engines whose posteriors predict with the linearised (GLM) predictive by default: the
#: ``name`` of :class:`~symprior.inference.Laplace`, recorded in ``Posterior.engine`` and saved.
LINEARIZED_ENGINES = frozenset({"laplace"})


class NoEvidenceError(RuntimeError):
    r"""Raised by :meth:`Posterior.log_evidence` for engines that have no evidence estimate."""


# ---------------------------------------------------------------------------------- sites
def constraint_name(c: constraints.Constraint) -> str:
    r"""A string that :func:`constraint_from_name` turns back into ``c``."""
    if c is constraints.real or isinstance(c, type(constraints.real)):
        return "real"
    if c is constraints.positive or c is constraints.nonnegative:
        return "positive"
    if isinstance(c, constraints.greater_than | constraints.greater_than_eq):
        return f"greater_than:{float(c.lower_bound)!r}"
    if isinstance(c, constraints.interval | constraints.half_open_interval):
        return f"interval:{float(c.lower_bound)!r}:{float(c.upper_bound)!r}"
    if isinstance(c, constraints.independent):
        return constraint_name(c.base_constraint)
    raise ValueError(f"unsupported support constraint for a latent site: {c!r}")


def constraint_from_name(name: str) -> constraints.Constraint:
    r"""Inverse of :func:`constraint_name`."""
    if name == "real":
        return constraints.real
    if name == "positive":
        return constraints.positive
    kind, *args = name.split(":")
    if kind == "greater_than":
        return constraints.greater_than(float(args[0]))
    if kind == "interval":
        return constraints.interval(float(args[0]), float(args[1]))
    raise ValueError(f"unknown constraint name {name!r}")


@dataclass(frozen=True)
class SiteInfo:
    r"""A latent site: name, shape and support (by name, see :func:`constraint_name`)."""

    name: str
    shape: tuple[int, ...]
    constraint: str = "real"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_constrained(self, u: Tensor) -> Tensor:
        r"""Map unconstrained values ``(..., numel)`` to the site ``(..., *shape)``."""
        value = biject_to(constraint_from_name(self.constraint))(u)
        return value.reshape((*u.shape[:-1], *self.shape))

    def to_unconstrained(self, value: Tensor) -> Tensor:
        r"""Inverse of :meth:`to_constrained`, flattened to ``(..., numel)``."""
        u = biject_to(constraint_from_name(self.constraint)).inv(value)
        return u.reshape((*u.shape[: u.ndim - len(self.shape)], self.numel))


# --------------------------------------------------------------------------------- blocks
@dataclass
class Block:
    r"""A Gaussian (or point) distribution over the unconstrained values of some sites."""

    names: list[str]
    loc: Tensor

    kind = "block"

    @property
    def dim(self) -> int:
        return int(self.loc.shape[-1])

    def sample(self, num: int, generator: torch.Generator | None) -> Tensor:
        r"""Draws ``(num, dim)`` of the unconstrained vector."""
        raise NotImplementedError

    def covariance(self) -> Tensor:
        r"""The dense ``(dim, dim)`` covariance (for small blocks and tests)."""
        raise NotImplementedError

    def _noise(self, num: int, dim: int, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else self.loc.device
        z = torch.randn(num, dim, generator=generator, dtype=self.loc.dtype, device=device)
        return z.to(self.loc.device)

    def tensors(self) -> dict[str, Tensor]:
        return {"loc": self.loc}


@dataclass
class DeltaBlock(Block):
    r"""A point mass (MAP)."""

    kind = "delta"

    def sample(self, num, generator):
        return self.loc.expand(num, -1).clone()

    def covariance(self):
        return self.loc.new_zeros(self.dim, self.dim)


@dataclass
class DiagonalBlock(Block):
    r""":math:`N(\mathrm{loc}, \mathrm{diag}(\mathrm{scale}^2))`."""

    scale: Tensor = field(default_factory=lambda: torch.zeros(0))
    kind = "diagonal"

    def sample(self, num, generator):
        return self.loc + self._noise(num, self.dim, generator) * self.scale

    def covariance(self):
        return torch.diag(self.scale**2)

    def tensors(self):
        return {"loc": self.loc, "scale": self.scale}


@dataclass
class FullBlock(Block):
    r""":math:`N(\mathrm{loc}, L L^\top)` with lower-triangular ``scale_tril`` ``L``."""

    scale_tril: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    kind = "full"

    def sample(self, num, generator):
        return self.loc + self._noise(num, self.dim, generator) @ self.scale_tril.T

    def covariance(self):
        return self.scale_tril @ self.scale_tril.T

    def tensors(self):
        return {"loc": self.loc, "scale_tril": self.scale_tril}


@dataclass
class LowRankBlock(Block):
    r""":math:`N(\mathrm{loc}, F F^\top + \mathrm{diag}(d))` (``cov_factor`` F, ``cov_diag`` d)."""

    cov_factor: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    cov_diag: Tensor = field(default_factory=lambda: torch.zeros(0))
    kind = "lowrank"

    def sample(self, num, generator):
        rank = self.cov_factor.shape[-1]
        z = self._noise(num, rank + self.dim, generator)
        return self.loc + z[:, :rank] @ self.cov_factor.T + z[:, rank:] * self.cov_diag.sqrt()

    def covariance(self):
        return self.cov_factor @ self.cov_factor.T + torch.diag(self.cov_diag)

    def tensors(self):
        return {"loc": self.loc, "cov_factor": self.cov_factor, "cov_diag": self.cov_diag}


@dataclass
class KroneckerBlock(Block):
    r"""Covariance :math:`L_A L_A^\top \otimes L_G L_G^\top` over a row-major ``(p, q)`` matrix.

    The block's vector is ``W.reshape(-1)`` of a ``(p, q)`` matrix ``W`` with
    :math:`\mathrm{Cov}(W) = \Sigma_A \otimes \Sigma_G` in row-major vec (KFAC, Martens & Grosse
    2015; Ritter et al. 2018): ``W = loc + L_A Z L_G^T`` with standard normal ``Z``.
    """

    tril_a: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    tril_g: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    kind = "kronecker"

    def sample(self, num, generator):
        p, q = self.tril_a.shape[0], self.tril_g.shape[0]
        z = self._noise(num, p * q, generator).reshape(num, p, q)
        return self.loc + (self.tril_a @ z @ self.tril_g.T).reshape(num, p * q)

    def covariance(self):
        return torch.kron(self.tril_a @ self.tril_a.T, self.tril_g @ self.tril_g.T)

    def tensors(self):
        return {"loc": self.loc, "tril_a": self.tril_a, "tril_g": self.tril_g}


_BLOCKS: dict[str, type[Block]] = {
    cls.kind: cls for cls in (DeltaBlock, DiagonalBlock, FullBlock, LowRankBlock, KroneckerBlock)
}


# ------------------------------------------------------------------------------ posterior
def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    r"""``torch.save`` to ``path`` atomically (:func:`~symprior._files.atomic_write`)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


class Posterior:
    r"""The approximate posterior over a :class:`~symprior.models.SymmetryModel`'s latent sites.

    Parameters
    ----------
    sites : sequence of SiteInfo
        The latent sites in order.
    blocks : sequence of Block
        Distributions over consecutive runs of sites (unconstrained coordinates).
    point : mapping from str to Tensor
        Point estimates of the non-latent parameters (network weights, learned noise).
    engine : str
        The engine that produced it (``"map"``, ``"svi"``, ``"laplace"``).
    info : mapping
        Engine facts saved along (numbers and strings only), e.g. ``log_evidence``.
    model : SymmetryModel, optional
        Needed by :meth:`predict` and :meth:`equivariance_levels`; attach later with
        :meth:`attach` after :meth:`load`.
    """

    def __init__(
        self,
        sites: Sequence[SiteInfo],
        blocks: Sequence[Block],
        point: Mapping[str, Tensor],
        *,
        engine: str,
        info: Mapping[str, Any] | None = None,
        model: Any = None,
    ) -> None:
        self.sites = list(sites)
        self.blocks = list(blocks)
        self.point = {k: v.detach() for k, v in point.items()}
        self.engine = engine
        self.info = dict(info or {})
        self.model = model
        covered = [n for b in self.blocks for n in b.names]
        if covered != [s.name for s in self.sites]:
            raise ValueError(
                f"blocks must cover the sites in order: sites {[s.name for s in self.sites]}, "
                f"blocks {covered}"
            )
        self._site = {s.name: s for s in self.sites}

    # ------------------------------------------------------------------------ sampling
    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def _split(self, block: Block, u: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for name in block.names:
            site = self._site[name]
            out[name] = site.to_constrained(u[..., i : i + site.numel])
            i += site.numel
        return out

    def sample(
        self, num_samples: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        r"""Draws of every latent site, ``{name: (num_samples, *shape)}``, in constrained space."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        check_generator(generator)
        out: dict[str, Tensor] = {}
        for block in self.blocks:
            out.update(self._split(block, block.sample(num_samples, generator)))
        return out

    def mean(self) -> dict[str, Tensor]:
        r"""The location of every latent site mapped to the constrained space.

        For sites with real support this is the posterior mean; for positive sites of a
        Gaussian in log space it is the posterior median.
        """
        out: dict[str, Tensor] = {}
        for block in self.blocks:
            out.update(self._split(block, block.loc))
        return out

    def covariance(self) -> Tensor:
        r"""The dense block-diagonal covariance of the unconstrained latent vector."""
        return torch.block_diag(*[b.covariance() for b in self.blocks])

    def loc(self) -> Tensor:
        r"""The unconstrained latent location vector (site order)."""
        return torch.cat([b.loc for b in self.blocks]) if self.blocks else torch.zeros(0)

    # ------------------------------------------------------------------- model-based views
    def attach(self, model: Any) -> Posterior:
        r"""Attach the :class:`~symprior.models.SymmetryModel` (after :meth:`load`); returns self."""
        from symprior.models import SymmetryModel

        if not isinstance(model, SymmetryModel):
            raise TypeError(f"model must be a SymmetryModel, got {type(model).__name__}")
        missing = [n for n in self.site_names if n not in _model_sites(model)]
        if missing:
            raise ValueError(f"the model has no latent sites named {missing}")
        self.model = model
        return self

    def _need_model(self) -> Any:
        if self.model is None:
            raise RuntimeError(
                "this posterior has no model attached; call posterior.attach(model) first"
            )
        return self.model

    def draw_values(self, draws: Mapping[str, Tensor], i: int) -> dict[str, Tensor]:
        r"""The network's parameters for draw ``i`` of ``draws`` (from :meth:`sample`): the point
        weights, then the draw's latent sites that are network parameters, on the network's
        device. Hyperparameter sites (a random prior scale, a random noise scale) are left out:
        they are not the network's, and a network attribute of the same name must not be
        replaced by them."""
        model = self._need_model()
        own = dict(model.network.named_parameters())
        device = next(iter(own.values())).device
        values = {k: v.to(device) for k, v in self.point.items() if k in _point_names(model)}
        values.update({k: v[i].to(device) for k, v in draws.items() if k in own})
        return values

    def predict(
        self,
        x: Tensor,
        num_samples: int = 100,
        generator: torch.Generator | None = None,
        *,
        return_samples: bool = False,
        method: str | None = None,
    ) -> Tensor:
        r"""Posterior predictive mean of ``y`` at ``x`` (the output for a Gaussian likelihood,
        class probabilities for a Categorical).

        Parameters
        ----------
        x : Tensor
            Inputs ``(N, ...)``.
        num_samples : int
            Draws: of the parameters with ``method="montecarlo"`` (a point posterior uses
            one); of the logits with ``"linearized"`` and a Categorical likelihood (a Gaussian
            one needs none).
        generator : torch.Generator, optional
            Source of those draws.
        return_samples : bool
            Return the per-draw predictions ``(num_samples, N, ...)`` of ``"montecarlo"``
            instead of their mean.
        method : {None, "linearized", "montecarlo"}
            ``"montecarlo"`` averages the likelihood's predictive mean over ``num_samples``
            draws of the parameters. ``"linearized"`` is the GLM predictive of the network
            linearised at the posterior location, :math:`f(x,\theta) \approx f(x,\theta^*) +
            J(\theta-\theta^*)`, whose output is Gaussian with mean :math:`f(x, \theta^*)` and
            covariance :math:`J \Sigma J^\top` (Immer, Korzepa & Bauer 2021; moments from
            :func:`symprior.inference.linearized_predict`): the mean is exactly
            :math:`f(x, \theta^*)` for a Gaussian likelihood, and for a Categorical the
            softmax averaged over ``num_samples`` draws of the logits from that Gaussian
            (:func:`~symprior.inference._laplace.linearized_predictive_mean`). ``None``
            (default): ``"linearized"`` for posteriors of the Laplace engine unless
            ``return_samples=True``, else ``"montecarlo"``. A Laplace Gaussian is local: where
            the curvature is small or was floored, its weight-space draws reach networks far
            from the fitted one and their average predicts badly, while the linearised
            predictive keeps the fitted network's mean (laplace-torch's default too).
        """
        if method is not None and method not in PREDICT_METHODS:
            raise ValueError(f"method must be None, 'linearized' or 'montecarlo', got {method!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        check_generator(generator)
        if method is None:
            linear = self.engine in LINEARIZED_ENGINES and not return_samples
            method = "linearized" if linear else "montecarlo"
        if method == "linearized":
            if return_samples:
                raise ValueError(
                    "return_samples=True needs method='montecarlo': the linearized predictive "
                    "returns a mean, not per-draw network predictions"
                )
            from symprior.inference._laplace import linearized_predictive_mean

            return linearized_predictive_mean(self, x, num_samples, generator)
        model = self._need_model()
        if not self.blocks or all(isinstance(b, DeltaBlock) for b in self.blocks):
            num_samples = 1
        draws = self.sample(num_samples, generator) if self.sites else {}
        likelihood = model.likelihood_list[0]
        outs = []
        with torch.no_grad(), evaluation(model.network):
            for i in range(num_samples):
                out = model.run(self.draw_values(draws, i), x)
                outs.append(likelihood.predictive_mean(out))
        stacked = torch.stack(outs)
        return stacked if return_samples else stacked.mean(0)

    def equivariance_levels(
        self, num_samples: int = 100, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        r"""Posterior draws ``(num_samples,)`` of every relaxed layer's equivariance level.

        Keys are the layers' module names (see :func:`symprior.nn.equivariance_levels`).
        """
        model = self._need_model()
        if all(isinstance(b, DeltaBlock) for b in self.blocks):
            num_samples = 1
        draws = self.sample(num_samples, generator) if self.sites else {}
        net = model.network
        levels: dict[str, list[Tensor]] = {}
        for i in range(num_samples):
            with substituted(net, self.draw_values(draws, i)):
                for name, module in net.named_modules():
                    if isinstance(module, RelaxedModule):
                        level = module.equivariance_level().detach()
                        levels.setdefault(name or type(net).__name__, []).append(level)
        return {k: torch.stack(v) for k, v in levels.items()}

    def log_evidence(self) -> Tensor:
        r"""The log marginal likelihood (Laplace); other engines raise :class:`NoEvidenceError`."""
        value = self.info.get("log_evidence")
        if value is None:
            raise NoEvidenceError(
                f"the {self.engine!r} engine gives no log evidence; fit with engine='laplace'"
            )
        return torch.tensor(value, dtype=torch.float64)

    def to_arviz(self, **kwargs: Any) -> Any:
        r"""ArviZ ``InferenceData`` of this posterior (see :func:`symprior.diagnostics.to_arviz`)."""
        from symprior.diagnostics import to_arviz

        return to_arviz(self, **kwargs)

    # ---------------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        r"""Plain tensors, strings and numbers describing the posterior."""
        return {
            "format": FORMAT,
            "engine": self.engine,
            "sites": [
                {"name": s.name, "shape": list(s.shape), "constraint": s.constraint}
                for s in self.sites
            ],
            "blocks": [
                {
                    "kind": b.kind,
                    "names": list(b.names),
                    **{k: v.detach().cpu() for k, v in b.tensors().items()},
                }
                for b in self.blocks
            ],
            "point": {k: v.detach().cpu() for k, v in self.point.items()},
            "info": dict(self.info),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        r"""Write the posterior to ``path`` atomically (tensors only, no pickled code)."""
        atomic_save(self.state(), path)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], model: Any = None) -> Posterior:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a symprior posterior file (format {state.get('format')!r})")
        # Files written before per-parameter hyperparameter sites were named "<param>:<site>".
        renames = legacy_site_renames({s["name"]: s["shape"] for s in state["sites"]})
        sites = [
            SiteInfo(renames.get(s["name"], s["name"]), tuple(s["shape"]), s["constraint"])
            for s in state["sites"]
        ]
        blocks = []
        for b in state["blocks"]:
            kind = b["kind"]
            if kind not in _BLOCKS:
                # Blocks of the Laplace engine register themselves when it is imported.
                import symprior.inference._curvature  # noqa: F401
            if kind not in _BLOCKS:
                raise ValueError(f"unknown posterior block kind {kind!r}")
            fields = {k: v for k, v in b.items() if k != "kind"}
            fields["names"] = [renames.get(n, n) for n in fields["names"]]
            blocks.append(_BLOCKS[kind](**fields))
        info = {_renamed_info_key(k, renames): v for k, v in state["info"].items()}
        post = cls(sites, blocks, state["point"], engine=state["engine"], info=info)
        if model is not None:
            post.attach(model)
        return post

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None) -> Posterior:
        r"""Read a posterior written by :meth:`save` (``weights_only`` loading).

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is
        not a posterior (not a torch file, or one that holds something else)."""
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # unpickling, zip and EOF errors of a foreign or damaged file
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path} is not a symprior posterior file ({reason})") from err
        if not isinstance(state, Mapping):
            raise ValueError(
                f"{path} is not a symprior posterior file (it holds a {type(state).__name__})"
            )
        return cls.from_state(state, model)

    def to(self, device: torch.device | str) -> Posterior:
        r"""Move every tensor to ``device`` (returns a new posterior sharing the model)."""
        state = self.state()
        post = Posterior.from_state(state, None)
        for b in post.blocks:
            for k, v in b.tensors().items():
                setattr(b, k, v.to(device))
        post.point = {k: v.to(device) for k, v in post.point.items()}
        post.model = self.model
        return post

    def __repr__(self) -> str:
        kinds = ", ".join(f"{b.kind}[{b.dim}]" for b in self.blocks)
        return f"Posterior(engine={self.engine!r}, sites={len(self.sites)}, blocks=[{kinds}])"


def _renamed_info_key(key: str, renames: Mapping[str, str]) -> str:
    r"""An ``info`` key about a site (``"curvature.<site>"``) with the site's current name."""
    kind, dot, site = key.partition(".")
    return f"{kind}.{renames[site]}" if dot and site in renames else key


def _model_sites(model: Any) -> list[str]:
    names = model.site_names()
    return (
        names["relaxations"]
        + names["hyperparameters"]
        + names["weights"]
        + ["noise_scale", "symmetry_precision"]
    )


def _point_names(model: Any) -> set[str]:
    return set(model.point_names)


@contextmanager
def evaluation(net: nn.Module) -> Iterator[nn.Module]:
    r"""Run ``net`` in eval mode (fixed rotation grids, batch-norm statistics), then restore."""
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        yield net
    finally:
        for m, mode in modes.items():
            m.train(mode)


@contextmanager
def substituted(net: nn.Module, values: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    r"""Temporarily copy ``values`` into the matching parameters of ``net`` (restored after)."""
    params = dict(net.named_parameters())
    saved = {k: params[k].detach().clone() for k in values if k in params}
    try:
        with torch.no_grad():
            for k in saved:
                params[k].copy_(values[k])
            _notify(net)
        yield net
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)
            _notify(net)


def _notify(net: nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, RelaxedModule):
            module._relaxation_changed()
