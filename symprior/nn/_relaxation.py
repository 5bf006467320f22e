r"""The relaxation registry shared by every family of relaxed layers.

A relaxed layer is a plain :class:`torch.nn.Module` that also says which of its parameters relax
equivariance (:meth:`RelaxedModule.relaxations`), where they make the layer exactly equivariant
(:class:`Relaxation.strict_value`) and how far it is from that point
(:meth:`RelaxedModule.equivariance_level`). Priors and the Pyro model read nothing else, so one
registry serves all families.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "FAMILIES",
    "Relaxation",
    "RelaxedModule",
    "equivariance_levels",
    "relaxation_parameters",
    "set_strict",
]

#: The relaxation families, named as the modules of ``symprior.nn`` and ``symprior.priors``.
FAMILIES = ("rpp", "nonstationary", "lie_algebra", "power", "remul")


@dataclass(frozen=True)
class Relaxation:
    r"""What one relaxation parameter is.

    Attributes
    ----------
    family : str
        One of :data:`FAMILIES`.
    role : str
        What the parameter is within its family (``"residual"``, ``"omega_prime"``,
        ``"width"``, ``"residual_network"``, ``"magnitude"``, ...); priors are chosen by
        ``(family, role)``.
    strict_value : float or Tensor
        The value at which the layer is exactly equivariant (broadcast to the parameter).
    """

    family: str
    role: str
    strict_value: float | Tensor = 0.0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")


class RelaxedModule(nn.Module):
    r"""Base class of relaxed layers: a module with a relaxation registry.

    Subclasses implement :meth:`relaxations` and :meth:`equivariance_level`; :meth:`set_strict`
    is derived from :meth:`relaxations`.
    """

    def relaxations(self) -> dict[str, Relaxation]:
        r"""Map from parameter names (as in ``named_parameters()`` of this module) to records."""
        raise NotImplementedError

    def equivariance_level(self) -> Tensor:
        r"""A scalar :math:`\ge 0`, zero exactly at the strict setting (defined per family)."""
        raise NotImplementedError

    @torch.no_grad()
    def set_strict(self) -> None:
        r"""Put every relaxation parameter at its strict value."""
        for name, rel in self.relaxations().items():
            param = self.get_parameter(name)
            value = rel.strict_value
            if isinstance(value, Tensor):
                param.copy_(value.to(param).expand_as(param))
            else:
                param.fill_(value)
        self._relaxation_changed()

    def _relaxation_changed(self) -> None:
        """Hook for layers that cache quantities derived from relaxation parameters."""


def _check_net(net: object) -> None:
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")


def relaxation_parameters(net: nn.Module) -> Iterator[tuple[str, nn.Parameter, Relaxation]]:
    r"""Yield ``(qualified_name, parameter, relaxation)`` for every relaxation parameter of ``net``.

    Qualified names are those of ``net.named_parameters()``; a parameter shared between layers is
    yielded once, under its first name.

    Examples
    --------
    >>> from symprior.groups import SO2, V
    >>> from symprior.nn import RPPLinear
    >>> [name for name, _, _ in relaxation_parameters(RPPLinear(V(SO2()), V(SO2())))]
    ['residual', 'bias_residual']
    """
    _check_net(net)
    seen: set[int] = set()
    for prefix, module in net.named_modules():
        if not isinstance(module, RelaxedModule):
            continue
        for name, rel in module.relaxations().items():
            param = module.get_parameter(name)
            if id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{prefix}.{name}" if prefix else name), param, rel


def set_strict(net: nn.Module) -> nn.Module:
    r"""Call :meth:`RelaxedModule.set_strict` on every relaxed layer of ``net``; return ``net``."""
    _check_net(net)
    for module in net.modules():
        if isinstance(module, RelaxedModule):
            module.set_strict()
    return net


def equivariance_levels(net: nn.Module) -> dict[str, Tensor]:
    r"""The equivariance level of every relaxed layer of ``net``, keyed by module name."""
    _check_net(net)
    return {
        name or type(net).__name__: module.equivariance_level()
        for name, module in net.named_modules()
        if isinstance(module, RelaxedModule)
    }
