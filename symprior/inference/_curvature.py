r"""Curvature of the negative log joint for Laplace approximations: Hessians, GGNs, KFAC.

A Laplace approximation needs the precision :math:`H` of a Gaussian at the mode. This module
computes three kinds of it in unconstrained coordinates and turns each into a posterior block:

* the exact Hessian by double back-propagation (:func:`hessian`), for small parameter sets;
* the diagonal of the generalised Gauss-Newton matrix (GGN)
  :math:`\sum_n J_n^\top \Lambda_n J_n` of the likelihood, :math:`J_n` the Jacobian of the network
  output of data point ``n`` and :math:`\Lambda_n` the Hessian of the negative log likelihood in
  that output (:class:`LossCurvature`, :func:`ggn_diagonal`);
* Kronecker factors of the GGN of layer weights (KFAC, Martens & Grosse 2015; for convolutions
  Grosse & Martens 2016; as a Laplace posterior Ritter et al. 2018), :func:`kron_factors`.

A precision that is not positive definite is *repaired*: eigenvalues below
``floor = eigenvalue_floor * max |eigenvalue|`` are raised to the floor and counted (the caller
warns with :class:`CurvatureWarning`). Log-determinants use :func:`torch.linalg.eigvalsh`, whose
gradient exists for repeated eigenvalues, so evidences are differentiable in hyperparameters.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, Normal

from symprior.inference import _posterior
from symprior.inference._posterior import Block, DiagonalBlock, FullBlock
from symprior.nn.rpp import RPPLinear

__all__ = [
    "KFAC_LAYERS",
    "CurvaturePart",
    "CurvatureWarning",
    "DensePrecision",
    "DiagonalPrecision",
    "KronLayer",
    "KroneckerEigenBlock",
    "KroneckerPrecision",
    "LossCurvature",
    "find_kron_layers",
    "ggn_diagonal",
    "hessian",
    "kron_factors",
    "output_jacobian",
    "separable_diagonal",
]

#: Default relative eigenvalue floor of the repair: ``floor = 1e-10 * max |eigenvalue|``.
EIGENVALUE_FLOOR = 1e-10


class CurvatureWarning(UserWarning):
    r"""A curvature matrix was not positive definite and had eigenvalues raised to the floor."""


# ------------------------------------------------------------------------------ derivatives
#: Largest dimension of a dense (full) Hessian; beyond it the Laplace engine asks for a
#: diagonal or Kronecker-factored curvature instead of exhausting memory.
MAX_DENSE_DIM = 8192


def hessian(
    fn: Callable[[Tensor], Tensor], u: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Value, gradient ``(d,)`` and Hessian ``(d, d)`` of a scalar function of a vector ``u``.

    Double back-propagation, one backward pass per row. With ``create_graph`` the result stays
    differentiable in any tensor ``fn`` closes over (hyperparameters), which is how evidences are
    optimised.
    """
    d = u.numel()
    if d > MAX_DENSE_DIM:
        raise ValueError(
            f"the full Hessian over {d} parameters would need {d * d * 8 / 2**30:.1f} GiB and "
            f"{d} backward passes; use structure='diag' or 'kron' (or fewer relaxation parameters)"
        )
    u = u.detach().requires_grad_(True)
    value = fn(u)
    zeros = u.new_zeros(d, d)
    if d == 0 or not value.requires_grad:
        return value, u.new_zeros(d), zeros
    (grad,) = torch.autograd.grad(value, u, create_graph=True, allow_unused=True)
    if grad is None:
        return value, u.new_zeros(d), zeros
    if not grad.requires_grad:
        return value, grad, zeros
    hess = _batched_rows(grad, u, create_graph)
    if hess is None:
        rows = []
        for i in range(d):
            (row,) = torch.autograd.grad(
                grad[i], u, retain_graph=True, create_graph=create_graph, allow_unused=True
            )
            rows.append(u.new_zeros(d) if row is None else row)
        hess = torch.stack(rows)
    return value, grad if create_graph else grad.detach(), hess


#: Rows of a Hessian computed per vectorised backward pass.
_ROW_CHUNK = 128


