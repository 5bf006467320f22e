r"""Matrix products that the CPU BLAS parallelises poorly, split so that each thread gets its own.

At two threads the BLAS runs some of the layers' products no faster than at one, or barely
(BENCHMARKS.md, session 5): a skinny left factor against a wide right one, such as the PowerLayer's
DFT products ``(30 x 28) @ (28 x 28672)``, and long reductions into a small result, such as the
gradient of the non-stationary kernel net's output layer ``(33 x 29008) @ (29008 x 256)``. A
``bmm`` over blocks parallelises over the blocks instead, one per thread: about 1.3-2x faster at
two threads, the same at one (where nothing is split). Only on the CPU; other devices and empty
operands go straight to ``torch.mm``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _blocks(size: int, limit: int) -> int:
    """The largest divisor of ``size`` that is at most ``limit`` (1 when none above 1)."""
    return next((s for s in range(min(limit, size), 1, -1) if size % s == 0), 1)


def split_mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    r"""``a @ b`` (into ``out`` when given, in the same layout), ``a`` split into row blocks.

    Each block reads all of ``b``, so a skinny ``a`` (under 256 rows) is split in at most two;
    a tall one in up to one block per thread.
    """
    m = a.shape[0]
    split = _blocks(m, min(torch.get_num_threads(), m if m >= 256 else 2))
    if split == 1 or a.device.type != "cpu" or a.numel() == 0 or b.numel() == 0:
        return torch.mm(a, b) if out is None else torch.mm(a, b, out=out)
    blocks = a.unflatten(0, (split, m // split))
    shared = b.expand(split, *b.shape)
    if out is None:
        return torch.bmm(blocks, shared).view(m, -1)
    torch.bmm(blocks, shared, out=out.view(split, m // split, -1))
    return out


def split_addmm_(acc: Tensor, a: Tensor, b: Tensor) -> Tensor:
    r"""``acc += a @ b`` in place, the reduction over the columns of ``a`` split into one block
    per thread whose partial products are summed (for a small ``acc`` and a long reduction)."""
    k = a.shape[1]
    split = _blocks(k, torch.get_num_threads())
    if split == 1 or a.device.type != "cpu" or a.numel() == 0 or b.numel() == 0:
        return acc.addmm_(a, b)
    parts = torch.bmm(
        a.unflatten(1, (split, k // split)).transpose(0, 1), b.unflatten(0, (split, k // split))
    )
    return acc.add_(parts.sum(0))
