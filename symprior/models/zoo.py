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
from symprior.nn import RPPMLP, EquivariantLinear, GatedNonlinearity, LieAlgebraConv
from symprior.nn import hidden_rep as _hidden_rep
from symprior.nn.nonstationary import (
    NonStationaryGroupConv,
    NonStationaryKernelConfig,
    NonStationaryLifting,
    sample_grid_offset,
)
from symprior.nn.power import PowerNet, image_generators

__all__ = [
    "SOFT_SE2_POOLS",
    "ZOO",
    "SoftSE2CNN",
    "TensorSquare",
    "equivariant_mlp",
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


#: One factor of a product: a name, then an optional dual mark ``*`` — a ``*`` that ends the term
#: or is followed by another ``*`` (``"V*"``, ``"V* * V"``, ``"V**V"``); any other ``*`` after a
#: factor is the tensor product (``"V*V"`` is :math:`V \otimes V`).
_FACTOR = re.compile(r"\s*(V\.T|V|Scalar|S)(\s*\*(?=\s*(?:\*|$)))?\s*")


def parse_rep(spec: str, group: Group) -> Rep:
    r"""A representation from a string: ``"V"``, ``"Scalar"``, ``"2V + 3Scalar"``, ``"V*V"``.

    The grammar follows the algebra of representations of EMLP (Finzi et al. 2021), in the
    notation the library prints (``V(SO2())*`` is the dual of ``V``):

    * a spec is terms joined by ``+`` (the direct sum);
    * a term is an optional multiplicity (``2V``, ``2*V``) followed by factors joined by ``*``
      (the tensor product);
    * a factor is ``V`` (the defining representation), ``Scalar`` or ``S`` (the trivial one), or
      a dual, written ``V.T`` or ``V*``; a ``*`` after any factor is its dual when it ends the
      term or is followed by another ``*``.

    So ``"V*"`` and ``"2V*"`` are ``V.T`` and ``2V.T``; ``"V*V"`` is :math:`V \otimes V` while
    ``"V* * V"`` (or ``"V**V"``, ``"V.T*V"``) is :math:`V^* \otimes V`, and ``"V*V*"`` is
    :math:`V \otimes V^*`.

    Parameters
    ----------
    spec : str
        The representation, e.g. ``"2V + V* + 3Scalar"``.
    group : Group
        The group it is a representation of.

    Returns
    -------
    Rep

    Raises
    ------
    ValueError
        If ``spec`` is empty, not a string, or names an unknown factor.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a representation is a string such as '2V + Scalar', got {spec!r}")
    total: Rep | None = None
    for term in spec.split("+"):
        match = re.fullmatch(r"\s*(\d*)\s*\*?\s*(.+?)\s*", term)
        if not match:
            raise ValueError(f"cannot read the representation term {term!r} in {spec!r}")
        mult = int(match.group(1)) if match.group(1) else 1
        rep = _parse_product(match.group(2), group, spec)
        rep = mult * rep if mult != 1 else rep
        total = rep if total is None else total + rep
    assert total is not None
    return total


def _parse_product(text: str, group: Group, spec: str) -> Rep:
    """The tensor product of the factors in ``text`` (one term of ``spec``, multiplicity read)."""
    rep: Rep | None = None
    pos = 0
    while True:
        factor = _FACTOR.match(text, pos)
        end = factor.end() if factor else pos
        if factor is None or (end < len(text) and text[end] != "*"):
            unknown = text[pos:].split("*")[0].strip()
            if not unknown:
                raise ValueError(f"a representation factor is missing after '*' in {spec!r}")
            raise ValueError(f"unknown representation factor {unknown!r} in {spec!r}")
        name, dual = factor.group(1), factor.group(2) is not None
        base: Rep = Scalar(group) if name in ("Scalar", "S") else V(group)
        if (name == "V.T") != dual:  # V.T or V*; (V.T)* is V again
            base = base.T
        rep = base if rep is None else rep * base
        if end == len(text):
            return rep
        pos = end + 1  # past the product's "*"


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
        _features(first, quadratic),
        parse_rep(rep_out, G),
        hidden_rep,
        depth,
        residual_scale=residual_scale,
    )
    return _with_square(mlp, quadratic)


def _features(rep: Rep, quadratic: bool) -> Rep:
    """The representation a zoo MLP's first layer sees: ``rep``, or ``rep + rep * rep``."""
    return rep + rep * rep if quadratic else rep


def _with_square(mlp: nn.Module, quadratic: bool) -> nn.Module:
    """``mlp``, preceded by :class:`TensorSquare` when ``quadratic``."""
    if not quadratic:
        return mlp
    return nn.Sequential(OrderedDict(square=TensorSquare(), mlp=mlp))


def equivariant_mlp(
    group: str = "SO2",
    rep_in: str = "V",
    rep_out: str = "Scalar",
    hidden: int | str = 32,
    depth: int = 2,
    quadratic: bool = True,
) -> nn.Module:
    r"""A strictly equivariant MLP (EMLP): :func:`rpp_mlp` without its residual pathway.

    The same layers as :func:`rpp_mlp` at its strict setting -- ``depth`` layers
    :class:`~symprior.nn.EquivariantLinear` each followed by a
    :class:`~symprior.nn.GatedNonlinearity`, then a last :class:`~symprior.nn.EquivariantLinear`
    (after :class:`TensorSquare` with ``quadratic=True``) -- but with no relaxation parameters,
    so it is exactly equivariant whatever its weights. It is the *strict* hypothesis when
    comparing symmetry hypotheses: an RPP network with a small residual prior scale is not,
    because its point-estimated equivariant weights can grow and amplify residuals that the
    prior keeps small entry by entry.

    Examples
    --------
    >>> import torch
    >>> from symprior.nn import relaxation_parameters
    >>> net = equivariant_mlp(hidden="2V + 2Scalar", depth=1)
    >>> list(relaxation_parameters(net))
    []
    >>> net(torch.randn(3, 2)).shape
    torch.Size([3, 1])
    """
    G = make_group(group)
    hidden_rep: Rep = parse_rep(hidden, G) if isinstance(hidden, str) else _hidden_rep(G, hidden)
    first = parse_rep(rep_in, G)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")
    layers: list[nn.Module] = []
    rep = _features(first, quadratic)
    for _ in range(depth):
        gate = GatedNonlinearity(hidden_rep)
        layers += [EquivariantLinear(rep, gate.rep_in), gate]
        rep = hidden_rep
    layers.append(EquivariantLinear(rep, parse_rep(rep_out, G)))
    return _with_square(nn.Sequential(*layers), quadratic)


class _Pool(nn.Module):
    """Mean over every axis after the channels: (B, C, ...) -> (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(-1)


#: Readouts of :class:`SoftSE2CNN`: how the last feature map is pooled to one value per channel.
SOFT_SE2_POOLS = ("max", "mean")


class SoftSE2CNN(nn.Module):
    r"""A soft SE(2) CNN (004): non-stationary lifting, group convolutions, invariant pooling.

    Each layer is followed by SiLU; the last feature map ``(B, C, R, H, W)`` is pooled over its
    rotation and spatial axes and a linear readout gives the outputs. Pooling is invariant (a
    rotation permutes the rotation axis and moves pixels), so a strict network (every
    ``omega_prime`` at 0) is invariant to the rotations its grid represents exactly.

    ``pool="max"`` is 004's readout (app. A.1: "max pooling is applied over spatial and subgroup
    dimensions"). ``pool="mean"`` (the readout before ``pool`` existed) is nearly blind to
    orientation:
    the mean over all positions of a convolution is (sum of the kernel) x (sum of the input),
    whatever the kernel's orientation, so orientation reaches a mean-pooled readout only through
    the curvature of the nonlinearities. A soft-rotation layer (``omega_prime`` on the angle)
    then barely changes the pooled features, and the 6-vs-9 task is hard to learn with it.

    Rotation grid: with ``random_grid=True`` the offset :math:`\theta_0` is drawn once per
    forward in training mode (:func:`~symprior.nn.sample_grid_offset`, Monte-Carlo integration
    over SO(2), 004 sec. 5) and passed to every layer, so all layers agree on the absolute angle
    of each rotation channel; in eval mode it is 0. With ``random_grid=False`` it is 0 in both
    modes: the network is deterministic, its training objective is the function that eval-mode
    predictions use (a Laplace curvature at the MAP point then describes that function), and
    with ``num_rotations`` a multiple of 4 a strict network is exactly invariant to quarter
    turns of a square image in training mode too. A *relaxed* network depends on the absolute
    angle of its grid, so after training with random offsets its eval-mode function (offset 0)
    is one draw of a family it was only fitted to on average.
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
        *,
        pool: str = "max",
        random_grid: bool = True,
        omega_prime_init: float = 0.0,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one layer width")
        if pool not in SOFT_SE2_POOLS:
            raise ValueError(f"pool must be one of {SOFT_SE2_POOLS}, got {pool!r}")
        if not isinstance(random_grid, bool):
            raise TypeError(f"random_grid must be a bool, got {type(random_grid).__name__}")
        config = NonStationaryKernelConfig(omega_prime_init=omega_prime_init)
        self.num_rotations = num_rotations
        self.pool = pool
        self.random_grid = random_grid
        self.lift = NonStationaryLifting(
            SE2(),
            in_channels,
            channels[0],
            radius=radius,
            num_rotations=num_rotations,
            soft=soft,
            padding=padding,
            config=config,
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
                config=config,
            )
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.readout = nn.Linear(channels[-1], out_features)

    def forward(self, x: Tensor) -> Tensor:
        r"""``(B, in_channels, H, W) -> (B, out_features)``."""
        random = self.training and self.random_grid
        offset = sample_grid_offset(self.num_rotations) if random else 0.0
        h = nn.functional.silu(self.lift(x, grid_offset=offset))
        for conv in self.convs:
            h = nn.functional.silu(conv(h, grid_offset=offset))
        flat = h.flatten(2)
        pooled = flat.amax(-1) if self.pool == "max" else flat.mean(-1)
        return self.readout(pooled)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, random_grid={self.random_grid}"


def soft_se2_cnn(
    in_channels: int = 1,
    out_features: int = 2,
    channels: Sequence[int] = (8, 8),
    num_rotations: int = 4,
    radius: float = 2.0,
    soft: str = "both",
    padding: str = "zeros",
    pool: str = "max",
    random_grid: bool = True,
    omega_prime_init: float = 0.0,
) -> SoftSE2CNN:
    r"""A soft SE(2) CNN (:class:`SoftSE2CNN`).

    ``soft`` picks the relaxed subgroup (004 Table 1): ``"none"``, ``"translation"``,
    ``"rotation"`` or ``"both"``; ``pool`` the readout (``"max"``, 004 app. A.1, or
    ``"mean"``); ``random_grid`` whether training mode draws a random rotation-grid offset;
    ``omega_prime_init`` the initial value of every relaxed component of ``omega_prime`` (0,
    the default, starts at the strict network; for a task the strict network cannot solve, the
    gradient that leads away from it can be small there, and a non-zero start may help).
    """
    return SoftSE2CNN(
        in_channels,
        out_features,
        tuple(channels),
        num_rotations,
        radius,
        soft,
        padding,
        pool=pool,
        random_grid=random_grid,
        omega_prime_init=omega_prime_init,
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
    "equivariant_mlp": equivariant_mlp,
    "soft_se2_cnn": soft_se2_cnn,
    "lie_algebra_cnn": lie_algebra_cnn,
    "power_net": power_net,
    "unconstrained_mlp": unconstrained_mlp,
}
