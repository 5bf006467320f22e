r"""Equivariant bases: orthonormal bases of :math:`\{W : \rho_{out}(g) W = W \rho_{in}(g)\}`.

Following EMLP (Finzi et al. 2021), the space is the common nullspace of one linear constraint per
generator: :math:`d\rho_{out}(A) W - W d\rho_{in}(A)` for every Lie-algebra generator ``A`` and
:math:`\rho_{out}(h) W - W \rho_{in}(h)` for every discrete generator ``h``. With ``vec`` row-major
(``W.reshape(-1)``), :math:`\mathrm{vec}(M W N) = (M \otimes N^\top)\,\mathrm{vec}(W)`.

Direct sums are solved block by block: one basis per pair of summands, reused for every pair of
copies. Small blocks use a dense float64 SVD; large blocks never form the constraint matrix and
instead project random vectors onto the nullspace with conjugate gradients (a Krylov solver whose
cost per iteration is a few ``size x size`` matrix products).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import torch
from torch import Tensor

from symprior._caching import filling_cache
from symprior.groups._rep import Rep

__all__ = ["BasisBlock", "BlockBasis", "equivariant_basis", "equivariant_basis_blocks"]

#: Blocks whose ``vec(W)`` has more entries than this use the matrix-free Krylov solver.
DENSE_LIMIT = 256

#: :meth:`BlockBasis.weight` forms the blocks of output summands of up to this size row by row
#: (one product per row of the summand, joined by concatenation) rather than with one product
#: and a transposing copy, which moves runs of ``in_size`` elements and whose backward is slower
#: still. Measured on RPP-MLP steps: 0.91 of the time for SO(2) (``V``, two rows), 1.1 with
#: SO(3)'s ``V`` (three rows) done row by row, so larger summands keep the one product.
_ROW_PRODUCTS = 2


def _generators(rep_in: Rep, rep_out: Rep) -> list[tuple[Tensor, Tensor]]:
    """Pairs ``(M_out, M_in)`` such that the constraints read ``M_out W - W M_in = 0``.

    The matrices are returned as contiguous float64 copies: representations may hand back views
    (a dual's matrices are transposes), and ``torch.kron`` fails on some non-contiguous inputs
    ("view size is not compatible with input tensor's size and stride").
    """
    G = rep_in.G
    ops = []
    for a in G.lie_algebra:
        ops.append((rep_out.drho(a), rep_in.drho(a)))
    for h in G.discrete_generators:
        ops.append((rep_out.rho(h), rep_in.rho(h)))
    return [
        (
            m_out.to(torch.float64).contiguous(),
            m_in.to(torch.float64).contiguous(),
        )
        for m_out, m_in in ops
    ]


def _nullspace_dense(ops: list[tuple[Tensor, Tensor]], n_out: int, n_in: int) -> Tensor:
    eye_out = torch.eye(n_out, dtype=torch.float64)
    eye_in = torch.eye(n_in, dtype=torch.float64)
    if not ops:
        return torch.eye(n_out * n_in, dtype=torch.float64)
    rows = [
        torch.kron(m_out, eye_in) - torch.kron(eye_out, m_in.mT.contiguous()) for m_out, m_in in ops
    ]
    c = torch.cat(rows)
    _, s, vh = torch.linalg.svd(c, full_matrices=True)
    scale = max(1.0, float(s[0])) if s.numel() else 1.0
    tol = 1e-9 * scale
    rank = int((s > tol).sum())
    return vh[rank:].T.contiguous()


def _nullspace_krylov(
    ops: list[tuple[Tensor, Tensor]], n_out: int, n_in: int, *, seed: int = 0
) -> Tensor:
    r"""Nullspace of :math:`M = \sum_k L_k^\top L_k` without forming it.

    For random ``X``, conjugate gradients started at zero solve :math:`M \Delta = M X` with the
    minimum-norm solution, which lies in :math:`\mathrm{range}(M)`; hence :math:`X - \Delta` is
    the orthogonal projection of ``X`` onto :math:`\mathrm{null}(M)`. The number of probes is
    doubled until the projected block is rank deficient, so the whole nullspace is found.
    """
    gen = torch.Generator().manual_seed(seed)

    def apply(w: Tensor) -> Tensor:  # w: (p, n_out, n_in)
        out = torch.zeros_like(w)
        for m_out, m_in in ops:
            lw = m_out @ w - w @ m_in
            out = out + m_out.T @ lw - lw @ m_in.T
        return out

    probes = 16
    while True:
        x = torch.randn(probes, n_out, n_in, generator=gen, dtype=torch.float64)
        b = apply(x)
        delta = torch.zeros_like(x)
        r = b.clone()
        p = r.clone()
        rs = (r * r).sum((-1, -2))
        target = (1e-28 * (b * b).sum((-1, -2))).clamp_min(1e-300)
        for _ in range(20 * (n_out * n_in) + 100):
            if bool((rs <= target).all()):
                break
            mp = apply(p)
            alpha = rs / (p * mp).sum((-1, -2)).clamp_min(1e-300)
            alpha = torch.where(rs <= target, torch.zeros_like(alpha), alpha)
            delta = delta + alpha[:, None, None] * p
            r = r - alpha[:, None, None] * mp
            rs_new = (r * r).sum((-1, -2))
            beta = rs_new / rs.clamp_min(1e-300)
            p = r + beta[:, None, None] * p
            rs = rs_new
        q = (x - delta).reshape(probes, -1).T
        u, s, _ = torch.linalg.svd(q, full_matrices=False)
        rank = int((s > 1e-8 * max(1.0, float(s[0]))).sum()) if s.numel() else 0
        if rank < probes or probes >= n_out * n_in:
            basis = u[:, :rank]
            break
        probes *= 2
    return basis


def _solve_block(rep_in: Rep, rep_out: Rep) -> Tensor:
    n_in, n_out = rep_in.size, rep_out.size
    ops = _generators(rep_in, rep_out)
    if n_in * n_out <= DENSE_LIMIT or not ops:
        return _nullspace_dense(ops, n_out, n_in)
    return _nullspace_krylov(ops, n_out, n_in)


def _pieces(rep: Rep) -> list[tuple[Rep, Tensor]]:
    r"""Invariant coordinate subspaces of ``rep``: ``[(sub-representation, coordinates), ...]``.

    A direct sum splits into its copies; a tensor product of sums distributes over them,
    :math:`(\oplus_i a_i) \otimes (\oplus_j b_j) = \oplus_{ij} a_i \otimes b_j`, the pair
    :math:`(i, j)` on the Kronecker-layout coordinates ``(offset_i + k) * size_b + offset_j + l``;
    a dual follows its representation. Anything else is one piece.
    """
    from symprior.groups._rep import DualRep, SumRep, TensorRep

    if isinstance(rep, SumRep):
        out: list[tuple[Rep, Tensor]] = []
        offset = 0
        for sub, mult in rep.summands():
            for _ in range(mult):
                out += [(piece, offset + idx) for piece, idx in _pieces(sub)]
                offset += sub.size
        return out
    if isinstance(rep, TensorRep):
        left, right = _pieces(rep.left), _pieces(rep.right)
        if len(left) > 1 or len(right) > 1:
            size = rep.right.size
            return [
                (TensorRep(a, b), (ia[:, None] * size + ib[None, :]).reshape(-1))
                for a, ia in left
                for b, ib in right
            ]
    if isinstance(rep, DualRep):
        inner = _pieces(rep.rep)
        if len(inner) > 1:
            return [(DualRep(piece), idx) for piece, idx in inner]
    return [(rep, torch.arange(rep.size))]


@cache
def _block_basis_cached(rep_in: Rep, rep_out: Rep) -> Tensor:
    r"""The basis of one block; blocks whose representations split into smaller invariant pieces
    (tensor products of sums) are assembled from the bases between the pieces, which span the
    same space (the constraints do not couple different pairs of pieces) at a fraction of the
    cost of one large solve."""
    pieces_in, pieces_out = _pieces(rep_in), _pieces(rep_out)
    if len(pieces_in) == 1 and len(pieces_out) == 1:
        return _solve_block(rep_in, rep_out)
    n_in = rep_in.size
    columns = []
    for sub_out, idx_out in pieces_out:
        for sub_in, idx_in in pieces_in:
            q = _block_basis_cached(sub_in, sub_out)
            if q.shape[1] == 0:
                continue
            rows = (idx_out[:, None] * n_in + idx_in[None, :]).reshape(-1)
            block = q.new_zeros(rep_out.size * n_in, q.shape[1])
            block[rows] = q
            columns.append(block)
    if not columns:
        return torch.zeros(rep_out.size * n_in, 0, dtype=torch.float64)
    return torch.cat(columns, 1)


@dataclass(frozen=True)
class BasisBlock:
    r"""The basis of one pair of summands, repeated over their multiplicities.

    The weight rows ``out_offset : out_offset + out_mult * out_size`` and columns
    ``in_offset : in_offset + in_mult * in_size`` hold ``out_mult x in_mult`` copies of
    :math:`\mathrm{unvec}(Q c)`, each with its own coefficients.
    """

    out_offset: int
    out_mult: int
    out_size: int
    in_offset: int
    in_mult: int
    in_size: int
    basis: Tensor  # (out_size * in_size, r), float64

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @property
    def num_coeffs(self) -> int:
        return self.out_mult * self.in_mult * self.rank


@dataclass(frozen=True)
class BlockBasis:
    r"""An equivariant basis stored block-wise; :meth:`weight` maps coefficients to ``W``.

    Never materialises the ``(out*in, r)`` matrix, so hidden layers with hundreds of channels stay
    cheap: applying it costs one small matrix product per pair of summands, and the blocks are
    joined by concatenation (whose gradient is a set of views), not written into a zero matrix
    (whose gradient clones the whole of ``W`` once per block).
    """

    rep_in: Rep
    rep_out: Rep
    blocks: tuple[BasisBlock, ...]

    @property
    def num_coeffs(self) -> int:
        return sum(b.num_coeffs for b in self.blocks)

    def weight(self, coeffs: Tensor) -> Tensor:
        r"""The matrix :math:`W = \mathrm{unvec}(Q c)`, shape ``(rep_out.size, rep_in.size)``.

        ``coeffs`` has shape ``(num_coeffs,)``; computed in its dtype and on its device.
        """
        if coeffs.shape != (self.num_coeffs,):
            raise ValueError(
                f"coeffs must have shape ({self.num_coeffs},), got {tuple(coeffs.shape)}"
            )
        parts = []
        i = 0
        for b in self.blocks:
            shape = (b.out_mult * b.out_size, b.in_mult * b.in_size)
            c = coeffs[i : i + b.num_coeffs]
            i += b.num_coeffs
            if b.rank == 0:
                parts.append(coeffs.new_zeros(()).expand(shape))
            elif b.out_size == b.in_size == 1:  # copies of a scalar map: c times the basis entry
                parts.append(c.view(shape) * b.basis.to(coeffs).view(()))
            else:
                q = b.basis.to(coeffs).view(b.out_size, b.in_size, b.rank)
                c2 = c.view(-1, b.rank)
                if b.out_size <= _ROW_PRODUCTS:
                    # Row p of every copy (a, b): (a b, r) @ (r, q) is a contiguous run of W's
                    # rows (a, p), so the products for each p are joined by concatenation.
                    runs = [torch.mm(c2, qp.t()).view(b.out_mult, 1, -1) for qp in q]
                    block = torch.cat(runs, 1) if len(runs) > 1 else runs[0]
                else:
                    # One product for all (p, q), then (a, b, p, q) transposed to (a, p, b, q).
                    block = torch.mm(c2, q.view(-1, b.rank).t())
                    block = block.view(b.out_mult, b.in_mult, b.out_size, b.in_size)
                    block = block.transpose(1, 2)
                parts.append(block.reshape(shape))
        rows = self._bands
        if rows is None:  # blocks not laid out as a grid: write each into place
            w = coeffs.new_zeros(self.rep_out.size, self.rep_in.size)
            for b, part in zip(self.blocks, parts, strict=True):
                w[
                    b.out_offset : b.out_offset + b.out_mult * b.out_size,
                    b.in_offset : b.in_offset + b.in_mult * b.in_size,
                ] = part
            return w
        bands = [torch.cat(parts[a:z], 1) if z - a > 1 else parts[a] for a, z in rows]
        w = torch.cat(bands, 0) if len(bands) > 1 else bands[0]
        return w if w.stride(-1) != 0 else w.contiguous()

    @cached_property
    def _bands(self) -> tuple[tuple[int, int], ...] | None:
        r"""The runs ``[a, z)`` of :attr:`blocks` that make up each band of rows of ``W``, when
        the blocks tile it band by band, each band from the left (as
        :func:`equivariant_basis_blocks` lays them out); None otherwise."""
        runs: list[tuple[int, int]] = []
        row = col = height = 0
        for k, b in enumerate(self.blocks):
            if col == self.rep_in.size:  # the previous band is complete
                row, col = row + height, 0
            if b.out_offset != row or b.in_offset != col:
                return None
            if col == 0:
                runs.append((k, k + 1))
                height = b.out_mult * b.out_size
            elif b.out_mult * b.out_size != height:
                return None
            runs[-1] = (runs[-1][0], k + 1)
            col += b.in_mult * b.in_size
        if not runs or col != self.rep_in.size or row + height != self.rep_out.size:
            return None
        return tuple(runs)

    def dense(self) -> Tensor:
        r"""The full basis ``(rep_out.size * rep_in.size, num_coeffs)`` (float64)."""
        n_in = self.rep_in.size
        out = torch.zeros(self.rep_out.size * n_in, self.num_coeffs, dtype=torch.float64)
        col = 0
        for b in self.blocks:
            if b.rank == 0:
                continue
            rows = b.out_offset + torch.arange(b.out_mult * b.out_size).reshape(
                b.out_mult, 1, -1, 1
            )
            cols = b.in_offset + torch.arange(b.in_mult * b.in_size).reshape(1, b.in_mult, 1, -1)
            flat = rows * n_in + cols  # (out_mult, in_mult, out_size, in_size)
            copies = torch.arange(b.out_mult * b.in_mult).reshape(b.out_mult, b.in_mult, 1, 1, 1)
            target = col + copies * b.rank + torch.arange(b.rank)  # (..., 1, 1, rank)
            q = b.basis.reshape(1, 1, b.out_size, b.in_size, b.rank)
            out[flat[..., None], target] = q.expand(b.out_mult, b.in_mult, -1, -1, -1)
            col += b.num_coeffs
        return out


def _check_pair(rep_in: Rep, rep_out: Rep) -> None:
    for name, rep in (("rep_in", rep_in), ("rep_out", rep_out)):
        if not isinstance(rep, Rep):
            raise TypeError(f"{name} must be a symprior.groups.Rep, got {type(rep).__name__}")
    if rep_in.G != rep_out.G:
        raise ValueError(
            f"rep_in and rep_out are representations of different groups: {rep_in.G!r} and "
            f"{rep_out.G!r}"
        )


@cache
def _blocks_cached(rep_in: Rep, rep_out: Rep) -> BlockBasis:
    blocks = []
    out_off = 0
    for s, n_s in rep_out.summands():
        in_off = 0
        for r, m_r in rep_in.summands():
            q = _block_basis_cached(r, s)
            blocks.append(BasisBlock(out_off, n_s, s.size, in_off, m_r, r.size, q))
            in_off += m_r * r.size
        out_off += n_s * s.size
    return BlockBasis(rep_in, rep_out, tuple(blocks))


def equivariant_basis_blocks(rep_in: Rep, rep_out: Rep) -> BlockBasis:
    r"""The equivariant basis of ``rep_in -> rep_out`` in block form (cached).

    Examples
    --------
    >>> from symprior.groups import SO2, V, Scalar
    >>> G = SO2()
    >>> equivariant_basis_blocks(3 * V(G) + Scalar(G), 2 * V(G)).num_coeffs
    12
    """
    _check_pair(rep_in, rep_out)
    with filling_cache():
        return _blocks_cached(rep_in, rep_out)


def equivariant_basis(
    rep_in: Rep,
    rep_out: Rep,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Orthonormal basis ``(rep_out.size * rep_in.size, r)`` of the equivariant maps.

    Columns span :math:`\{W : \rho_{out}(g) W = W \rho_{in}(g)\ \forall g\}` with
    :math:`\mathrm{vec}(W) = W\text{.reshape}(-1)` (row-major). Solved in float64, block by block
    over direct sums (see module docstring), cached per ``(rep_in, rep_out)`` and returned on the
    requested ``device`` and ``dtype``.

    Examples
    --------
    >>> from symprior.groups import SO3, V
    >>> G = SO3()
    >>> equivariant_basis(V(G) * V(G), V(G)).shape  # the cross product
    torch.Size([27, 1])
    """
    return equivariant_basis_blocks(rep_in, rep_out).dense().to(device=device, dtype=dtype)