def _batched_rows(grad: Tensor, u: Tensor, create_graph: bool) -> Tensor | None:
    r"""All rows :math:`\partial g_i / \partial u` by vectorised backward passes, or ``None``.

    ``None`` when an operation in the graph has no batching rule (an error, or torch's warning
    that it falls back to a slow loop): the caller then loops over rows itself.
    """
    d = u.numel()
    eye = torch.eye(d, dtype=u.dtype, device=u.device)
    chunks = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for start in range(0, d, _ROW_CHUNK):
                (rows,) = torch.autograd.grad(
                    grad,
                    u,
                    eye[start : start + _ROW_CHUNK],
                    retain_graph=True,
                    create_graph=create_graph,
                    is_grads_batched=True,
                    allow_unused=True,
                )
                if rows is None:
                    rows = u.new_zeros(min(_ROW_CHUNK, d - start), d)
                chunks.append(rows)
    except (RuntimeError, UserWarning):
        return None
    return torch.cat(chunks)


def separable_diagonal(
    fn: Callable[[Tensor], Tensor], u: Tensor, *, create_graph: bool = False
) -> Tensor:
    r"""The Hessian-vector product :math:`H \mathbf{1}` ``(d,)`` of a scalar function of ``u``.

    Equal to the Hessian diagonal when ``fn`` is a sum of functions of single entries (every
    factorised prior; 1 backward pass instead of ``d``); the row sums otherwise.
    """
    u = u.detach().requires_grad_(True)
    value = fn(u)
    if u.numel() == 0 or not value.requires_grad:
        return u.new_zeros(u.numel())
    (grad,) = torch.autograd.grad(value, u, create_graph=True, allow_unused=True)
    if grad is None or not grad.requires_grad:
        return u.new_zeros(u.numel())
    (hv,) = torch.autograd.grad(
        grad, u, torch.ones_like(grad), create_graph=create_graph, allow_unused=True
    )
    return u.new_zeros(u.numel()) if hv is None else hv


def output_jacobian(fn: Callable[[Tensor], Tensor], u: Tensor) -> tuple[Tensor, Tensor]:
    r"""The output ``(B, ...)`` of ``fn(u)`` and its Jacobian ``(B, K, d)`` in ``u`` ``(d,)``.

    ``K`` is the number of output entries per batch row. Vectorised with
    :func:`torch.func.jacrev`; networks that torch.func cannot trace (autograd Functions without
    ``setup_context``, e.g. the per-position products of soft translation layers) fall back to
    plain autograd: ``d`` double-backward passes (Jacobian-vector products) when ``d`` is smaller
    than the number of outputs, else one backward pass per output entry.
    """
    u = u.detach()
    d = u.numel()
    if d == 0:
        with torch.no_grad():
            out = fn(u)
        return out, out.new_zeros(out.shape[0], out[0].numel(), 0)

    def with_output(v: Tensor) -> tuple[Tensor, Tensor]:
        out = fn(v)
        return out, out.detach()

    try:
        jac, out = torch.func.jacrev(with_output, has_aux=True)(u)
        return out, jac.detach().reshape(out.shape[0], -1, d)
    except RuntimeError as err:
        if "functorch" not in str(err) and "Batching rule" not in str(err):
            raise
    u = u.requires_grad_(True)
    out = fn(u)
    flat = out.reshape(-1)
    rows: list[Tensor] = []
    if d < flat.numel():
        probe = torch.zeros_like(flat, requires_grad=True)
        (vjp,) = torch.autograd.grad(flat, u, probe, create_graph=True, allow_unused=True)
        for i in range(d):
            col = None
            if vjp is not None and vjp.requires_grad:
                (col,) = torch.autograd.grad(vjp[i], probe, retain_graph=True, allow_unused=True)
            rows.append(flat.new_zeros(flat.numel()) if col is None else col)
        jac = torch.stack(rows, -1)
    else:
        for i in range(flat.numel()):
            (row,) = torch.autograd.grad(flat[i], u, retain_graph=True, allow_unused=True)
            rows.append(u.new_zeros(d) if row is None else row)
        jac = torch.stack(rows)
    out = out.detach()
    return out, jac.detach().reshape(out.shape[0], -1, d)


