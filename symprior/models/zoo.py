r"""Ready-made networks, one per relaxation family (DESIGN.md "models.zoo").

Each builder takes plain numbers and strings (so a TOML/YAML config can name it) and returns a
plain :class:`torch.nn.Module` whose relaxed layers feed :class:`~symprior.models.SymmetryModel`.
:data:`ZOO` maps names to builders.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from symprior.groups import (
    O2,
    O3,
    SE2,
    SL2,
    SO2,
    SO3,
    Affine2,
    Cyclic,
    Dihedral,
    Group,
    Permutation,
    Rep,
    Scalar,
    Scaling,
    Translation,
    V,
)
from symprior.nn import RPPMLP, LieAlgebraConv
from symprior.nn.nonstationary import (
    NonStationaryGroupConv,
    NonStationaryLifting,
    sample_grid_offset,
)
from symprior.nn.power import PowerNet, image_generators

__all__ = [
    "ZOO",
    "SoftSE2CNN",
    "TensorSquare",
    "lie_algebra_cnn",
    "make_group",
    "parse_rep",
    "power_net",
    "rpp_mlp",
    "soft_se2_cnn",
    "unconstrained_mlp",
]

_GROUPS: dict[str, Callable[..., Group]] = {
    "SO2": SO2,
    "O2": O2,
    "SO3": SO3,
    "O3": O3,
    "SE2": SE2,
    "SL2": SL2,
    "Affine2": Affine2,
    "Translation": Translation,
    "Scaling": Scaling,
    "Cyclic": Cyclic,
    "Dihedral": Dihedral,
    "Permutation": Permutation,
}


def make_group(spec: str) -> Group:
    r"""A group from a name such as ``"SO3"``, ``"Cyclic(4)"`` or ``"Translation(2)"``."""
    if not isinstance(spec, str):
        raise TypeError(f"a group is named by a string such as 'SO2', got {type(spec).__name__}")
    match = re.fullmatch(r"\s*(\w+)\s*(?:\(\s*(\d+)\s*\))?\s*", spec)
    if not match or match.group(1) not in _GROUPS:
        raise ValueError(f"unknown group {spec!r}; known: {sorted(_GROUPS)} (e.g. 'Cyclic(4)')")
    name, arg = match.group(1), match.group(2)
    return _GROUPS[name](int(arg)) if arg is not None else _GROUPS[name]()


def parse_rep(spec: str, group: Group) -> Rep:
    r"""A representation from a string: ``"V"``, ``"Scalar"``, ``"2V + 3Scalar"``, ``"V*V"``.

    Terms are joined by ``+``; a term is an optional multiplicity followed by factors joined by
    ``*``; factors are ``V``, ``V.T`` and ``Scalar`` (or ``S``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a representation is a string such as '2V + Scalar', got {spec!r}")
    total: Rep | None = None
    for term in spec.split("+"):
        match = re.fullmatch(r"\s*(\d*)\s*\*?\s*(.+?)\s*", term)
        if not match:
            raise ValueError(f"cannot read the representation term {term!r} in {spec!r}")
        mult = int(match.group(1)) if match.group(1) else 1
        rep: Rep | None = None
        for factor in match.group(2).split("*"):
            factor = factor.strip()
            base: Rep
            if factor == "V":
                base = V(group)
            elif factor in ("V.T", "V*"):
                base = V(group).T
            elif factor in ("Scalar", "S"):
                base = Scalar(group)
            else:
                raise ValueError(f"unknown representation factor {factor!r} in {spec!r}")
            rep = base if rep is None else rep * base
        assert rep is not None
        rep = mult * rep if mult != 1 else rep
        total = rep if total is None else total + rep
    assert total is not None
    return total


class TensorSquare(nn.Module):
    r"""The equivariant quadratic feature map :math:`x \mapsto x \oplus (x \otimes x)`.

    Maps ``(..., rep.size)`` to ``(..., rep.size + rep.size**2)`` in the layout of
    ``rep + rep * rep``. Linear equivariant layers alone cannot build invariants of a vector
    (for SO(2) there is no equivariant map V -> Scalar); after this map the next layer can (the
    dot product lives in V ⊗ V -> Scalar). It plays the role of EMLP's bilinear layer.
    """

    def forward(self, x: Tensor) -> Tensor:
        square = (x[..., :, None] * x[..., None, :]).flatten(-2)
        return torch.cat([x, square], dim=-1)


def rpp_mlp(
    group: str = "SO2",
    rep_in: str = "V",
    rep_out: str = "Scalar",
    hidden: int | str = 32,
    depth: int = 2,
    residual_scale: float = 1e-3,
    quadratic: bool = True,
) -> nn.Module:
    r"""A residual-pathway MLP (Finzi et al. 2021) between representations given as strings.

    With ``quadratic=True`` the input first goes through :class:`TensorSquare`, so the network
    can form invariants such as :math:`\|x\|^2` at its strict setting.
    """
    G = make_group(group)
    hidden_rep: int | Rep = parse_rep(hidden, G) if isinstance(hidden, str) else hidden
    first = parse_rep(rep_in, G)
    mlp = RPPMLP(
        first + first * first if quadratic else first,
        parse_rep(rep_out, G),
        hidden_rep,
        depth,
        residual_scale=residual_scale,
    )
    if not quadratic:
        return mlp
    return nn.Sequential(OrderedDict(square=TensorSquare(), mlp=mlp))


class _Pool(nn.Module):
    """Mean over every axis after the channels: (B, C, ...) -> (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(-1)


class SoftSE2CNN(nn.Module):
    r"""A soft SE(2) CNN (004): non-stationary lifting, group convolutions, invariant pooling.

    The rotation grid's offset is drawn once per forward in training mode
    (:func:`~symprior.nn.sample_grid_offset`) and passed to every layer, so all layers agree on
    the absolute angle of each rotation channel; in eval mode it is 0.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        channels: Sequence[int],
        num_rotations: int,
        radius: float,
        soft: str,
        padding: str,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one layer width")
        self.num_rotations = num_rotations
        self.lift = NonStationaryLifting(
            SE2(),
            in_channels,
            channels[0],
            radius=radius,
            num_rotations=num_rotations,
            soft=soft,
            padding=padding,
        )
        self.convs = nn.ModuleList(
            NonStationaryGroupConv(
                SE2(),
                c_in,
                c_out,
                num_rotations=num_rotations,
                radius=radius,
                soft=soft,
                padding=padding,
            )
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.readout = nn.Linear(channels[-1], out_features)

    def forward(self, x: Tensor) -> Tensor:
        offset = sample_grid_offset(self.num_rotations) if self.training else 0.0
        h = nn.functional.silu(self.lift(x, grid_offset=offset))
        for conv in self.convs:
            h = nn.functional.silu(conv(h, grid_offset=offset))
        return self.readout(h.flatten(2).mean(-1))


def soft_se2_cnn(
    in_channels: int = 1,
    out_features: int = 2,
    channels: Sequence[int] = (8, 8),
    num_rotations: int = 4,
    radius: float = 2.0,
    soft: str = "both",
    padding: str = "zeros",
) -> SoftSE2CNN:
    r"""A soft SE(2) CNN; ``soft`` picks the relaxed subgroup (004 Table 1): ``"none"``,
    ``"translation"``, ``"rotation"`` or ``"both"``."""
    return SoftSE2CNN(
        in_channels, out_features, tuple(channels), num_rotations, radius, soft, padding
    )


def lie_algebra_cnn(
    group: str = "SO2",
    in_channels: int = 1,
    out_features: int = 2,
    channels: Sequence[int] = (8, 8),
    kernel_size: int = 5,
    num_samples: int = 8,
) -> nn.Sequential:
    r"""Lie-algebra convolutions (000 Def. 4.2) with SiLU, invariant pooling and a readout."""
    G = make_group(group)
    layers: list[nn.Module] = []
    widths = [in_channels, *channels]
    for c_in, c_out in itertools.pairwise(widths):
        layers += [LieAlgebraConv(G, c_in, c_out, kernel_size, num_samples=num_samples), nn.SiLU()]
    layers += [_Pool(), nn.Linear(widths[-1], out_features)]
    return nn.Sequential(*layers)


def power_net(
    height: int = 16,
    width: int = 16,
    kind: str = "translation",
    powers: int = 1,
    in_channels: int = 1,
    out_features: int = 1,
    channels: Sequence[int] = (8, 8),
    norm: str | None = "batch",
) -> PowerNet:
    r"""A PowerNet (003) on ``height x width`` images with base generators of one ``kind``."""
    return PowerNet(
        image_generators(height, width, kind),
        powers,
        in_channels,
        out_features,
        channels=tuple(channels),
        norm=norm,
    )


def unconstrained_mlp(
    in_features: int = 2, out_features: int = 1, hidden: int = 64, depth: int = 2
) -> nn.Sequential:
    r"""A plain MLP (no built-in symmetry), for REMUL's symmetry likelihood (001)."""
    widths = [in_features] + [hidden] * depth
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.SiLU()]
    layers.append(nn.Linear(widths[-1], out_features))
    return nn.Sequential(*layers)


#: Builders by name, for configs.
ZOO: dict[str, Callable[..., nn.Module]] = {
    "rpp_mlp": rpp_mlp,
    "soft_se2_cnn": soft_se2_cnn,
    "lie_algebra_cnn": lie_algebra_cnn,
    "power_net": power_net,
    "unconstrained_mlp": unconstrained_mlp,
}
