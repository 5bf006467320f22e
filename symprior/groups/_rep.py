r"""Representations built from a group's defining representation (EMLP's algebra of reps).

``V(G)`` is the defining representation, ``Scalar(G)`` the trivial one. ``r1 * r2`` is the tensor
product, ``k * r`` is ``k`` copies, ``r1 + r2`` the direct sum and ``r.T`` the dual. ``rho`` maps
group elements ``(..., n, n)`` to matrices ``(..., size, size)``; ``drho`` maps Lie-algebra elements
to the derivative of ``rho`` at the identity,
:math:`d\rho(A) = \frac{d}{dt}\rho(e^{tA})|_{t=0}`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from symprior.groups._group import Group

__all__ = ["DualRep", "Rep", "Scalar", "SumRep", "TensorRep", "V"]


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """Batched Kronecker product of ``(..., p, q)`` and ``(..., r, s)``."""
    out = a[..., :, None, :, None] * b[..., None, :, None, :]
    return out.reshape(*out.shape[:-4], a.shape[-2] * b.shape[-2], a.shape[-1] * b.shape[-1])


class Rep:
    r"""A finite-dimensional representation of a :class:`~symprior.groups.Group`.

    Subclasses implement :meth:`rho`, :meth:`drho`, ``size`` and ``_key``.
    """

    G: Group

    @property
    def size(self) -> int:
        raise NotImplementedError

    def _key(self) -> tuple[Hashable, ...]:
        raise NotImplementedError

    def rho(self, g: Tensor) -> Tensor:
        r"""The representation matrices ``(..., size, size)`` of elements ``(..., n, n)``."""
        raise NotImplementedError

    def drho(self, a: Tensor) -> Tensor:
        r"""The Lie-algebra representation ``(..., size, size)`` of ``a`` ``(..., n, n)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- acting
    def act(self, g: Tensor, x: Tensor) -> Tensor:
        r"""Apply :math:`\rho(g)` to the last axis of ``x``.

        ``g`` is one element ``(n, n)`` or a batch ``(..., n, n)`` that broadcasts against the
        leading axes of ``x`` (shape ``(..., size)``). Computed in ``x``'s dtype and device.
        """
        if not isinstance(x, Tensor):
            raise TypeError("x must be a torch.Tensor whose last axis has the representation size")
        if x.ndim == 0 or x.shape[-1] != self.size:
            raise ValueError(
                f"x must have last dimension {self.size} (the size of {self!r}), got shape "
                f"{tuple(x.shape)}"
            )
        r = self.rho(self.G.check_elements(g).to(device=x.device)).to(x.dtype)
        return (r @ x[..., None])[..., 0]

    # ---------------------------------------------------------------------- algebra
    def __mul__(self, other: object) -> Rep:
        if isinstance(other, Rep):
            return TensorRep(self, other)
        if isinstance(other, int) and not isinstance(other, bool):
            return SumRep([(self, other)])
        return NotImplemented

    def __rmul__(self, other: object) -> Rep:
        if isinstance(other, int) and not isinstance(other, bool):
            return SumRep([(self, other)])
        return NotImplemented

    def __add__(self, other: object) -> Rep:
        if isinstance(other, Rep):
            return SumRep([(self, 1), (other, 1)])
        return NotImplemented

    def __pow__(self, k: int) -> Rep:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"a representation power needs an int k >= 1, got {k!r}")
        out: Rep = self
        for _ in range(k - 1):
            out = out * self
        return out

    @property
    def T(self) -> Rep:
        r"""The dual representation :math:`\rho^*(g) = \rho(g^{-1})^\top`."""
        return DualRep(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rep) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def summands(self) -> list[tuple[Rep, int]]:
        r"""The direct-sum decomposition as ``[(rep, multiplicity), ...]`` in layout order."""
        return [(self, 1)]


class V(Rep):
    r"""The defining representation :math:`\rho(g) = g` of size ``n``.

    Examples
    --------
    >>> from symprior.groups import SO3
    >>> (V(SO3()) * V(SO3())).size
    9
    """

    def __init__(self, G: Group) -> None:
        if not isinstance(G, Group):
            raise TypeError(f"V expects a symprior.groups.Group, got {type(G).__name__}")
        self.G = G

    @property
    def size(self) -> int:
        return self.G.n

    def _key(self):
        return ("V", self.G._key())

    def rho(self, g: Tensor) -> Tensor:
        return self.G.check_elements(g)

    def drho(self, a: Tensor) -> Tensor:
        return self.G.check_elements(a, "a")

    def __repr__(self) -> str:
        return f"V({self.G!r})"


class Scalar(Rep):
    r"""The trivial representation of size 1: :math:`\rho(g) = 1`, :math:`d\rho(A) = 0`."""

    def __init__(self, G: Group) -> None:
        if not isinstance(G, Group):
            raise TypeError(f"Scalar expects a symprior.groups.Group, got {type(G).__name__}")
        self.G = G

    @property
    def size(self) -> int:
        return 1

    def _key(self):
        return ("Scalar", self.G._key())

    def rho(self, g: Tensor) -> Tensor:
        g = self.G.check_elements(g)
        return g.new_ones(*g.shape[:-2], 1, 1)

    def drho(self, a: Tensor) -> Tensor:
        a = self.G.check_elements(a, "a")
        return a.new_zeros(*a.shape[:-2], 1, 1)

    def __repr__(self) -> str:
        return f"Scalar({self.G!r})"


