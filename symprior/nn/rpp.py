r"""Residual pathway priors (RPP): an equivariant layer plus an unconstrained residual pathway.

Finzi, Benton and Wilson (NeurIPS 2021), as summarised in 000 sec. 2.2 and 001 sec. 5.2, write a
layer as the sum :math:`f(x) = A(x) + B(x)` of a strictly equivariant layer ``A`` and an
unconstrained layer ``B``; a prior that is broad on ``A`` and narrow on ``B`` makes the network
use ``B`` only for what the symmetric part cannot explain. For linear layers (DESIGN.md, nn
family 1)

.. math::

    W = \mathrm{unvec}(Q a) + B, \qquad b = Q_b a_b + b_{res},

where the columns of ``Q`` span :math:`\{W : \rho_{out}(g) W = W \rho_{in}(g)\}` and those of
:math:`Q_b` the invariant vectors of :math:`\rho_{out}` (the maps ``Scalar -> rep_out``).
The relaxation parameters are the residuals ``B`` (``residual``) and :math:`b_{res}`
(``bias_residual``), strict value 0. The equivariant coefficients ``a`` (``coeffs``) and
:math:`a_b` (``bias_coeffs``) are ordinary weights; the reference code's MAP penalties are weight
decay 1e-3 on them and 1e2 on the residuals.

``Q`` is never materialised: :func:`~symprior.groups.equivariant_basis_blocks` stores one basis per
pair of summands and :meth:`~symprior.groups.BlockBasis.weight` builds ``W`` with one small
matrix product per pair, so hidden layers with hundreds of channels build and run fast. The
float64 bases are the master copies; a working copy per ``(dtype, device)`` is cached on first
use, so casting a layer to float32 never degrades them.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symprior._caching import filling_cache
from symprior.groups import BlockBasis, Group, Rep, Scalar, V, equivariant_basis_blocks
from symprior.nn._inputs import check_floating, check_like_parameters
from symprior.nn._relaxation import Relaxation, RelaxedModule

__all__ = ["RPPMLP", "EquivariantLinear", "GatedNonlinearity", "RPPLinear", "hidden_rep"]

#: Initial residual size relative to a dense layer's :math:`1/\sqrt{\mathrm{fan\_in}}` scale
#: (the reference code's ``RPP_SCALE``).
DEFAULT_RESIDUAL_SCALE = 1e-3


# ----------------------------------------------------------------------------- validation
def _check_rep(rep: object, name: str) -> Rep:
    if not isinstance(rep, Rep):
        raise TypeError(f"{name} must be a symprior.groups.Rep, got {type(rep).__name__}")
    return rep


def _check_pair(rep_in: object, rep_out: object) -> tuple[Rep, Rep]:
    r_in, r_out = _check_rep(rep_in, "rep_in"), _check_rep(rep_out, "rep_out")
    if r_in.G != r_out.G:
        raise ValueError(
            f"rep_in and rep_out must be representations of the same group, got {r_in.G!r} and "
            f"{r_out.G!r}"
        )
    return r_in, r_out


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_scale(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _check_input(x: object, size: int, rep: Rep, parameter: Tensor | None = None) -> Tensor:
    r"""``x`` ``(..., size)``, floating point, and with ``parameter``'s dtype and device if
    given (a layer's parameters; a nonlinearity has none)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (..., {size}), got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(
            f"x must have last dimension {size} (the size of {rep!r}), got shape {tuple(x.shape)}"
        )
    if parameter is None:
        check_floating(x, "x")
    else:
        check_like_parameters(x, parameter, "x")
    return x


def _converted(basis: BlockBasis, like: Tensor) -> BlockBasis:
    """``basis`` with every block moved to the dtype and device of ``like``."""
    blocks = tuple(
        dataclasses.replace(b, basis=b.basis.to(dtype=like.dtype, device=like.device))
        for b in basis.blocks
    )
    return BlockBasis(basis.rep_in, basis.rep_out, blocks)


