r"""Posterior draws as network parameters: the shared machinery of the ArviZ export and metrics.

A :class:`~symprior.inference.Posterior` holds distributions over latent sites and point estimates
of the other weights. Every diagnostic evaluates the network once per posterior draw with the
draw's latent values and the point estimates; this module does that in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from symprior.groups._group import check_generator
from symprior.inference import DeltaBlock, Posterior

__all__ = [
    "check_data",
    "check_generator",
    "check_num_samples",
    "check_posterior",
    "draw_values",
    "is_point",
    "network_device",
    "num_draws",
    "posterior_draws",
]


def check_posterior(posterior: Any, name: str = "posterior") -> Posterior:
    r"""``posterior`` if it is a Posterior with a model attached, else a clear error."""
    if not isinstance(posterior, Posterior):
        raise TypeError(
            f"{name} must be a symprior.inference.Posterior, got {type(posterior).__name__}"
        )
    if posterior.model is None:
        raise ValueError(
            f"{name} has no model attached; call {name}.attach(model) after Posterior.load"
        )
    return posterior


def check_num_samples(num_samples: Any, name: str = "num_samples") -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{name} must be an int >= 1, got {num_samples!r}")
    return num_samples


def check_data(data: Any, name: str = "data") -> tuple[Tensor, Tensor]:
    r"""``(x, y)`` tensors with the same leading (data) axis."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (x, y) of tensors, got {type(data).__name__}")
    x, y = data
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"{name} must be a pair (x, y) of tensors, got ({type(x).__name__}, {type(y).__name__})"
        )
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: x and y need the same leading (data) axis, got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    return x, y


def is_point(posterior: Posterior) -> bool:
    r"""Whether every block is a point mass (MAP, an SVI delta guide, or no latent site)."""
    return all(isinstance(b, DeltaBlock) for b in posterior.blocks)


def network_device(posterior: Posterior) -> torch.device:
    param = next(iter(posterior.model.network.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def posterior_draws(
    posterior: Posterior, num_samples: int, generator: torch.Generator | None
) -> dict[str, Tensor]:
    r"""Draws ``{site: (S, *shape)}`` of every latent site; ``S = 1`` for a point posterior."""
    if not posterior.sites:
        return {}
    num = 1 if is_point(posterior) else num_samples
    return {k: v.detach() for k, v in posterior.sample(num, generator).items()}


def num_draws(posterior: Posterior, draws: Mapping[str, Tensor], num_samples: int) -> int:
    if draws:
        return int(next(iter(draws.values())).shape[0])
    return 1 if is_point(posterior) else num_samples


def draw_values(posterior: Posterior, draws: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
    r"""Network parameters of draw ``index``: the point weights, then the draw's latent sites."""
    return posterior.draw_values(draws, index)