# ------------------------------------------------------------------- likelihood curvature
@dataclass
class LossCurvature:
    r"""The Hessian :math:`\Lambda_n` of :math:`-\log p(y_n \mid f_n)` in the network output.

    Built from the observation site's distribution (:meth:`from_distribution`):

    * Gaussian :math:`N(f, \sigma^2)`: :math:`\Lambda = \mathrm{diag}(\sigma^{-2})`, square root
      :math:`\mathrm{diag}(\sigma^{-1})` (``sqrt_precision`` keeps the graph to :math:`\sigma`);
    * Categorical with logits :math:`f`: :math:`\Lambda = \mathrm{diag}(p) - p p^\top` with the
      square root :math:`L = \mathrm{diag}(\sqrt p) - p \sqrt p^\top` (:math:`L L^\top = \Lambda`
      because :math:`\sum_c p_c = 1`), block-diagonal over extra output axes.

    Attributes
    ----------
    kind : {"gaussian", "categorical"}
    values : Tensor
        ``(B, K)`` :math:`1/\sigma` per output entry, or ``(B, S, C)`` class probabilities.
    """

    kind: str
    values: Tensor

    @classmethod
    def from_distribution(cls, fn: Any) -> LossCurvature:
        r"""From the observation site's distribution (``Normal(f, sigma)`` or logits ``f``)."""
        base = fn
        while isinstance(base, Independent):
            base = base.base_dist
        if isinstance(base, Normal):
            scale = base.scale.expand(base.loc.shape)
            return cls("gaussian", (1.0 / scale).reshape(scale.shape[0], -1))
        if isinstance(base, Categorical):
            probs = base.probs.detach()
            return cls("categorical", probs.reshape(probs.shape[0], -1, probs.shape[-1]))
        raise ValueError(
            "the generalised Gauss-Newton structures need a Gaussian or Categorical observation "
            f"site, got {type(base).__name__}; use structure='full'"
        )

    def factor(self, jac: Tensor) -> Tensor:
        r"""``M`` ``(B, K, d)`` with :math:`\sum_k M_{nk} M_{nk}^\top = J_n^\top \Lambda_n J_n`."""
        if self.kind == "gaussian":
            return jac * self.values.to(jac)[..., None]
        probs = self.values.to(jac)
        batch, groups, classes = probs.shape
        j = jac.reshape(batch, groups, classes, -1)
        mean = (probs[..., None] * j).sum(2, keepdim=True)
        return (probs.sqrt()[..., None] * (j - mean)).reshape(batch, groups * classes, -1)

    def columns(self, out_shape: torch.Size) -> Iterator[tuple[Tensor, Tensor | None]]:
        r"""The columns of :math:`L_n` as output cotangents ``(B, ...)`` plus per-row weights.

        Back-propagating column ``c`` and multiplying by its weight ``(B,)`` (``None``: 1) gives
        every data point's :math:`\partial (L_n^\top f_n)_c / \partial(\cdot)` at once, because
        data points do not mix in the network.
        """
        batch = out_shape[0]
        if self.kind == "gaussian":
            count = self.values.shape[1]
            for c in range(count):
                cot = self.values.new_zeros(batch, count)
                cot[:, c] = 1.0
                yield cot.detach().reshape(out_shape), self.values[:, c]
            return
        probs = self.values
        _, groups, classes = probs.shape
        root = probs.sqrt()
        for s in range(groups):
            for c in range(classes):
                cot = probs.new_zeros(probs.shape)
                cot[:, s] = -probs[:, s] * root[:, s, c, None]
                cot[:, s, c] += root[:, s, c]
                yield cot.reshape(out_shape), None


LossSpec = LossCurvature | Callable[[Tensor], LossCurvature]


def _resolve_loss(loss: LossSpec, out: Tensor) -> LossCurvature:
    """A :class:`LossCurvature`, or one built from the network output ``out``."""
    return loss if isinstance(loss, LossCurvature) else loss(out)