def _same_group(reps: Sequence[Rep], what: str) -> Group:
    for r in reps:
        if not isinstance(r, Rep):
            raise TypeError(f"{what} expects representations, got {type(r).__name__}")
    G = reps[0].G
    for r in reps[1:]:
        if r.G != G:
            raise ValueError(f"{what} of representations of different groups: {G!r} and {r.G!r}")
    return G


class TensorRep(Rep):
    r"""Tensor product :math:`\rho_1 \otimes \rho_2` (row-major Kronecker layout).

    :math:`d(\rho_1 \otimes \rho_2)(A) = d\rho_1(A) \otimes I + I \otimes d\rho_2(A)`.
    """

    def __init__(self, left: Rep, right: Rep) -> None:
        self.G = _same_group([left, right], "a tensor product")
        self.left, self.right = left, right

    @property
    def size(self) -> int:
        return self.left.size * self.right.size

    def _key(self):
        return ("Tensor", self.left._key(), self.right._key())

    def rho(self, g: Tensor) -> Tensor:
        return _kron(self.left.rho(g), self.right.rho(g))

    def drho(self, a: Tensor) -> Tensor:
        dl, dr = self.left.drho(a), self.right.drho(a)
        il = torch.eye(self.left.size, dtype=a.dtype, device=a.device)
        ir = torch.eye(self.right.size, dtype=a.dtype, device=a.device)
        return _kron(dl, ir.expand_as(dr)) + _kron(il.expand_as(dl), dr)

    def __repr__(self) -> str:
        return f"({self.left!r} ⊗ {self.right!r})"


class DualRep(Rep):
    r"""The dual :math:`\rho^*(g) = \rho(g^{-1})^\top`, :math:`d\rho^*(A) = -d\rho(A)^\top`."""

    def __init__(self, rep: Rep) -> None:
        if not isinstance(rep, Rep):
            raise TypeError(f"DualRep expects a representation, got {type(rep).__name__}")
        self.G = rep.G
        self.rep = rep

    @property
    def size(self) -> int:
        return self.rep.size

    def _key(self):
        return ("Dual", self.rep._key())

    def rho(self, g: Tensor) -> Tensor:
        # Contiguous copies rather than transposed views, so that callers can flatten or
        # ``torch.kron`` the matrices like those of any other representation.
        return self.rep.rho(self.G.inverse(g)).transpose(-1, -2).contiguous()

    def drho(self, a: Tensor) -> Tensor:
        return (-self.rep.drho(a)).transpose(-1, -2).contiguous()

    @property
    def T(self) -> Rep:
        return self.rep

    def __repr__(self) -> str:
        return f"{self.rep!r}*"


class SumRep(Rep):
    r"""Direct sum :math:`\bigoplus_i m_i \rho_i` in block-diagonal layout.

    Nested sums are flattened and adjacent equal summands merged, so ``50 * V + 20 * Scalar`` is
    stored as two summands with multiplicities 50 and 20.
    """

    def __init__(self, parts: Sequence[tuple[Rep, int]]) -> None:
        flat: list[tuple[Rep, int]] = []
        for rep, mult in parts:
            if isinstance(mult, bool) or not isinstance(mult, int) or mult < 0:
                raise ValueError(f"multiplicities must be non-negative ints, got {mult!r}")
            for sub, sub_mult in rep.summands():
                if mult * sub_mult == 0:
                    continue
                if flat and flat[-1][0] == sub:
                    flat[-1] = (sub, flat[-1][1] + mult * sub_mult)
                else:
                    flat.append((sub, mult * sub_mult))
        if not flat:
            raise ValueError("a direct sum needs at least one summand with positive multiplicity")
        self.G = _same_group([r for r, _ in flat], "a direct sum")
        self.parts = flat

    def summands(self) -> list[tuple[Rep, int]]:
        return list(self.parts)

    @property
    def size(self) -> int:
        return sum(r.size * m for r, m in self.parts)

    def _key(self):
        if len(self.parts) == 1 and self.parts[0][1] == 1:
            return self.parts[0][0]._key()
        return ("Sum", tuple((r._key(), m) for r, m in self.parts))

    def _block_diag(self, blocks: list[Tensor]) -> Tensor:
        batch = blocks[0].shape[:-2]
        out = blocks[0].new_zeros(*batch, self.size, self.size)
        i = 0
        for (rep, mult), block in zip(self.parts, blocks, strict=True):
            for _ in range(mult):
                out[..., i : i + rep.size, i : i + rep.size] = block
                i += rep.size
        return out

    def rho(self, g: Tensor) -> Tensor:
        return self._block_diag([r.rho(g) for r, _ in self.parts])

    def drho(self, a: Tensor) -> Tensor:
        return self._block_diag([r.drho(a) for r, _ in self.parts])

    def __repr__(self) -> str:
        return " + ".join(f"{m}*{r!r}" if m > 1 else repr(r) for r, m in self.parts)
