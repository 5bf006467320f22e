r"""Prior predictive of symmetry: how equivariant are networks drawn from the prior?"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from torch import Tensor

from symprior.diagnostics import equivariance_error, equivariance_error_pointwise
from symprior.groups import Group
from symprior.models._model import SymmetryModel
from symprior.nn.remul import Action

__all__ = ["PriorSymmetry", "prior_predictive_symmetry"]


@dataclass(frozen=True)
class PriorSymmetry:
    r"""Draws of the equivariance error under the prior.

    Attributes
    ----------
    errors : Tensor
        ``(num_draws,)`` values of E (001 eq. 12) or E' (eq. 13), one per prior draw.
    samples : dict[str, Tensor]
        The latent draws (relaxation parameters and hyperparameters), leading axis = draw.
    """

    errors: Tensor
    samples: dict[str, Tensor]

    def quantiles(self, q: tuple[float, ...] = (0.03, 0.5, 0.97)) -> Tensor:
        r"""Quantiles of the error distribution (default: a 94% interval and the median)."""
        return torch.quantile(self.errors, torch.tensor(q, dtype=self.errors.dtype))


def prior_predictive_symmetry(
    model: SymmetryModel,
    x: Tensor,
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    num_draws: int = 100,
    num_elements: int = 100,
    pointwise: bool = False,
    seed: int = 0,
) -> PriorSymmetry:
    r"""Sample relaxation parameters from the prior and measure the network's equivariance error.

    For each of ``num_draws`` prior draws (relaxation parameters, their hyperparameters and, with
    a ``weight_prior``, the weights), the network is run with those values and its error E of
    001 eq. 12 (E' of eq. 13 with ``pointwise=True``) on ``x`` is computed with ``num_elements``
    group elements. Use it to calibrate priors: a prior whose draws are all far from equivariant
    (or all exactly equivariant) says something the data then have to overturn.

    Randomness is seeded by ``seed`` inside a forked RNG; the global RNG state is untouched.
    """
    if not isinstance(model, SymmetryModel):
        raise TypeError(f"model must be a SymmetryModel, got {type(model).__name__}")
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be an int >= 1, got {num_draws!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    metric = equivariance_error_pointwise if pointwise else equivariance_error
    errors = []
    draws: dict[str, list[Tensor]] = {}
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        for _ in range(num_draws):
            trace = pyro.poutine.trace(model.sample_parameters).get_trace()
            values = trace.nodes["_RETURN"]["value"]
            assert isinstance(values, dict)

            def f(z: Tensor, v: dict[str, Tensor] = values) -> Tensor:
                return model.run(v, z)

            with torch.no_grad():
                e = metric(
                    f,
                    x,
                    group,
                    rep_in,
                    rep_out,
                    num_samples=num_elements,
                    generator=generator,
                )
            errors.append(e)
            for name, site in trace.nodes.items():
                if site["type"] == "sample" and not site["is_observed"]:
                    value = site["value"]
                    assert isinstance(value, Tensor)
                    draws.setdefault(name, []).append(value.detach())
    return PriorSymmetry(torch.stack(errors), {name: torch.stack(v) for name, v in draws.items()})
