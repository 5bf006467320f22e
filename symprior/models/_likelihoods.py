r"""Likelihoods of a :class:`~symprior.models.SymmetryModel`.

A likelihood is a :class:`pyro.nn.PyroModule` called inside the data plate as
``likelihood(output, y, fn=fn, x=x)``: ``output = fn(x)`` is the network's output on the
(sub)batch, ``fn`` runs the network with the sampled parameters (the REMUL symmetry likelihood
needs it on transformed inputs). Sites: ``"obs"`` (data), ``"noise_scale"`` (a learned Gaussian
noise), ``"symmetry"`` and ``"symmetry_precision"`` (REMUL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin as PyroDistribution
from pyro.nn import PyroModule
from torch import Tensor

from symprior.groups import Group
from symprior.nn.remul import Action, _act, _check_action, _check_group, _elements_for
from symprior.priors._base import Hyperparameter

__all__ = ["Categorical", "Gaussian", "Likelihood", "SymmetryLikelihood"]


class Likelihood(PyroModule):
    r"""Base class: observe ``y`` given the network output, inside the data plate.

    :meth:`global_sites` is called once per model call *outside* the plate (noise scales,
    precisions); its result is passed to :meth:`forward` as ``sites``.
    """

    def global_sites(self, like: Tensor) -> dict[str, Tensor]:
        r"""Sample or read the likelihood's global sites (dtype and device of ``like``)."""
        return {}

    def forward(
        self,
        output: Tensor,
        y: Tensor | None,
        *,
        fn: Callable[[Tensor], Tensor],
        x: Tensor,
        sites: dict[str, Tensor],
    ) -> Tensor | None:
        raise NotImplementedError

    def predictive_mean(self, output: Tensor) -> Tensor:
        r"""The mean of ``y`` given the network output (used by posterior predictions)."""
        return output

    def check_observations(self, output: Tensor, y: Tensor) -> None:
        r"""Raise a clear error if ``y`` cannot be observations of ``output`` (shape and dtype
        only: free, no values read). Without it a mismatched ``y`` broadcasts against the
        output and gives a silently wrong likelihood. The model calls it before each likelihood
        (traced model and direct log joint alike)."""

    def check_values(self, output: Tensor, y: Tensor) -> None:
        r"""Raise a clear error if the values of the whole of ``y`` cannot be observations of
        outputs like ``output`` (the network's output on one batch). The engines call it once
        per fit: it reads values (a reduction, and on a GPU a wait for it)."""


def _event(d: PyroDistribution, output: Tensor) -> PyroDistribution:
    """Make every axis after the batch an event axis."""
    extra = output.ndim - 1 - len(d.event_shape)
    return d.to_event(extra) if extra > 0 else d


class Gaussian(Likelihood):
    r"""Gaussian observations :math:`y \sim N(f(x), \sigma^2)`.

    Parameters
    ----------
    scale : float, Distribution or None
        A number: fixed noise :math:`\sigma`. ``None``: :math:`\sigma` is learned as a point
        estimate (param site ``"noise_scale"``, initialised at ``init_scale``). A distribution with
        positive support: :math:`\sigma` is random with that prior (sample site ``"noise_scale"``).
    init_scale : float
        Initial value of a learned noise.
    """

    def __init__(self, scale: Any = None, *, init_scale: float = 1.0) -> None:
        super().__init__()
        self.learned = scale is None
        self.hyper = (
            None if scale is None else Hyperparameter(scale, "scale", site_name="noise_scale")
        )
        if not (isinstance(init_scale, int | float) and init_scale > 0):
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        self.init_scale = float(init_scale)

    def global_sites(self, like: Tensor) -> dict[str, Tensor]:
        r"""The noise :math:`\sigma` of this model call (a param or sample site when not fixed)."""
        if self.hyper is None:
            scale = pyro.param(
                "noise_scale",
                lambda: torch.tensor(self.init_scale, dtype=like.dtype, device=like.device),
                constraint=dist.constraints.positive,
            )
        else:
            scale = self.hyper.resolve("noise_scale", None, dtype=like.dtype, device=like.device)
        return {"noise_scale": scale}

    def check_observations(self, output: Tensor, y: Tensor) -> None:
        if y.shape != output.shape:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but the network's output has shape "
                f"{tuple(output.shape)}: a Gaussian likelihood observes one value per output "
                f"entry, so reshape y to the output's shape"
            )

    def forward(self, output, y, *, fn, x, sites):
        scale = sites["noise_scale"]
        d = _event(dist.Normal(output, scale.expand_as(output)), output)
        return pyro.sample("obs", d, obs=y)

    def __repr__(self) -> str:
        what = "learned" if self.learned else repr(self.hyper.value if self.hyper else None)
        return f"Gaussian(scale={what})"