def ggn_diagonal(run: Callable[[Tensor], Tensor], u: Tensor, loss: LossSpec) -> Tensor:
    r"""Diagonal of the GGN :math:`\sum_n J_n^\top \Lambda_n J_n` over ``u`` ``(d,)``.

    ``run(u)`` is the network output on a batch, ``loss`` the :class:`LossCurvature` there (or
    a function of the output that builds it). Differentiable in hyperparameters the loss
    curvature depends on (the Gaussian noise).
    """
    out, jac = output_jacobian(run, u)
    m = _resolve_loss(loss, out).factor(jac)
    return (m * m).sum((0, 1))


# -------------------------------------------------------------------------------------- KFAC
@dataclass
class KronLayer:
    r"""A layer whose weight gradient is :math:`\sum_t g_t a_t^\top` (KFAC applies).

    Attributes
    ----------
    module : nn.Module
    kind : {"linear", "conv"}
        How inputs become rows ``a_t``: the last axis, or :func:`torch.nn.functional.unfold`.
    weight : str
        Qualified name of the ``(out, ...)`` weight site.
    bias : str or None
        Qualified name of the bias site (its GGN block is computed exactly).
    """

    module: nn.Module
    kind: str
    weight: str
    bias: str | None


#: Module types with a KFAC rule: ``type -> (kind, weight attribute, bias attribute)``. The RPP
#: residual ``B`` enters ``F.linear(x, unvec(Q a) + B)``, so its gradient is ``g x^T`` like a
#: linear weight; the equivariant coefficients ``a`` are not Kronecker-structured.
KFAC_LAYERS: dict[type[nn.Module], tuple[str, str, str]] = {
    nn.Linear: ("linear", "weight", "bias"),
    nn.Conv2d: ("conv", "weight", "bias"),
    RPPLinear: ("linear", "residual", "bias_residual"),
}


def _kfac_rule(module: nn.Module) -> tuple[str, str, str] | None:
    for cls, rule in KFAC_LAYERS.items():
        if type(module) is cls:
            if isinstance(module, nn.Conv2d) and (
                module.groups != 1
                or module.padding_mode != "zeros"
                or (isinstance(module.padding, str) and module.padding != "valid")
            ):
                return None
            return rule
    return None


def find_kron_layers(network: nn.Module, sites: Sequence[str]) -> list[KronLayer]:
    r"""The KFAC layers of ``network`` whose weight is one of ``sites``."""
    wanted = set(sites)
    layers = []
    for prefix, module in network.named_modules():
        rule = _kfac_rule(module)
        if rule is None:
            continue
        kind, weight_attr, bias_attr = rule
        weight = f"{prefix}.{weight_attr}" if prefix else weight_attr
        bias = f"{prefix}.{bias_attr}" if prefix else bias_attr
        if weight in wanted and getattr(module, weight_attr, None) is not None:
            has_bias = getattr(module, bias_attr, None) is not None and bias in wanted
            layers.append(KronLayer(module, kind, weight, bias if has_bias else None))
    return layers


def _rows(layer: KronLayer, x: Tensor, batch: int) -> Tensor:
    r"""Inputs as ``(B, T, q)`` rows: the last axis, or unfolded convolution patches."""
    if layer.kind == "conv":
        conv = layer.module
        assert isinstance(conv, nn.Conv2d)
        padding = 0 if conv.padding == "valid" else conv.padding
        patches = F.unfold(
            x,
            conv.kernel_size,
            dilation=conv.dilation,
            padding=padding,  # type: ignore[arg-type]
            stride=conv.stride,
        )
        return patches.transpose(1, 2)
    return x.reshape(batch, -1, x.shape[-1])


def _grads(layer: KronLayer, g: Tensor, batch: int) -> Tensor:
    r"""Output cotangents as ``(B, T, p)``."""
    if layer.kind == "conv":
        return g.reshape(batch, g.shape[1], -1).transpose(1, 2)
    return g.reshape(batch, -1, g.shape[-1])


#: Output columns of the loss's square root back-propagated together in one (vmapped) pass.
KFAC_COLUMNS_PER_PASS = 16