def _coefficient_std(basis: BlockBasis) -> Tensor:
    r"""Per-coefficient standard deviations that preserve the variance of i.i.d. inputs.

    A coefficient of the block from input summand ``r`` (``m_r`` copies) to output summand ``s``
    multiplies an orthonormal basis matrix; with :math:`c \sim N(0, \sigma_s^2)` and inputs of
    unit variance, an output component of ``s`` has variance
    :math:`\sigma_s^2 \sum_r m_r \mathrm{rank}(r \to s) / \mathrm{size}(s)` on average over its
    components, so :math:`\sigma_s^{-2}` is that sum (an effective fan-in, LeCun-normal style).
    """
    fan: dict[int, float] = {}
    for b in basis.blocks:
        fan[b.out_offset] = fan.get(b.out_offset, 0.0) + b.in_mult * b.rank / b.out_size
    parts = [
        torch.full((b.num_coeffs,), 1.0 / math.sqrt(fan[b.out_offset]), dtype=torch.float64)
        for b in basis.blocks
        if b.num_coeffs
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


# ----------------------------------------------------------------------------- linear layers
class _BasisLinear(nn.Module):
    r"""Shared part of the RPP linear layers: the equivariant weight and bias from coefficients."""

    coeffs: nn.Parameter
    bias_coeffs: nn.Parameter | None

    def __init__(self, rep_in: Rep, rep_out: Rep, bias: bool) -> None:
        super().__init__()
        self.rep_in, self.rep_out = _check_pair(rep_in, rep_out)
        self.has_bias = _check_bool(bias, "bias")
        self._basis = equivariant_basis_blocks(self.rep_in, self.rep_out)
        self._bias_basis = (
            equivariant_basis_blocks(Scalar(self.rep_in.G), self.rep_out) if bias else None
        )
        # The bias basis has only rep_out.size rows: kept dense, the bias is one matrix-vector
        # product instead of one product per summand.
        self._bias_dense = self._bias_basis.dense() if self._bias_basis is not None else None
        self._working: dict[tuple[torch.dtype, torch.device], tuple[BlockBasis, Tensor | None]] = {}
        self.coeffs = nn.Parameter(torch.empty(self._basis.num_coeffs))
        if self._bias_basis is not None:
            self.bias_coeffs = nn.Parameter(torch.empty(self._bias_basis.num_coeffs))
        else:
            self.register_parameter("bias_coeffs", None)

    @property
    def basis(self) -> BlockBasis:
        r"""The float64 block basis ``Q`` of ``rep_in -> rep_out`` (``num_coeffs`` columns)."""
        return self._basis

    @property
    def bias_basis(self) -> BlockBasis | None:
        r"""The float64 block basis :math:`Q_b` of ``Scalar -> rep_out``, or None without bias."""
        return self._bias_basis

    def _bases(self, like: Tensor) -> tuple[BlockBasis, Tensor | None]:
        key = (like.dtype, like.device)
        cached = self._working.get(key)
        if cached is None:
            with filling_cache():
                bias = self._bias_dense
                if bias is not None:
                    bias = bias.to(dtype=like.dtype, device=like.device)
                cached = (_converted(self._basis, like), bias)
            self._working[key] = cached
        return cached

    @torch.no_grad()
    def _reset_equivariant(self) -> None:
        std = _coefficient_std(self._basis).to(self.coeffs)
        self.coeffs.copy_(torch.randn_like(self.coeffs) * std)
        if self.bias_coeffs is not None:
            bound = 1.0 / math.sqrt(self.rep_in.size)
            self.bias_coeffs.uniform_(-bound, bound)

    def equivariant_weight(self) -> Tensor:
        r"""The equivariant weight :math:`\mathrm{unvec}(Q a)` ``(rep_out.size, rep_in.size)``."""
        return self._bases(self.coeffs)[0].weight(self.coeffs)

    def equivariant_bias(self) -> Tensor | None:
        r"""The equivariant bias :math:`Q_b a_b` ``(rep_out.size,)``, or None without bias."""
        bias_basis = self._bases(self.coeffs)[1]
        if self.bias_coeffs is None or bias_basis is None:
            return None
        return bias_basis @ self.bias_coeffs

    def extra_repr(self) -> str:
        return (
            f"rep_in={self.rep_in!r}, rep_out={self.rep_out!r}, bias={self.has_bias}, "
            f"num_coeffs={self._basis.num_coeffs}"
        )


class EquivariantLinear(_BasisLinear):
    r"""Strictly equivariant affine layer :math:`y = \mathrm{unvec}(Q a)\,x + Q_b a_b` (EMLP).

    The equivariant pathway ``A`` of a residual pathway prior (000 sec. 2.2): for every ``g``,
    :math:`f(\rho_{in}(g) x) = \rho_{out}(g) f(x)`.

    Parameters
    ----------
    rep_in, rep_out : Rep
        Representations of the same group acting on inputs ``(..., rep_in.size)`` and outputs
        ``(..., rep_out.size)``.
    bias : bool
        Whether to add the equivariant bias :math:`Q_b a_b` (invariant vectors of ``rep_out``).

    Attributes
    ----------
    coeffs : Parameter
        ``(basis.num_coeffs,)`` coefficients ``a``, initialised with the variance-preserving
        per-output-summand standard deviations described in :meth:`reset_parameters`.
    bias_coeffs : Parameter or None
        ``(bias_basis.num_coeffs,)`` coefficients :math:`a_b` (possibly empty).

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V, Scalar
    >>> G = SO2()
    >>> layer = EquivariantLinear(2 * V(G) + Scalar(G), V(G))
    >>> layer.coeffs.shape  # two copies of V -> V, each spanned by I and the 90-degree rotation
    torch.Size([4])
    >>> layer(torch.randn(3, 5)).shape
    torch.Size([3, 2])
    """

    def __init__(self, rep_in: Rep, rep_out: Rep, bias: bool = True) -> None:
        super().__init__(rep_in, rep_out, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Re-draw the coefficients.

        ``coeffs`` of the block into output summand ``s`` are :math:`N(0, \sigma_s^2)` with
        :math:`\sigma_s^{-2} = \sum_r m_r \mathrm{rank}(r \to s) / \mathrm{size}(s)`, so inputs with
        i.i.d. unit-variance components give outputs of unit variance on average; ``bias_coeffs``
        are uniform on :math:`\pm 1/\sqrt{\mathrm{rep\_in.size}}` as in :class:`torch.nn.Linear`.
        """
        self._reset_equivariant()

    def forward(self, x: Tensor) -> Tensor:
        r"""Apply the layer to ``x`` ``(..., rep_in.size)``; returns ``(..., rep_out.size)``."""
        _check_input(x, self.rep_in.size, self.rep_in, self.coeffs)
        return F.linear(x, self.equivariant_weight(), self.equivariant_bias())


class RPPLinear(_BasisLinear, RelaxedModule):
    r"""Residual-pathway affine layer: equivariant weights plus an unconstrained residual.

    :math:`y = W x + b` with :math:`W = \mathrm{unvec}(Q a) + B` and :math:`b = Q_b a_b + b_{res}`,
    the layer of Finzi et al. (2021) described in 000 sec. 2.2: an equivariant pathway
    (as :class:`EquivariantLinear`) plus an unconstrained one with the same shapes. With
    ``residual`` and ``bias_residual`` at zero (:meth:`set_strict`) it is exactly the equivariant
    layer with the same coefficients.

    Parameters
    ----------
    rep_in, rep_out : Rep
        Representations of the same group; inputs ``(..., rep_in.size)``, outputs
        ``(..., rep_out.size)``.
    bias : bool
        Whether to add the bias :math:`Q_b a_b + b_{res}`.
    residual_scale : float
        Initial standard deviation of the residual entries relative to
        :math:`1/\sqrt{\mathrm{rep\_in.size}}`; 0 starts strictly equivariant. Default 1e-3 (the
        reference code's ``RPP_SCALE``).

    Attributes
    ----------
    coeffs, bias_coeffs : Parameter
        Equivariant coefficients, as in :class:`EquivariantLinear`.
    residual : Parameter
        ``B``, shape ``(rep_out.size, rep_in.size)``; relaxation (family ``"rpp"``, role
        ``"residual"``, strict value 0).
    bias_residual : Parameter or None
        :math:`b_{res}`, shape ``(rep_out.size,)``; relaxation as ``residual``.

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V, Scalar
    >>> G = SO2()
    >>> layer = RPPLinear(2 * V(G) + Scalar(G), V(G))
    >>> sorted(layer.relaxations())
    ['bias_residual', 'residual']
    >>> bool(layer.equivariance_level() > 0)
    True
    >>> layer.set_strict()
    >>> float(layer.equivariance_level().detach())
    0.0
    """

    residual: nn.Parameter
    bias_residual: nn.Parameter | None

    def __init__(
        self,
        rep_in: Rep,
        rep_out: Rep,
        bias: bool = True,
        *,
        residual_scale: float = DEFAULT_RESIDUAL_SCALE,
    ) -> None:
        super().__init__(rep_in, rep_out, bias)
        self.residual_scale = _check_scale(residual_scale, "residual_scale")
        self.residual = nn.Parameter(torch.empty(self.rep_out.size, self.rep_in.size))
        if bias:
            self.bias_residual = nn.Parameter(torch.empty(self.rep_out.size))
        else:
            self.register_parameter("bias_residual", None)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        r"""Re-draw all parameters.

        The coefficients as in :meth:`EquivariantLinear.reset_parameters`; the residual entries
        :math:`N(0, (\mathrm{residual\_scale})^2 / \mathrm{rep\_in.size})`.
        """
        self._reset_equivariant()
        std = self.residual_scale / math.sqrt(self.rep_in.size)
        self.residual.normal_(0.0, std)
        if self.bias_residual is not None:
            self.bias_residual.normal_(0.0, std)

    def relaxations(self) -> dict[str, Relaxation]:
        r"""``residual`` and (with bias) ``bias_residual``: family ``"rpp"``, strict value 0."""
        out = {"residual": Relaxation("rpp", "residual", 0.0)}
        if self.bias_residual is not None:
            out["bias_residual"] = Relaxation("rpp", "residual", 0.0)
        return out

    def equivariance_level(self) -> Tensor:
        r"""Relative size of the residual pathway of the affine map.

        With the augmented matrices :math:`[W\,|\,b]` of shape ``(rep_out.size, rep_in.size + 1)``
        (the bias as an extra column; without bias just ``W``),

        .. math::

            \ell = \frac{\|[B \,|\, b_{res}]\|_F}{\max(\|[\mathrm{unvec}(Q a) \,|\, Q_b a_b]\|_F,
            \varepsilon)},

        with :math:`\varepsilon` the machine epsilon of the parameters' dtype, so the level stays
        finite when the equivariant pathway vanishes (e.g. when ``rep_in -> rep_out`` has no
        equivariant maps) and is zero exactly when the residuals are.
        """
        residual = [self.residual.reshape(-1)]
        equivariant = [self.equivariant_weight().reshape(-1)]
        bias = self.equivariant_bias()
        if self.bias_residual is not None and bias is not None:
            residual.append(self.bias_residual)
            equivariant.append(bias)
        num = torch.linalg.vector_norm(torch.cat(residual))
        den = torch.linalg.vector_norm(torch.cat(equivariant))
        return num / den.clamp_min(torch.finfo(den.dtype).eps)

    def forward(self, x: Tensor) -> Tensor:
        r"""Apply the layer to ``x`` ``(..., rep_in.size)``; returns ``(..., rep_out.size)``."""
        _check_input(x, self.rep_in.size, self.rep_in, self.coeffs)
        weight = self.equivariant_weight() + self.residual
        bias = self.equivariant_bias()
        if bias is not None and self.bias_residual is not None:
            bias = bias + self.bias_residual
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, residual_scale={self.residual_scale}"


# ----------------------------------------------------------------------------- nonlinearity
def hidden_rep(group: Group, channels: int) -> Rep:
    r"""The hidden representation used when :class:`RPPMLP` gets an int channel budget.

    Half of the ``channels`` features (rounded down to whole copies) go to copies of the defining
    representation ``V`` and the rest to scalars:
    ``m * V + (channels - m * n) * Scalar`` with ``m = channels // (2 n)``; budgets below
    ``2 n`` give scalars only. The size of the result is exactly ``channels``.

    Examples
    --------
    >>> from symprior.groups import SO3
    >>> hidden_rep(SO3(), 20)
    3*V(SO3()) + 11*Scalar(SO3())
    """
    if not isinstance(group, Group):
        raise TypeError(f"group must be a symprior.groups.Group, got {type(group).__name__}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    copies = channels // (2 * group.n)
    scalars = channels - copies * group.n
    if copies == 0:
        return scalars * Scalar(group)
    return copies * V(group) + scalars * Scalar(group)


class GatedNonlinearity(nn.Module):
    r"""EMLP's gated nonlinearity: equivariant for any representation of any group.

    The input is ``rep`` followed by one gate scalar per copy of a non-scalar summand (that is
    :attr:`rep_in`). A scalar channel ``s`` becomes :math:`s\,\sigma(s)` (SiLU); every component
    of a non-scalar copy ``v`` becomes :math:`v\,\sigma(g_v)` with its own gate scalar
    :math:`g_v`. Gates are invariant, so the output transforms like ``rep``.

    Parameters
    ----------
    rep : Rep
        The output representation, shape ``(..., rep.size)``; inputs are
        ``(..., rep_in.size)``.

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V, Scalar
    >>> act = GatedNonlinearity(2 * V(SO2()) + Scalar(SO2()))
    >>> act.rep_in  # the two gates are appended after the scalar
    2*V(SO2()) + 3*Scalar(SO2())
    >>> act(torch.zeros(1, 7))
    tensor([[0., 0., 0., 0., 0.]])
    """

    def __init__(self, rep: Rep) -> None:
        super().__init__()
        self.rep = _check_rep(rep, "rep")
        scalar = Scalar(rep.G)
        # Per summand: (multiplicity, size, whether it is scalar). Gating is then one split of
        # the input and broadcasting: no gather, whose backward (an index_put with
        # accumulation) costs more than the whole nonlinearity, above all in the vmapped
        # backward passes of the Laplace curvature, and no slices, whose backward each fills a
        # zero gradient of the whole input.
        layout: list[tuple[int, int, bool]] = []
        gates = 0
        for summand, mult in rep.summands():
            layout.append((mult, summand.size, summand == scalar))
            if summand != scalar:
                gates += mult
        self._layout = tuple(layout)
        self._split = [mult * size for mult, size, _ in layout] + ([gates] if gates else [])
        self._gate_split = [mult for mult, _, is_scalar in layout if not is_scalar]
        self.num_gates = gates
        self.rep_in: Rep = rep + gates * scalar if gates else rep

    def forward(self, x: Tensor) -> Tensor:
        r"""Gate ``x`` ``(..., rep_in.size)``; returns ``(..., rep.size)``."""
        _check_input(x, self.rep_in.size, self.rep_in)
        blocks = x.split(self._split, -1)
        gate_values: tuple[Tensor, ...] = ()
        if self.num_gates:
            sig = torch.sigmoid(blocks[-1])
            many = len(self._gate_split) > 1
            gate_values = tuple(sig.split(self._gate_split, -1)) if many else (sig,)
        gates = iter(gate_values)
        pieces = []
        for block, (mult, size, is_scalar) in zip(blocks, self._layout, strict=False):
            if is_scalar:  # scalars gate themselves
                pieces.append(F.silu(block))
            else:
                gated = block.unflatten(-1, (mult, size)) * next(gates).unsqueeze(-1)
                pieces.append(gated.flatten(-2))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)

    def extra_repr(self) -> str:
        return f"rep={self.rep!r}, num_gates={self.num_gates}"


# ----------------------------------------------------------------------------- the network
class RPPMLP(nn.Module):
    r"""A residual-pathway MLP: :class:`RPPLinear` layers with gated nonlinearities in between.

    The RPP-EMLP of Finzi et al. (2021) (000 sec. 2.2; a baseline in 001 sec. 5.2, Table 1):
    ``depth`` hidden layers ``RPPLinear(rep_prev, gated(hidden))`` each followed by a
    :class:`GatedNonlinearity` back to ``hidden``, then ``RPPLinear(hidden, rep_out)``. After
    :func:`~symprior.nn.set_strict` every layer is equivariant and so is the network. (The
    reference network also has a bilinear layer and a relaxed nonlinearity; they are not part of
    this layer family.)

    Parameters
    ----------
    rep_in, rep_out : Rep
        Input ``(..., rep_in.size)`` and output ``(..., rep_out.size)`` representations.
    hidden : Rep or int
        The hidden representation (same group), e.g. ``64 * V(G) + 64 * Scalar(G)``, or a
        channel budget turned into one by :func:`hidden_rep`. Gate scalars come on top.
    depth : int
        Number of hidden layers (``>= 0``; 0 gives a single :class:`RPPLinear`).
    residual_scale : float
        Initial residual scale of every layer (see :class:`RPPLinear`).

    Attributes
    ----------
    layers : ModuleList
        The ``depth + 1`` :class:`RPPLinear` layers; relaxation parameters are named
        ``layers.{i}.residual`` and ``layers.{i}.bias_residual``.
    activations : ModuleList
        The ``depth`` :class:`GatedNonlinearity` modules (no parameters).

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO3, V, Scalar
    >>> from symprior.nn import relaxation_parameters
    >>> G = SO3()
    >>> net = RPPMLP(V(G) * V(G), Scalar(G), hidden=2 * V(G) + 2 * Scalar(G), depth=1)
    >>> [name for name, _, _ in relaxation_parameters(net)]
    ['layers.0.residual', 'layers.0.bias_residual', 'layers.1.residual', 'layers.1.bias_residual']
    >>> net(torch.randn(4, 9)).shape
    torch.Size([4, 1])
    """

    def __init__(
        self,
        rep_in: Rep,
        rep_out: Rep,
        hidden: Rep | int,
        depth: int,
        *,
        residual_scale: float = DEFAULT_RESIDUAL_SCALE,
    ) -> None:
        super().__init__()
        self.rep_in, self.rep_out = _check_pair(rep_in, rep_out)
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"depth must be an int, got {type(depth).__name__}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        G = self.rep_in.G
        if isinstance(hidden, Rep):
            if hidden.G != G:
                raise ValueError(
                    f"hidden must be a representation of {G!r} (the group of rep_in), got one "
                    f"of {hidden.G!r}"
                )
            self.hidden = hidden
        elif isinstance(hidden, int) and not isinstance(hidden, bool):
            if hidden < 1:
                raise ValueError(f"hidden must be a Rep or an int >= 1, got {hidden}")
            self.hidden = hidden_rep(G, hidden)
        else:
            raise TypeError(f"hidden must be a Rep or an int, got {type(hidden).__name__}")
        self.depth = depth
        activations = [GatedNonlinearity(self.hidden) for _ in range(depth)]
        reps = [self.rep_in] + [self.hidden] * depth
        layers = [
            RPPLinear(r, act.rep_in, residual_scale=residual_scale)
            for r, act in zip(reps[:-1], activations, strict=True)
        ]
        layers.append(RPPLinear(reps[-1], self.rep_out, residual_scale=residual_scale))
        self.layers = nn.ModuleList(layers)
        self.activations = nn.ModuleList(activations)

    def forward(self, x: Tensor) -> Tensor:
        r"""Apply the network to ``x`` ``(..., rep_in.size)``; returns ``(..., rep_out.size)``."""
        _check_input(x, self.rep_in.size, self.rep_in)  # dtype and device: the first layer
        for layer, act in zip(self.layers[:-1], self.activations, strict=True):
            x = act(layer(x))
        return self.layers[-1](x)