def _are_labels(y: Tensor) -> bool:
    """Whether ``y``'s dtype can hold class labels (an integer type, not bool)."""
    return not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)


class Categorical(Likelihood):
    r"""Class labels :math:`y \sim \mathrm{Categorical}(\mathrm{softmax}(f(x)))` (logits last)."""

    def check_observations(self, output: Tensor, y: Tensor) -> None:
        if not _are_labels(y):
            raise TypeError(
                f"y must hold integer class labels for a Categorical likelihood, got {y.dtype}"
            )
        if y.shape != output.shape[:-1]:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but the network's output (logits) has shape "
                f"{tuple(output.shape)}: a Categorical likelihood observes one label per row of "
                f"logits, y of shape {tuple(output.shape[:-1])}"
            )

    def check_values(self, output: Tensor, y: Tensor) -> None:
        if not _are_labels(y) or not y.numel():
            return  # check_observations reports the dtype
        classes = output.shape[-1]
        low, high = (int(v) for v in torch.aminmax(y))
        if low < 0 or high >= classes:
            raise ValueError(
                f"y holds labels from {low} to {high}, but the network has {classes} outputs "
                f"(logits): a Categorical likelihood needs labels 0 to {classes - 1}"
            )

    def forward(self, output, y, *, fn, x, sites):
        d = dist.Categorical(logits=output)
        extra = output.ndim - 2
        return pyro.sample("obs", d.to_event(extra) if extra > 0 else d, obs=y)

    def predictive_mean(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=-1)


class SymmetryLikelihood(Likelihood):
    r"""REMUL's equivariance task as a likelihood (001 eq. 5-8).

    For ``num_samples`` fresh group elements :math:`g` per data point,
    :math:`f(\rho_{in}(g)x)` is observed around :math:`\rho_{out}(g)f(x)` with Gaussian precision
    :math:`\beta` (site ``"symmetry"``):

    .. math::

        \log p = -\frac{\beta}{2}\|f(\rho_{in}(g)x) - \rho_{out}(g)f(x)\|^2
                 + \frac{k}{2}\log\frac{\beta}{2\pi},

    with ``k`` entries per output. The normalising constant makes :math:`\beta` learnable: under
    MAP with a Gamma prior its mode is finite, and a larger :math:`\beta` pulls :math:`f`
    towards equivariance exactly as REMUL's weight on :math:`\mathcal{L}_{equi}` does.

    Parameters
    ----------
    group : Group
    rep_in, rep_out : Rep or callable
        Actions on inputs and outputs (contract of :mod:`symprior.nn.remul`).
    beta : float or Distribution
        A fixed precision, or a prior (sample site ``"symmetry_precision"``), e.g.
        ``PrecisionPrior`` or ``dist.Gamma(1., .1)``.
    num_samples : int
        Group elements per data point and model call.
    """

    def __init__(
        self,
        group: Group,
        rep_in: Action,
        rep_out: Action,
        *,
        beta: Any = 1.0,
        num_samples: int = 1,
    ) -> None:
        super().__init__()
        self.group = _check_group(group)
        self.rep_in = _check_action(rep_in, "rep_in", self.group)
        self.rep_out = _check_action(rep_out, "rep_out", self.group)
        from symprior.priors.remul import PrecisionPrior

        if isinstance(beta, PrecisionPrior):
            beta = dist.Gamma(beta.concentration, beta.rate)
        self.beta = Hyperparameter(beta, "beta", site_name="symmetry_precision")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        self.num_samples = num_samples

    def global_sites(self, like: Tensor) -> dict[str, Tensor]:
        beta = self.beta.resolve("symmetry_precision", None, dtype=like.dtype, device=like.device)
        return {"symmetry_precision": beta}

    def forward(self, output, y, *, fn, x, sites):
        beta = sites["symmetry_precision"]
        g = _elements_for(
            self.group,
            x.shape[0],
            x.device,
            num_samples=self.num_samples,
            generator=None,
            elements=None,
        )
        m, b = g.shape[:2]
        gx = _act(self.rep_in, g, x)
        lhs = fn(gx.reshape(m * b, *gx.shape[2:])).reshape(m, b, *output.shape[1:])
        rhs = _act(self.rep_out, g, output)
        # (m, B, ...) -> (B, m, ...): the data plate is the leading batch axis of each site.
        lhs, rhs = lhs.transpose(0, 1), rhs.transpose(0, 1)
        d = dist.Normal(rhs, (1.0 / beta.sqrt()).expand_as(rhs)).to_event(rhs.ndim - 1)
        return pyro.sample("symmetry", d, obs=lhs)

    def __repr__(self) -> str:
        return f"SymmetryLikelihood({self.group!r}, {self.beta!r}, num_samples={self.num_samples})"