@dataclass
class KronFactors:
    r"""Accumulated KFAC statistics of one layer over the data.

    ``a_sum`` :math:`= \sum_n \frac1{T_n}\sum_t a_{nt} a_{nt}^\top` ``(q, q)``,
    ``g_sum`` :math:`= \sum_n \sum_c \sum_t g_{nct} g_{nct}^\top` ``(p, p)``, ``bias_sum``
    :math:`= \sum_n \sum_c (\sum_t g_{nct})(\sum_t g_{nct})^\top` (the exact bias GGN),
    ``count`` = N. The weight GGN is approximated by :math:`N \bar G \otimes \bar A =
    g_{sum} \otimes a_{sum} / N` in row-major order of the ``(p, q)`` weight.
    ``positions`` is T, the rows per example; with one (a linear layer called once) the bias GGN
    *is* ``g_sum``, accumulated once and shared.
    """

    a_sum: Tensor
    g_sum: Tensor
    bias_sum: Tensor | None
    count: int
    positions: int = 1

    @property
    def bias_is_g(self) -> bool:
        r"""Whether ``bias_sum`` equals ``g_sum`` exactly (one position per example)."""
        return self.bias_sum is not None and self.positions == 1


def kron_factors(
    run: Callable[[Tensor], Tensor],
    u: Tensor,
    loss: LossSpec,
    layers: Sequence[KronLayer],
    on_output: Callable[[Tensor], None] | None = None,
) -> dict[str, KronFactors]:
    r"""KFAC statistics of ``layers`` on one batch, keyed by weight site.

    ``run(u)`` must evaluate the network (with ``u`` in the graph of every layer's output). A
    layer called several times (weight sharing) has its calls stacked as extra positions ``t``.
    Layers never called are left out of the result. ``on_output`` receives the (detached)
    network output, for callers that need it too (the log-likelihood at the same point).
    """
    inputs: dict[int, list[Tensor]] = {id(layer): [] for layer in layers}
    outputs: dict[int, list[Tensor]] = {id(layer): [] for layer in layers}

    def capture(layer: KronLayer) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            inputs[id(layer)].append(args[0].detach())
            outputs[id(layer)].append(output)

        return hook

    hooks = [layer.module.register_forward_hook(capture(layer)) for layer in layers]
    try:
        out = run(u.detach().requires_grad_(True))
    finally:
        for h in hooks:
            h.remove()
    batch = out.shape[0]
    if on_output is not None:
        on_output(out.detach())
    loss = _resolve_loss(loss, out)
    used = [
        layer
        for layer in layers
        if outputs[id(layer)]
        and all(o.requires_grad and o.shape[0] == batch for o in outputs[id(layer)])
        and all(x.shape[0] == batch for x in inputs[id(layer)])
    ]
    result: dict[str, KronFactors] = {}
    for layer in used:
        pieces = [_rows(layer, x, batch) for x in inputs[id(layer)]]
        rows = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
        flat = rows.reshape(-1, rows.shape[-1])
        a_sum = (flat.T @ flat) / rows.shape[1]
        first = outputs[id(layer)][0]
        p = first.shape[1] if layer.kind == "conv" else first.shape[-1]
        bias = a_sum.new_zeros(p, p) if layer.bias is not None else None
        result[layer.weight] = KronFactors(
            a_sum, a_sum.new_zeros(p, p), bias, batch, positions=rows.shape[1]
        )
    targets = [o for layer in used for o in outputs[id(layer)]]
    if not targets:
        return result
    columns = list(loss.columns(out.shape))

    def accumulate(grads: Sequence[Tensor | None], weight: Tensor | None, rows: int) -> None:
        # ``grads`` hold ``rows`` = (columns x batch) cotangent rows of every layer output.
        i = 0
        for layer in used:
            parts = []
            for o in outputs[id(layer)]:
                g = grads[i]
                i += 1
                if g is None:
                    g = o.new_zeros((rows // batch, *o.shape))
                parts.append(_grads(layer, g.reshape(rows, *o.shape[1:]), rows))
            g_rows = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            if weight is not None:
                g_rows = g_rows * weight.to(g_rows)[:, None, None]
            factors = result[layer.weight]
            flat = g_rows.reshape(-1, g_rows.shape[-1])
            outer = flat.T @ flat
            factors.g_sum = factors.g_sum + outer
            if factors.bias_sum is not None:
                if not factors.bias_is_g:
                    gb = g_rows.sum(1)
                    outer = gb.T @ gb
                factors.bias_sum = factors.bias_sum + outer

    # Several columns per backward pass (vmap over the cotangents); networks whose autograd
    # Functions have no batching rule fall back to one pass per column.
    start = 0
    while start < len(columns):
        chunk = columns[start : start + KFAC_COLUMNS_PER_PASS]
        cots = torch.stack([cot.to(out) for cot, _ in chunk])
        weights = [w if w is not None else out.new_ones(batch) for _, w in chunk]
        weight = None if all(w is None for _, w in chunk) else torch.cat(weights)
        try:
            grads = torch.autograd.grad(
                out, targets, cots, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        except RuntimeError as err:
            if "vmap" not in str(err) and "atching rule" not in str(err):
                raise
            break
        accumulate(grads, weight, len(chunk) * batch)
        start += len(chunk)
    for cot, w in columns[start:]:
        grads = torch.autograd.grad(out, targets, cot.to(out), retain_graph=True, allow_unused=True)
        accumulate([None if g is None else g[None] for g in grads], w, batch)
    return result


# -------------------------------------------------------------------------- repaired parts
def _floor(eigenvalues: Tensor, relative: float) -> Tensor:
    top = eigenvalues.detach().abs().max() if eigenvalues.numel() else eigenvalues.new_ones(())
    return torch.clamp(relative * top, min=torch.finfo(eigenvalues.dtype).tiny)


@dataclass
class KroneckerEigenBlock(Block):
    r"""A Gaussian over a row-major ``(p, q)`` matrix in the eigenbasis of Kronecker factors.

    KFAC with an isotropic prior (Ritter et al. 2018; laplace-torch's ``KronLaplace``): the
    precision :math:`U \mathrm{diag}(N^{-1}\lambda^G \otimes \lambda^A + \delta)U^\top` with
    :math:`U = U_G \otimes U_A` is not a Kronecker product, but its eigenbasis is. Stored:
    ``rows`` :math:`U_G` ``(p, p)``, ``cols`` :math:`U_A` ``(q, q)`` and ``variances``
    ``(p, q)``, the (repaired) inverse eigenvalues. Draws are
    ``W = loc + U_G (Z * sqrt(variances)) U_A^T`` with standard normal ``Z``.
    """

    rows: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    cols: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    variances: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    kind = "kronecker_eigen"

    def sample(self, num: int, generator: torch.Generator | None) -> Tensor:
        p, q = self.variances.shape
        z = self._noise(num, p * q, generator).reshape(num, p, q) * self.variances.sqrt()
        return self.loc + (self.rows @ z @ self.cols.T).reshape(num, p * q)

    def covariance(self) -> Tensor:
        basis = torch.kron(self.rows, self.cols)
        return basis @ torch.diag(self.variances.reshape(-1)) @ basis.T

    def tensors(self) -> dict[str, Tensor]:
        return {
            "loc": self.loc,
            "rows": self.rows,
            "cols": self.cols,
            "variances": self.variances,
        }


# Posterior files name their block kinds; register this one so saved Laplace posteriors load.
_posterior._BLOCKS.setdefault(KroneckerEigenBlock.kind, KroneckerEigenBlock)


class CurvaturePart(abc.ABC):
    r"""The (repaired) precision of a Gaussian over a run of sites.

    Attributes
    ----------
    names : list of str
        The sites, in the order of the flattened vector.
    dim : int
    num_repaired : int
        Eigenvalues raised to the floor.
    method : str
        How it was computed (reported in the posterior ``info``).
    """

    names: list[str]
    dim: int
    num_repaired: int
    method: str

    @abc.abstractmethod
    def logdet(self) -> Tensor:
        r"""Log-determinant of the repaired precision (differentiable)."""

    @abc.abstractmethod
    def block(self, loc: Tensor) -> Block:
        r"""The posterior block with mean ``loc`` ``(dim,)`` and the inverse precision."""


class DensePrecision(CurvaturePart):
    r"""A dense precision ``(d, d)`` (exact Hessian): eigenvalue-clipped, a :class:`FullBlock`.

    With ``eigen_block`` the posterior block keeps the eigendecomposition instead (a
    :class:`KroneckerEigenBlock` with a ``(1, 1)`` column factor: draws
    ``loc + U (z * sqrt(1 / lambda))``), which spares forming the covariance and its Cholesky
    factor: used for KFAC bias blocks, whose eigenbasis is their layer's ``G`` factor's.
    """

    def __init__(
        self,
        names: Sequence[str],
        matrix: Tensor,
        *,
        floor: float = EIGENVALUE_FLOOR,
        method: str = "hessian",
        absolute_floor: Tensor | None = None,
        decomposition: tuple[Tensor, Tensor | None] | None = None,
        eigen_block: bool = False,
    ) -> None:
        self.names = list(names)
        self.eigen_block = eigen_block
        self.matrix = 0.5 * (matrix + matrix.T).double()
        self.dim = int(matrix.shape[0])
        self.method = method
        self._vectors: Tensor | None = None
        if decomposition is not None:
            # Known already (a KFAC bias block shares the eigenbasis of its layer's G factor).
            self.eigenvalues = decomposition[0].double()
            if decomposition[1] is not None and not self.matrix.requires_grad:
                self._vectors = decomposition[1].double()
        elif self.matrix.requires_grad:
            # Differentiable evidence: eigenvalues alone (their gradient needs no eigenvectors).
            self.eigenvalues = torch.linalg.eigvalsh(self.matrix)
        else:
            # One decomposition serves the evidence, Newton steps and the posterior block.
            self.eigenvalues, self._vectors = torch.linalg.eigh(self.matrix)
        self.floor = _floor(self.eigenvalues, floor)
        # Eigenvalues below the floor (the precision is not positive definite there) are
        # replaced by ``fill``: the floor itself or, when given, the smallest prior precision,
        # which keeps a repaired posterior no wider than the prior in any direction.
        self.fill = self.floor
        if absolute_floor is not None:
            self.fill = torch.maximum(self.floor, absolute_floor.detach().double().reshape(()))
        self.num_repaired = int((self.eigenvalues.detach() < self.floor).sum())

    def _repaired(self, values: Tensor) -> Tensor:
        return torch.where(values < self.floor.detach(), self.fill.detach().to(values), values)

    def logdet(self) -> Tensor:
        values = self.eigenvalues
        return torch.where(values < self.floor, self.fill.to(values), values).log().sum()

    def _eigh(self) -> tuple[Tensor, Tensor]:
        if self._vectors is not None:
            return self._repaired(self.eigenvalues), self._vectors
        values, vectors = torch.linalg.eigh(self.matrix.detach())
        return self._repaired(values), vectors

    def solve(self, rhs: Tensor) -> Tensor:
        r""":math:`H^{-1} b` with the repaired eigenvalues (a Newton direction)."""
        values, vectors = self._eigh()
        out = vectors @ ((vectors.T @ rhs.detach().double()) / values)
        return out.to(rhs.dtype)

    def block(self, loc: Tensor) -> Block:
        values, vectors = self._eigh()
        if self.eigen_block:
            return KroneckerEigenBlock(
                list(self.names),
                loc.detach(),
                rows=vectors.to(loc.dtype),
                cols=vectors.new_ones(1, 1).to(loc.dtype),
                variances=(1.0 / values)[:, None].to(loc.dtype),
            )
        cov = (vectors / values) @ vectors.T
        tril = torch.linalg.cholesky(0.5 * (cov + cov.T))
        return FullBlock(list(self.names), loc.detach(), scale_tril=tril.to(loc.dtype))


class DiagonalPrecision(CurvaturePart):
    r"""A diagonal precision ``(d,)``: entries clipped to the floor, a :class:`DiagonalBlock`."""

    def __init__(
        self,
        names: Sequence[str],
        diagonal: Tensor,
        *,
        floor: float = EIGENVALUE_FLOOR,
        method: str = "diag-ggn",
    ) -> None:
        self.names = list(names)
        self.diagonal = diagonal.double()
        self.dim = int(diagonal.shape[0])
        self.method = method
        self.floor = _floor(self.diagonal, floor)
        self.num_repaired = int((self.diagonal.detach() < self.floor).sum())

    def logdet(self) -> Tensor:
        return self.diagonal.clamp_min(self.floor).log().sum()

    def block(self, loc: Tensor) -> Block:
        scale = self.diagonal.detach().clamp_min(self.floor.detach()).rsqrt()
        return DiagonalBlock(list(self.names), loc.detach(), scale=scale.to(loc.dtype))


class KroneckerPrecision(CurvaturePart):
    r"""KFAC precision :math:`N^{-1} G_{sum} \otimes A_{sum} + \delta I` of a ``(p, q)`` weight.

    The factors are eigendecomposed; the precision's eigenvalues are
    :math:`\lambda^G_i \lambda^A_j / N + \delta` (factor eigenvalues below 0 from round-off are
    set to 0 first), repaired like any other, and stored as a :class:`KroneckerEigenBlock`.
    """

    def __init__(
        self,
        name: str,
        factors: KronFactors,
        prior_precision: Tensor,
        *,
        floor: float = EIGENVALUE_FLOOR,
    ) -> None:
        self.names = [name]
        self.method = "kron"
        g = factors.g_sum.double()
        a = factors.a_sum.double()
        self.g, self.a = 0.5 * (g + g.T), 0.5 * (a + a.T)
        self.count = factors.count
        self.delta = prior_precision.double()
        self.dim = int(g.shape[0] * a.shape[0])
        self._bases: tuple[Tensor, Tensor] | None = None
        if self.g.requires_grad or self.a.requires_grad or self.delta.requires_grad:
            # Differentiable evidence: eigenvalues alone (their gradient needs no eigenvectors).
            eig_g = torch.linalg.eigvalsh(self.g)
            eig_a = torch.linalg.eigvalsh(self.a)
            rows = None
        else:
            # One decomposition serves the evidence and the posterior block.
            eig_g, rows = torch.linalg.eigh(self.g)
            eig_a, cols = torch.linalg.eigh(self.a)
            self._bases = (rows, cols)
        #: The eigendecomposition of ``G_sum`` (vectors ``None`` on the differentiable path),
        #: before round-off clipping: shared with the layer's bias block when that is ``G_sum``.
        self.g_decomposition: tuple[Tensor, Tensor | None] = (eig_g, rows)
        self._eig = (eig_g.clamp_min(0.0), eig_a.clamp_min(0.0))
        self.eigenvalues = torch.outer(*self._eig) / self.count + self.delta
        self.floor = _floor(self.eigenvalues, floor)
        self.num_repaired = int((self.eigenvalues.detach() < self.floor).sum())

    def logdet(self) -> Tensor:
        return self.eigenvalues.clamp_min(self.floor).log().sum()

    def block(self, loc: Tensor) -> Block:
        if self._bases is None:
            eig_g, rows = torch.linalg.eigh(self.g.detach())
            eig_a, cols = torch.linalg.eigh(self.a.detach())
            eig_g, eig_a = eig_g.clamp_min(0.0), eig_a.clamp_min(0.0)
        else:
            (rows, cols), (eig_g, eig_a) = self._bases, self._eig
        precision = torch.outer(eig_g, eig_a) / self.count
        precision = (precision + self.delta.detach()).clamp_min(self.floor.detach())
        dtype = loc.dtype
        return KroneckerEigenBlock(
            list(self.names),
            loc.detach(),
            rows=rows.to(dtype),
            cols=cols.to(dtype),
            variances=(1.0 / precision).to(dtype),
        )


def gaussian_log_normaliser(dim: int) -> float:
    r""":math:`\frac d2 \log 2\pi`, the normaliser of a ``dim``-dimensional Gaussian."""
    return 0.5 * dim * math.log(2.0 * math.pi)
