r"""Non-stationary continuous filters: relaxed group convolutions on images (paper 004).

A group convolution :math:`h(u) = \int_G k(v^{-1}u) f(v)\, d\mu(v)` is equivariant because its
kernel is *stationary*. 004 (eq. 2) lets the kernel also depend on the absolute element
:math:`v` of the input,

.. math:: h(u) = \int_G k_\theta(v^{-1}u, v) f(v)\, d\mu(v),

and parameterises :math:`k_\theta` by random Fourier features of Lie-algebra coordinates
(eq. 6-8, :class:`RandomFourierKernel`) with filter-space frequencies ``omega`` and domain-space
frequencies ``omega_prime``. ``omega_prime = 0`` gives exactly the group convolution (Remark 2);
``omega = omega_prime = 0`` a constant kernel, i.e. local pooling over the support (Remark 3).
Table 1's models choose which subgroups are relaxed: ``soft=`` picks the coordinates of
:math:`v` that get a (learnable) non-zero ``omega_prime``; the others are fixed at zero.

Layers and layouts
------------------
* :class:`NonStationaryConv2d` -- T(2): ``(B, C, H, W) -> (B, C', H, W)``.
* :class:`NonStationaryLifting` -- SE(2): ``(B, C, H, W) -> (B, C', R, H, W)``; SO(2) acting on
  the plane about the image centre: ``(B, C, H, W) -> (B, C', R)``.
* :class:`NonStationaryGroupConv` -- SE(2): ``(B, C, R, H, W) -> (B, C', R, H, W)``; SO(2):
  ``(B, C, R) -> (B, C', R)``.

Axis ``R`` holds the rotation grid :math:`\theta_r = \theta_0 + 2\pi r / R`. Its action is
:func:`lifted_action` (spatial :func:`~symprior.groups.transform_image` plus a cyclic shift of
the rotation axis).

Coordinates
-----------
Points follow :func:`symprior.groups.image_coordinates` (origin at the image centre, ``y`` up,
pixels). Elements of SE(2) are written :math:`v = T(y) R(\varphi)`; a kernel sees

* filter space: :math:`v^{-1}u = T(R_\varphi^{-1}(x - y))\, R(\theta - \varphi)` as
  :math:`(R_\varphi^{-1}(x-y)/\rho,\ (\theta-\varphi)/2\pi)` with the support radius
  :math:`\rho` (so the disk is the unit disk);
* domain space: :math:`(y / s,\ \varphi / 2\pi)` with ``domain_scale`` :math:`s`
  (default: the image's larger side).

Angles are in turns; :class:`RandomFourierKernel` embeds them on the circle so the kernel is
smooth on SO(2) for every frequency. These are the coordinates of the semidirect product
:math:`T(2) \rtimes SO(2)` rather than the matrix logarithm of SE(2): they split into the
translation and rotation subgroups exactly as Table 1 relaxes them (``omega`` and
``omega_prime`` components ``x, y`` and ``r``). The lifting is the group convolution of the
lifted input :math:`f^\uparrow(y, \varphi) = f(y)` with a kernel concentrated at
:math:`\theta = \varphi` in the rotation, so its filter coordinates are
:math:`R_\theta^{-1}(x - y)/\rho` and its domain coordinates :math:`(y/s, \theta/2\pi)`.
Sums over pixels are unweighted (unit pixel area); sums over the input rotation grid are
divided by ``R`` (the normalised Haar measure of SO(2)).

Which symmetries survive a relaxation follows from how a group element moves :math:`v`:
a translation leaves the rotation :math:`\varphi` unchanged, so soft SO(2) stays exactly
T(2)-equivariant; a rotation about the centre moves the position :math:`y`, so soft T(2) breaks
rotation equivariance as well.

Rotation grid
-------------
In training mode the lifting shifts its grid by :math:`\theta_0 \sim U[0, 2\pi/R)` from the
global torch RNG (Monte-Carlo integration over SO(2), 004 sec. 5); in eval mode
:math:`\theta_0 = 0`. A group convolution keeps the grid of its input. It needs the absolute
angle of that grid (the kernel is rotated by the absolute input rotation, and soft SO(2) reads
it): pass it as ``grid_offset`` (default 0, the eval grid). A network that wants exact
absolute angles in training draws ``offset = sample_grid_offset(R)`` once per forward and
passes it to every layer; leaving the default after a randomly shifted lifting keeps every
layer exactly equivariant but rotates the group convolutions' kernels by the unseen shift.

Cost
----
With ``soft`` in ``"none"``/``"rotation"`` the kernel does not depend on position: it is
evaluated once per (output rotation, input rotation, offset) -- the same ``R^2 K`` points for
strict and soft SO(2) -- and applied with one ``conv2d``.

Soft translation needs a kernel per input pixel :math:`y` and offset (eq. 2 with eq. 8's
domain features of :math:`y`). The kernel net is linear after its cosine layer (``Linear -> cos
-> Linear``), so every kernel is ``W h + b`` with ``h`` the ``J`` cosine features of its
(position, offset) pair. The layer evaluates the features of all ``H W K`` pairs (``J`` numbers
each; the first layer's filter and domain blocks are evaluated once per offset and per pixel and
added by one broadcast sum per disk row, with no gather), builds the kernels with one matrix
product by ``[W, b]`` into a reused buffer (in groups of rows of the support disk when they
exceed 32 MiB), and contracts them with the input one *row of the support disk* at a time
(``2 floor(rho) + 1`` rows, 7 for 004's diameter of 7 pixels; no loop over pixels, tiles or
rotations): the patches of a row are a strided view of the padded input, never gathered, and the
contraction is one batched matrix product over positions. The backward pass is made of the same
products (see ``_DiskProductFunction``). Multiply-adds: three contractions of ``B H W K C C'``
each (as many as a convolution's forward and backward) plus four of ``H W K (J + 1) C C'`` to
build kernels and their gradients. On the CPU the kernel buffer and the image-sized temporaries
of a pass are per-thread scratch kept between calls (:func:`_scratch`, about 50 MB at 004's
sizes): fresh ones cost thousands of page faults per step. At the sizes of 004 (batch 64,
28 x 28, 16 channels, diameter 7) the batched products alone take about 1.5-1.6 times the strict
layer's forward + backward on CPU (they run at about two thirds of oneDNN's convolution speed),
and the whole soft layer about 2-2.3 times (``benchmarks/layers_nonstationary.py``).

Float32 on the CPU, when all kernels fit :data:`_NATIVE_KERNEL_BYTES`, the forward sum and the
input gradient run in compiled C instead (:mod:`symprior.nn._native`, ``_disk_product.c``): all
disk rows of a position in one register tile, written straight to the output image, and the
input gradient reads the forward's kernels where they lie, so it needs neither the adjoint's
features nor a second kernel build (three contractions and three kernel-net products in all).
That brings the whole soft layer to about 1.8-2.0 times the strict one. The kernel gradient
stays with torch's batched products: two compiled versions (batch-first input; input entries
broadcast) were 1.0-1.1 times their time.

Since :math:`\cos(a + b) = \cos a \cos b - \sin a \sin b`, the first layer also separates into a
filter and a domain part, and the layer is exactly a sum of ``2 J + 1`` convolutions of inputs
modulated per pixel: a convolution with ``(2 J + 1) C`` input channels, 65 times the
multiply-adds of the strict convolution for ``J = 32`` (its forward alone takes about 50 times
the strict convolution's time), which is why the layer uses the per-position products.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from symprior._caching import filling_cache, has_storage
from symprior.groups import SE2, SO2, Group
from symprior.nn._blas import split_addmm_, split_mm
from symprior.nn._inputs import check_like_parameters
from symprior.nn._native import disk_product_library
from symprior.nn._nonstationary_geometry import (
    RowLayout,
    disk_offsets,
    grid_turns,
    lifted_action,
    relative_turns,
    rotate_inverse,
    row_layout,
    sample_grid_offset,
)
from symprior.nn._nonstationary_kernel import (
    NonStationaryKernelConfig,
    RandomFourierKernel,
    embed_coordinates,
)
from symprior.nn._relaxation import Relaxation, RelaxedModule

__all__ = [
    "SOFT_MODES",
    "NonStationaryConv2d",
    "NonStationaryGroupConv",
    "NonStationaryKernelConfig",
    "NonStationaryLifting",
    "RandomFourierKernel",
    "lifted_action",
    "sample_grid_offset",
]

#: For each group, the ``soft=`` values and the domain coordinates they relax (Table 1).
SOFT_MODES: dict[str, dict[str, tuple[int, ...]]] = {
    "T2": {"none": (), "translation": (0, 1)},
    "SO2": {"none": (), "rotation": (0,)},
    "SE2": {"none": (), "translation": (0, 1), "rotation": (2,), "both": (0, 1, 2)},
}

_PADDINGS = ("zeros", "circular")


# ------------------------------------------------------------------------------ validation
def _channels(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _radius(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"radius must be a real number of pixels, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"radius must be a finite number of pixels >= 1, got {value}")
    return float(value)


def _num_rotations(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"num_rotations must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"num_rotations must be >= 1 (4, 8 or 16 in 004), got {value}")
    return value


def _group_key(group: object) -> str:
    if isinstance(group, SE2):
        return "SE2"
    if isinstance(group, SO2) and type(group) is SO2:
        return "SO2"
    if isinstance(group, Group):
        raise ValueError(
            f"group must be SO2() (rotations of the plane) or SE2() (rigid motions), got {group!r}"
            " (use NonStationaryConv2d for T(2))"
        )
    raise TypeError(f"group must be a symprior.groups.Group, got {type(group).__name__}")


def _padding(value: object) -> str:
    if value not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {value!r}")
    return str(value)


def _grid_offset(value: object) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"grid_offset must be a real number (radians), got {type(value).__name__}")
    return float(value)


def _check_input(
    x: object, shape: tuple[str, ...], fixed: dict[int, tuple[str, int]], parameter: Tensor
) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    layout = "(" + ", ".join(shape) + ")"
    if x.ndim != len(shape):
        raise ValueError(f"input must have shape {layout}, got {tuple(x.shape)}")
    for axis, (name, size) in fixed.items():
        if x.shape[axis] != size:
            raise ValueError(
                f"input must have shape {layout} with {name} = {size}, got {tuple(x.shape)}"
            )
    check_like_parameters(x, parameter, "input")
    return x


def _check_fits(radius: float, height: int, width: int) -> None:
    reach = math.floor(radius)
    if 2 * reach + 1 > min(height, width):
        raise ValueError(
            f"radius {radius} is larger than the {height}x{width} image allows: the support "
            f"disk needs {2 * reach + 1} pixels per side"
        )


# ------------------------------------------------------------------- per-position products
#: Bytes of kernels built at once: the rows of the support disk are taken in groups whose
#: kernels fit (all rows at the sizes of 004), so the kernel net's output layer runs as a few
#: large products -- few parallel regions, which matters on a loaded machine -- while memory
#: stays bounded for wide layers.
_KERNEL_BYTES = 32 << 20

#: Tests set this to run the per-position features on the CPU as other devices do (gathers).
_GATHER_ON_CPU = False

#: Largest kernel buffer (all disk rows at once) for which float32 CPU layers use the compiled
#: products of :mod:`symprior.nn._native`; above it they use torch's products row group by row
#: group (:data:`_KERNEL_BYTES`). The buffer is kept from the forward to the backward pass when
#: the input needs a gradient.
_NATIVE_KERNEL_BYTES = 64 << 20

#: Tests clear this to run float32 CPU layers on torch's products.
_USE_NATIVE = True


def _gathers(device: torch.device) -> bool:
    r"""Whether the features of the per-position products use gathers (few kernel launches) or
    one broadcast sum per disk row (faster on the CPU)."""
    return device.type != "cpu" or _GATHER_ON_CPU


#: Per-thread scratch buffers of the CPU kernel products, by slot and dtype (:func:`_scratch`).
_SCRATCH = threading.local()

#: Largest scratch buffer kept between calls; larger requests are allocated afresh, so that
#: one large batch does not pin its memory for the rest of the process.
_SCRATCH_BYTES = 48 << 20


def _scratch(numel: int, like: Tensor, slot: str) -> Tensor:
    r"""``numel`` elements of scratch space of ``like``'s dtype and device for ``slot``.

    On the CPU each slot's buffer is kept between calls, one per thread and dtype, grown to the
    largest request up to :data:`_SCRATCH_BYTES`: the kernels of one group of disk rows
    (``"kernels"``, about :data:`_KERNEL_BYTES`) and the few image-sized temporaries that die
    within a pass (about 50 MB per thread in all at 004's sizes). Fresh
    buffers of these sizes come from the operating system as new pages whenever the allocator
    has returned the last ones, and zeroing and mapping them costs 10-40 ms per forward +
    backward at 004's sizes (up to 16000 page faults per step, measured), as much as a third
    of the layer. A slot holds no state between uses: every user writes it before reading it,
    and the uses within a thread never overlap (a pass over a layer runs to its end before
    another starts on that thread). Tensors kept for the backward pass or returned are never
    scratch. Other devices allocate normally (CUDA's caching allocator already reuses memory).
    """
    if like.device.type != "cpu" or numel * like.element_size() > _SCRATCH_BYTES:
        return like.new_empty(numel)
    buffers: dict[tuple[str, torch.dtype], Tensor] = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = buffers.get((slot, like.dtype))
    if buffer is None or buffer.numel() < numel:
        with filling_cache():
            buffer = buffers[slot, like.dtype] = like.new_empty(numel)
    return buffer[:numel]


@dataclass(frozen=True, eq=False)
class _DiskProduct:
    r"""The fixed part of a :class:`_DiskProductFunction` call.

    Channels are ``Cin = I * S`` (input channel major, then input rotation) and ``Cout = O * R``.
    The kernel at grid position ``n`` and disk offset ``k`` is the ``(Cin, Cout)`` matrix
    ``head @ features[n, k, s, r]``, where ``head`` ``(I * O, J + 1)`` is the kernel net's
    output layer with the bias as last column and ``features`` its cosine features
    (004 eq. 8), ``cos(zf[k] + zd[n + k])``, followed by a constant 1 for the bias: ``zf``
    ``(K, S, R, J)`` holds the first layer's pre-activations of the offsets and ``zd``
    ``(length, S | 1, R | 1, J)`` those of the pixels at each address of the flat layout (both
    contiguous). With zero padding, pairs reaching past a side of the image get zero features
    (:attr:`RowLayout.valid`).

    ``features`` are kept in the row-blocked order of
    :class:`~symprior.nn._nonstationary_geometry.RowLayout`, ``(grid * K, S, R, J + 1)``; in that
    order the pixels a disk row reads are the strided view ``zd[n + row_start + j]`` and no
    index is gathered (:meth:`preactivations`).
    """

    layout: RowLayout
    in_channels: int
    out_channels: int
    in_rotations: int
    out_rotations: int
    #: Whether the forward pass keeps the sines for the gradients of ``zf`` and ``zd`` (set
    #: when they are recorded: under ``no_grad`` a Function still sees ``needs_input_grad``).
    keep_sines: bool = False

    @property
    def pair_numel(self) -> int:
        r"""Kernel entries per (position, offset) pair, ``S R I O``."""
        rotations = self.in_rotations * self.out_rotations
        return rotations * self.in_channels * self.out_channels

    def groups(self, element_size: int) -> list[tuple[int, int]]:
        r"""Consecutive runs ``[a, b)`` of disk rows whose kernels fit :data:`_KERNEL_BYTES`."""
        per_offset = self.layout.grid_size * self.pair_numel * element_size
        groups: list[tuple[int, int]] = []
        start, size = 0, 0
        for row, (first, stop, _, _) in enumerate(self.layout.rows):
            if row > start and size + (stop - first) * per_offset > _KERNEL_BYTES:
                groups.append((start, row))
                start, size = row, 0
            size += (stop - first) * per_offset
        groups.append((start, len(self.layout.rows)))
        return groups

    def offsets(self, rows: tuple[int, int]) -> slice:
        r"""The disk offsets ``[k0, k1)`` of a run of rows."""
        return slice(self.layout.rows[rows[0]][0], self.layout.rows[rows[1] - 1][1])

    def workspace(self, like: Tensor) -> Tensor:
        r"""A buffer for the kernels (or kernel gradients) of the largest group of rows, from
        :func:`_scratch`: reused by every group, by the backward pass, and on the CPU by later
        calls."""
        sizes = [self.offsets(rows) for rows in self.groups(like.element_size())]
        largest = max(block.stop - block.start for block in sizes)
        return _scratch(self.layout.grid_size * largest * self.pair_numel, like, "kernels")

    def _row_block(self, values: Tensor, row: int) -> Tensor:
        r"""Disk row ``row``'s block ``(grid, n, S, R, J + 1)`` of row-blocked ``values``."""
        return values[self.layout.block(row)].view(self.layout.grid_size, -1, *values.shape[1:])

    def _pixels(self, zd: Tensor, start: int, count: int) -> Tensor:
        r"""The overlapping view ``(grid, count, S | 1, R | 1, J + 1)`` of ``zd`` whose entry
        ``[n, j]`` is ``zd[n + start + j]``."""
        step = zd.stride(0)
        return zd.as_strided(
            (self.layout.grid_size, count, *zd.shape[1:]),
            (step, step, *zd.stride()[1:]),
            zd.storage_offset() + start * step,
        )

    def preactivations(self, zf: Tensor, zd: Tensor) -> Tensor:
        r"""``zf[k] + zd[n + k]`` for every (position ``n``, offset ``k``) pair, row-blocked
        ``(grid * K, S, R, J + 1)``, from ``zf`` and ``zd`` padded with a zero last column (the
        bias's constant feature is its cosine; padded once per call, so that every pass here
        writes whole contiguous rows: over J-of-(J + 1) strided views they cost about twice as
        much).

        On the CPU: one broadcast sum per disk row, with no gather (about twice as fast as
        gathering). Elsewhere two gathers and one sum, whatever the disk: fewer kernel launches
        (:func:`_gathers`).
        """
        layout = self.layout
        out = zf.new_empty(layout.grid_size * zf.shape[0], *zf.shape[1:])
        if _gathers(zf.device):
            torch.index_select(zf, 0, layout.blocked_offset, out=out)
            return out.add_(zd.index_select(0, layout.blocked_address))
        for row, (first, stop, _, _) in enumerate(layout.rows):
            pixels = self._pixels(zd, layout.row_start(row), stop - first)
            torch.add(pixels, zf[first:stop], out=self._row_block(out, row))
        return out

    def features(self, zf: Tensor, zd: Tensor, sine: bool = False) -> tuple[Tensor, Tensor | None]:
        r"""The cosine features of :meth:`preactivations`, zero on masked pairs, and with
        ``sine=True`` the sines of the same pre-activations, also masked (what the backward
        pass needs of them: :meth:`preactivation_grads`)."""
        pre = self.preactivations(zf, zd)
        sines = torch.sin(pre) if sine else None
        out = pre.cos_()
        mask = self.layout.mask(out.dtype)
        if mask is not None:
            out.view(len(mask), -1).mul_(mask)
            if sines is not None:
                sines.view(len(mask), -1).mul_(mask)
        return out, sines

    def adjoint_features(self, features: Tensor) -> Tensor:
        r"""The features of the kernels acting *on* each position's own pixel, with each disk
        row's offsets reversed (the order in which the adjoint's views read them), for the
        input gradient: the kernel at (position ``p``, offset ``k``) is the forward's at
        ``(p - k, k)`` (:attr:`RowLayout.adjoint_source`), so they are gathered from the
        forward's ``features`` (one pass, about 5 times cheaper than evaluating their cosines
        again), zero where there is no such pair. Scratch on the CPU: used within the backward
        pass only."""
        layout = self.layout
        out = _scratch(features.numel(), features, "adjoint features").view(features.shape)
        torch.index_select(features, 0, layout.adjoint_source, out=out)
        if layout.adjoint_absent.numel():
            out.index_fill_(0, layout.adjoint_absent, 0.0)
        return out

    def preactivation_grads(
        self, zf: Tensor, zd: Tensor, grad: Tensor, sines: Tensor, need_zf: bool, need_zd: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        r"""Gradients of ``zf`` and ``zd`` from ``grad``, *minus* the gradient of the cosine
        features (``J`` columns, overwritten): times the masked ``sines`` of :meth:`features`
        (the cosine's derivative), then summed over positions for ``zf`` and added to the pixel
        each pair reads for ``zd`` (one ``index_add_``)."""
        layout = self.layout
        grad.mul_(sines[..., :-1])
        grad_zf = grad_zd = None
        if need_zf and _gathers(zf.device):  # one launch rather than one per disk row
            grad_zf = zf.new_zeros(zf.shape).index_add_(0, layout.blocked_offset, grad)
        elif need_zf:
            grad_zf = zf.new_empty(zf.shape)
            for row, (first, stop, _, _) in enumerate(layout.rows):
                torch.sum(self._row_block(grad, row), 0, out=grad_zf[first:stop])
        if need_zd:
            # The axes that zd broadcasts over (one domain rotation for all kernel rotations).
            broadcast = tuple(1 + d for d in range(2) if zd.shape[1 + d] != zf.shape[1 + d])
            if broadcast:
                grad = grad.sum(broadcast, keepdim=True)
            grad_zd = zd.new_zeros(zd.shape).index_add_(0, layout.blocked_address, grad)
        return grad_zf, grad_zd

    def head_products(
        self, features: Tensor, head: Tensor, rows: tuple[int, int], workspace: Tensor
    ) -> Tensor:
        r"""``features @ head.T`` for a run of rows, ``(grid * n * S * R, I * O)`` in
        ``workspace``."""
        block = self.offsets(rows)
        grid = self.layout.grid_size
        values = features[grid * block.start : grid * block.stop]
        values = values.view(-1, features.shape[-1])
        out = workspace[: values.shape[0] * head.shape[0]].view(values.shape[0], -1)
        return torch.mm(values, head.t(), out=out)

    def contract(
        self,
        flat: Tensor,
        features: Tensor,
        head: Tensor,
        arrange: Callable[[Tensor], Tensor],
        start: Callable[[int], int],
        workspace: Tensor,
    ) -> Tensor:
        r"""``sum_k kernel[n, k]^T flat[n + ...]`` over the disk, ``(grid, C', B)``: per group
        of rows one product with the output layer (:meth:`head_products`), then one batched
        product per disk row against the strided view of ``flat`` from ``start(row)``.

        The forward pass uses it with :meth:`kernel` and the rows' first offsets, the input
        gradient with the adjoint's features, :meth:`adjoint_kernel` and reversed rows.
        """
        layout = self.layout
        out = flat  # replaced at the first row
        for rows in self.groups(features.element_size()):
            products = self.head_products(features, head, rows, workspace)
            for row in range(*rows):
                ker = arrange(self.row_of(products, rows, row)).transpose(1, 2)
                first, stop = layout.rows[row][:2]
                patches = layout.rows_view(flat, start(row), stop - first)
                if row == 0:
                    shape = (layout.grid_size, ker.shape[1], flat.shape[2])
                    out = _scratch(math.prod(shape), flat, "grid").view(shape)
                    torch.bmm(ker, patches, out=out)
                else:
                    out.baddbmm_(ker, patches)
        return out

    def row_of(self, products: Tensor, rows: tuple[int, int], row: int) -> Tensor:
        r"""Disk row ``row``'s part ``(grid, n, S, R, I * O)`` of :meth:`head_products`."""
        grid = self.layout.grid_size
        first, stop = self.layout.rows[row][:2]
        start = self.offsets(rows).start
        part = products.view(grid * (self.offsets(rows).stop - start), -1)
        part = part[grid * (first - start) : grid * (stop - start)]
        return part.view(grid, stop - first, self.in_rotations, self.out_rotations, -1)

    def kernel(self, part: Tensor) -> Tensor:
        r"""``(grid, n, S, R, I * O)`` -> kernels ``(grid, n * I * S, O * R)``, rows
        ``(k, i, s)``."""
        grid, num, s, r, _ = part.shape
        ker = part.view(grid, num, s, r, self.in_channels, -1)
        return _arrange(ker, (0, 1, 4, 2, 5, 3), (grid, num * self.in_channels * s, -1))

    def adjoint_kernel(self, part: Tensor) -> Tensor:
        r"""``(grid, n, S, R, O * I)`` (the output layer's rows in ``(o, i)`` order) ->
        transposed kernels ``(grid, n * O * R, I * S)``, rows ``(k, o, r)``."""
        grid, num, s, r, _ = part.shape
        ker = part.view(grid, num, s, r, self.out_channels, -1)
        return _arrange(ker, (0, 1, 4, 3, 5, 2), (grid, num * self.out_channels * r, -1))

    def transposed_head(self, head: Tensor) -> Tensor:
        r"""``head`` with its rows in ``(o, i)`` order: puts ``o`` before ``i`` in the kernels
        without moving them."""
        n_in, n_out = self.in_channels, self.out_channels
        return head.view(n_in, n_out, -1).transpose(0, 1).reshape(n_in * n_out, -1)

    def kernel_grads(
        self, flat: Tensor, grad_grid: Tensor, workspace: Tensor, width: int
    ) -> Iterator[tuple[slice, Tensor]]:
        r"""The kernel gradients by torch's products, group of rows by group of rows
        (:meth:`groups`): each group's slice of the row-blocked pairs and its gradients
        ``(pairs * S * R, I * O)`` in ``workspace`` (overwritten by the next group)."""
        layout, grid = self.layout, self.layout.grid_size
        for rows in self.groups(flat.element_size()):
            block = self.offsets(rows)
            count = grid * (block.stop - block.start) * self.pair_numel
            grad_products = workspace[:count].view(-1, width)
            for row in range(*rows):
                first, stop = layout.rows[row][:2]
                patches = layout.rows_view(flat, layout.row_start(row), stop - first)
                self.kernel_grad(patches, grad_grid, self.row_of(grad_products, rows, row))
            yield slice(grid * block.start, grid * block.stop), grad_products

    def kernel_grad(self, patches: Tensor, grad: Tensor, out: Tensor) -> None:
        r"""Gradient of one row's kernels, ``patches (grid, n Cin, B) @ grad (grid, B, Cout)``,
        written to ``out`` ``(grid, n, S, R, I * O)`` in :meth:`head_products` order."""
        grid, num, s, r, _ = out.shape
        if s * r == 1:
            torch.bmm(patches, grad, out=out.view(grid, -1, self.out_channels))
            return
        value = torch.bmm(patches, grad).view(grid, num, self.in_channels, s, self.out_channels, r)
        out.view(grid, num, s, r, self.in_channels, -1).copy_(value.permute(0, 1, 3, 5, 2, 4))

    # -------------------------------------------------------------- compiled products
    def native(self, like: Tensor) -> object | None:
        r"""The compiled library (:mod:`symprior.nn._native`) when this call can use it: float32
        on the CPU, all kernels within :data:`_NATIVE_KERNEL_BYTES`; else ``None``."""
        if not _USE_NATIVE or like.device.type != "cpu" or like.dtype != torch.float32:
            return None
        kernels = self.layout.grid_size * len(self.layout.base) * self.pair_numel
        if kernels * like.element_size() > _NATIVE_KERNEL_BYTES or len(self.layout.rows) > 64:
            return None
        return disk_product_library()

    def all_kernels(self, features: Tensor, head: Tensor, out: Tensor) -> Tensor:
        r"""Every pair's kernel, ``(grid * K, Cin, Cout)`` in row-blocked order (rows ``(i, s)``,
        columns ``(o, r)``), in ``out``: one product with the output layer, and with rotations
        one copy that puts the rotations next to their channels."""
        pairs, s, r = features.shape[0], self.in_rotations, self.out_rotations
        values = features.view(-1, features.shape[-1])
        if s * r == 1:
            torch.mm(values, head.t(), out=out.view(values.shape[0], -1))
        else:
            products = torch.mm(values, head.t()).view(pairs, s, r, self.in_channels, -1)
            shape = (pairs, self.in_channels, s, self.out_channels, r)
            out.view(shape).copy_(products.permute(0, 3, 1, 4, 2))
        return out.view(pairs, self.in_channels * s, -1)

    def _rows(self, adjoint: bool) -> Tensor:
        r"""``(3, rows)`` int64: each disk row's first offset, offset count and address start
        (:meth:`RowLayout.row_start`, or :meth:`RowLayout.adjoint_start` for the adjoint)."""
        layout = self.layout
        starts = [
            layout.adjoint_start(j) if adjoint else layout.row_start(j)
            for j in range(len(layout.rows))
        ]
        table = [
            [first for first, _, _, _ in layout.rows],
            [stop - first for first, stop, _, _ in layout.rows],
            starts,
        ]
        return torch.tensor(table, dtype=torch.int64)

    def native_forward(self, lib: object, kernels: Tensor, flat: Tensor) -> Tensor:
        r"""The forward pass by the compiled library, written straight to the output image
        ``(B, Cout, H, W)`` (no grid layout, junk columns never computed); ``kernels`` from
        :meth:`all_kernels`."""
        layout = self.layout
        grid, (_, cin, batch), cout = layout.grid_size, flat.shape, kernels.shape[-1]
        out = flat.new_empty(batch, cout, layout.height, layout.width)
        self._call(lib, "sp_forward", kernels, flat, out, grid, cin, cout, batch, adjoint=False)
        return out

    def native_adjoint(self, lib: object, kernels: Tensor, flat_grad: Tensor) -> Tensor:
        r"""The input gradient ``(B, Cin, H, W)`` by the compiled library from the forward's
        ``kernels`` (read in place: the kernel acting on pixel ``q`` from offset ``k`` is the
        forward pair's :attr:`RowLayout.adjoint_source`) and the flat output gradient."""
        layout = self.layout
        grid, (_, cout, batch), cin = layout.grid_size, flat_grad.shape, kernels.shape[1]
        source = layout.adjoint_source.clone()
        if layout.adjoint_absent.numel():
            source.index_fill_(0, layout.adjoint_absent, -1)
        out = flat_grad.new_empty(batch, cin, layout.height, layout.width)
        self._call(
            lib, "sp_adjoint", kernels, source, flat_grad, out, grid, cin, cout, batch, adjoint=True
        )
        return out

    def _call(self, lib: object, name: str, *args: Tensor | int, adjoint: bool) -> None:
        r"""Calls ``name`` of the compiled library with ``args`` (tensors as pointers), then
        the disk rows' table, the image's geometry and torch's thread count."""
        layout, rows = self.layout, self._rows(adjoint)
        values = [a.data_ptr() if isinstance(a, Tensor) else a for a in args]
        status = getattr(lib, name)(
            *values,
            rows.shape[1],
            *(row.data_ptr() for row in rows),
            layout.height * layout.width,
            layout.width,
            layout.row_width,
            torch.get_num_threads(),
        )
        if status != 0:
            raise RuntimeError(f"{name} failed with status {status}")


def _arrange(tensor: Tensor, dims: tuple[int, ...], shape: tuple[int, ...]) -> Tensor:
    r"""``tensor.permute(dims).reshape(shape)``, as a view when the permutation only moves
    axes of size one (``reshape`` would copy)."""
    moved = [d for d in dims if tensor.shape[d] != 1]
    if moved == sorted(moved):
        return tensor.view(shape)
    return tensor.permute(dims).reshape(shape)


class _DiskProductFunction(torch.autograd.Function):
    r"""``out[n] = sum_k kernel[n, k]^T x[n + k]`` over the support disk: 004 eq. 2 on pixels.

    Inputs ``x`` ``(B, Cin, H, W)``, ``zf``, ``zd``, ``head`` (see :class:`_DiskProduct`);
    output ``(B, Cout, H, W)``. The kernel net's cosine features are evaluated here
    (:meth:`_DiskProduct.features`: on the CPU one broadcast sum per disk row, with no gather),
    and their gradient goes back to ``zf`` and ``zd`` without autograd's gathers and scatters. The sum over the disk is one batched matrix
    product over grid positions per *row of the support disk* (``2 floor(rho) + 1`` of them,
    whatever the image and batch size): the input patches of a row are a strided view of the
    flat padded image (:class:`~symprior.nn._nonstationary_geometry.RowLayout`), never
    gathered. The kernels are built by one product with the kernel net's output layer per group
    of rows (:data:`_KERNEL_BYTES`; one group at the sizes of 004) into a reused buffer. The
    backward pass is made of the same products: the input gradient reads the output gradient at
    :math:`n - k` against the kernels acting on pixel :math:`n` (``features(adjoint=True)``),
    the kernel gradient reads the input patches against the output gradient and goes straight
    to ``head`` and, through the cosine's derivative, to ``zf`` and ``zd``
    (:meth:`_DiskProduct.preactivation_grads`). With ``create_graph`` (double backward, e.g.
    Hessians over :math:`\omega'`) the backward instead differentiates a gather-based twin of
    the forward (:func:`_disk_product_reference`), whose graph autograd can differentiate again.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        zf: Tensor,
        zd: Tensor,
        head: Tensor,
        plan: _DiskProduct,
    ) -> Tensor:
        layout = plan.layout
        padded = F.pad(zf, (0, 1)), F.pad(zd, (0, 1))  # see _DiskProduct.preactivations
        features, sines = plan.features(*padded, sine=plan.keep_sines)
        flat = layout.flatten(x)
        lib = plan.native(x)
        kernels = x.new_empty(0)
        if lib is not None:
            # Kept for the input gradient, which reads them in place (native_adjoint).
            keep = ctx.needs_input_grad[0]  # type: ignore[attr-defined]
            numel = features.shape[0] * plan.pair_numel
            buffer = x.new_empty(numel) if keep else _scratch(numel, x, "kernels")
            pairs = plan.all_kernels(features, head, buffer)
            image = plan.native_forward(lib, pairs, flat)
            if keep:
                kernels = pairs
        else:
            workspace = plan.workspace(features)
            out = plan.contract(flat, features, head, plan.kernel, layout.row_start, workspace)
            image = layout.from_grid(out)
        saved = (x, zf, zd, *padded, head, features, sines, flat, kernels)
        ctx.save_for_backward(*saved)  # type: ignore[arg-type]
        ctx.plan = plan  # type: ignore[attr-defined]
        return image

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        x, zf, zd, zf_padded, zd_padded, head, features, sines, flat, kernels = saved
        plan: _DiskProduct = ctx.plan  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad[:4]  # type: ignore[attr-defined]
        if torch.is_grad_enabled():
            inputs = [t for t, need in zip((x, zf, zd, head), needs, strict=True) if need]
            out = _disk_product_reference(x, zf, zd, head, plan)
            grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=True))
            return *(next(grads) if need else None for need in needs), None
        layout = plan.layout
        workspace = plan.workspace(features)
        grad_x = grad_zf = grad_zd = grad_head = None
        if needs[0]:
            numel = grad.shape[0] * grad.shape[1] * layout.length
            flat_grad = layout.flatten(grad, _scratch(numel, grad, "flat gradient"))
            lib = plan.native(grad) if kernels.numel() else None
            if lib is not None:
                grad_x = plan.native_adjoint(lib, kernels, flat_grad)
            else:
                acc = plan.contract(
                    flat_grad,
                    plan.adjoint_features(features),
                    plan.transposed_head(head),
                    plan.adjoint_kernel,
                    layout.adjoint_start,
                    workspace,
                )
                grad_x = layout.from_grid(acc)
        need_pre = needs[1] or needs[2]
        if need_pre or needs[3]:
            numel = layout.grid_size * grad.shape[0] * grad.shape[1]
            # (grid, B, Cout), zero on junk columns
            grad_grid = layout.to_grid(grad, _scratch(numel, grad, "grid gradient"))
            # Minus the cosine features' gradient (the cosine's derivative is -sin), without the
            # bias's constant: J = 32 columns rather than 33 also suit the vector width (~1.3x
            # faster product).
            shape = (*features.shape[:-1], zf.shape[-1])
            grad_pre = _scratch(math.prod(shape), zf, "pre").view(shape) if need_pre else None
            blocks = plan.kernel_grads(flat, grad_grid, workspace, head.shape[0])
            neg_head = -head[:, :-1]
            # Accumulated transposed, (J + 1, I O): features^T @ grad_products reads both
            # operands in the order the BLAS prefers (about 1.4x faster than the transpose).
            grad_head_t = head.new_zeros(head.shape[1], head.shape[0]) if needs[3] else None
            for values, products in blocks:
                if grad_pre is not None:
                    split_mm(products, neg_head, out=grad_pre[values].view(products.shape[0], -1))
                if grad_head_t is not None:
                    split_addmm_(
                        grad_head_t, features[values].view(products.shape[0], -1).t(), products
                    )
            if grad_head_t is not None:
                grad_head = grad_head_t.t().contiguous()
            if grad_pre is not None:
                if sines is None:  # the forward did not expect these gradients: rebuild them
                    sines = plan.features(zf_padded, zd_padded, sine=True)[1]
                    assert sines is not None
                grad_zf, grad_zd = plan.preactivation_grads(
                    zf, zd, grad_pre, sines, needs[1], needs[2]
                )
        return grad_x, grad_zf, grad_zd, grad_head, None


def _disk_product_reference(
    x: Tensor, zf: Tensor, zd: Tensor, head: Tensor, plan: _DiskProduct
) -> Tensor:
    r""":class:`_DiskProductFunction` with gathered features and patches and whole-tensor
    operations, for double backward (memory ``grid * K * Cin * B``)."""
    layout = plan.layout
    pre = zf.index_select(0, layout.blocked_offset) + zd.index_select(0, layout.blocked_address)
    features = F.pad(RandomFourierKernel.hidden_features(pre), (0, 1), value=1.0)
    mask = layout.mask(features.dtype)
    if mask is not None:
        features = (features.view(len(mask), -1) * mask).view(features.shape)
    flat = layout.flatten(x)
    index = torch.arange(layout.grid_size, device=x.device)[:, None] + layout.base[None, :]
    patches = flat.index_select(0, index.reshape(-1)).view(layout.grid_size, -1, x.shape[0])
    grid = layout.grid_size
    rows = []
    for first, stop, _, _ in layout.rows:
        block = features[grid * first : grid * stop] @ head.t()
        rows.append(block.view(grid, stop - first, *block.shape[1:]))
    kernels = plan.kernel(torch.cat(rows, 1))
    return layout.from_grid(torch.bmm(kernels.transpose(1, 2), patches))


# ------------------------------------------------------------------------------ base class
#: Phase tables of a relaxed domain block with more rows than this are kept in float64
#: (:meth:`_NonStationaryLayer._domain_phases`).
_LONG_PHASES = 4096


@dataclass(frozen=True, eq=False)
class _DomainPhases:
    r"""The phases of a relaxed layer's domain features as an affine function of
    :math:`\omega'`, ``matrix @ omega_prime + shift`` (:meth:`_NonStationaryLayer.
    _domain_preactivation`), for one grid offset (and image size), dtype and device.

    Attributes
    ----------
    key : tuple
        ``(grid_offset, ..., dtype, str(device))``, with the image size and domain scale for
        soft translation.
    basis : Tensor
        The kernel's ``domain_basis`` they were computed from, and ``version`` its version
        counter then.
    matrix, shift : Tensor
        ``(N * 2D, m)`` and ``(N * 2D,)`` in the layer's dtype (float64 for tables longer than
        ``_LONG_PHASES``), for ``N`` domain points and ``m`` relaxed coordinates: the cosine
        half of each point's features, then the sine half.
    shape : tuple of int
        ``(..., 2D)``: the features' shape.
    """

    key: tuple[object, ...]
    basis: Tensor
    version: int
    matrix: Tensor
    shift: Tensor
    shape: tuple[int, ...]


def _cosine_shift(shape: tuple[int, ...], size: int, device: torch.device) -> Tensor:
    r""":math:`c` of :meth:`_NonStationaryLayer._domain_preactivation`, ``(*shape, 2 size)``
    float64: :math:`\pi/2` on the cosine half of eq. 7's features (:math:`\cos\varphi =
    \sin(\varphi + \pi/2)`), 0 on the sine half."""
    shift = torch.zeros(*shape, 2 * size, dtype=torch.float64, device=device)
    shift[..., :size] = math.pi / 2
    return shift


class _NonStationaryLayer(RelaxedModule):
    r"""Shared parts: the kernel, ``omega_prime`` on the relaxed coordinates, the registry."""

    omega_prime: Tensor
    soft_selection: Tensor

    def __init__(
        self,
        *,
        space: str,
        soft: object,
        in_channels: int,
        out_channels: int,
        filter_dim: int,
        domain_dim: int,
        angular_filter: tuple[int, ...],
        angular_domain: tuple[int, ...],
        fan_in: float,
        config: NonStationaryKernelConfig | None,
    ) -> None:
        super().__init__()
        modes = SOFT_MODES[space]
        if not isinstance(soft, str) or soft not in modes:
            raise ValueError(f"soft must be one of {tuple(modes)} for {space}, got {soft!r}")
        if config is None:
            config = NonStationaryKernelConfig()
        if not isinstance(config, NonStationaryKernelConfig):
            raise TypeError(
                f"config must be a NonStationaryKernelConfig, got {type(config).__name__}"
            )
        self.in_channels = _channels(in_channels, "in_channels")
        self.out_channels = _channels(out_channels, "out_channels")
        self.soft = soft
        self.config = config
        self.kernel = RandomFourierKernel(
            filter_dim,
            domain_dim,
            in_channels * out_channels,
            num_features=config.num_features,
            hidden=config.hidden,
            omega_init=config.omega_init,
            angular_filter=angular_filter,
            angular_domain=angular_domain,
            fan_in=fan_in,
        )
        dims = modes[soft]
        select = torch.zeros(domain_dim, len(dims))
        for j, d in enumerate(dims):
            select[d, j] = 1.0
        self.register_buffer("soft_selection", select, persistent=False)
        if dims:
            self.omega_prime = torch.nn.Parameter(
                torch.full((len(dims),), float(config.omega_prime_init))
            )
        self._phases: _DomainPhases | None = None
        self._strict_features: dict[tuple[tuple[int, ...], torch.dtype, str], Tensor] = {}

    @property
    def translation_soft(self) -> bool:
        r"""Whether the kernel depends on the absolute position (a kernel per pixel)."""
        return self.soft in ("translation", "both")

    def relaxations(self) -> dict[str, Relaxation]:
        r"""``{"omega_prime": Relaxation("nonstationary", "omega_prime", 0.0)}``, or ``{}``."""
        if self.soft == "none":
            return {}
        return {"omega_prime": Relaxation("nonstationary", "omega_prime", 0.0)}

    def equivariance_level(self) -> Tensor:
        r""":math:`\lVert\omega'\rVert_2` over the relaxed coordinates (0 for ``soft="none"``)."""
        if self.soft == "none":
            return self.kernel.omega.new_zeros(())
        return torch.linalg.vector_norm(self.omega_prime)

    def domain_frequencies(self) -> Tensor | None:
        r"""The full ``(domain_dim,)`` vector :math:`\omega'`, zero off the relaxed coordinates.

        ``None`` for ``soft="none"`` (the kernel sees :math:`\gamma_0`).
        """
        if self.soft == "none":
            return None
        return self.soft_selection.to(self.omega_prime) @ self.omega_prime

    def _dtype(self) -> torch.dtype:
        return self.kernel.omega.dtype

    def _domain_preactivation(
        self,
        domain_coords: Callable[[], Tensor],
        grid_offset: float,
        device: torch.device,
        shape: tuple[int, ...],
        key: tuple[object, ...] = (),
    ) -> Tensor:
        r"""The domain block of the kernel net's first layer (004 eq. 7-8), ``(*shape, hidden)``.

        ``domain_coords()`` gives the float64 coordinates ``(*shape, domain_dim)`` of
        :math:`v`, a function of ``grid_offset`` and ``key`` alone (the image size and domain
        scale for soft translation, whose coordinates hold every grid position); it is called
        only when they are needed.

        A strict layer's features are those of :meth:`RandomFourierKernel.domain_preactivation`
        at :math:`\omega' = 0`, :math:`\gamma_0 = (1, \dots, 1, 0, \dots, 0) / \sqrt{D}` at every
        point (all phases vanish): a constant kept per shape, dtype and device, so that only the
        domain layer's product remains. A relaxed layer's phases are linear in :math:`\omega'`,
        :math:`2\pi W (b \odot E^\top \omega') = A\, \omega'` with :math:`E` the embedded
        coordinates each component of :math:`\omega'` scales (``soft_selection`` and the
        kernel's ``domain_expand``), and both halves of eq. 7 are sines,
        :math:`\cos\varphi = \sin(\varphi + \pi/2)`:

        .. math:: \gamma_{\omega'}(b) = \sin(A\, \omega' + c) / \sqrt{D}, \qquad
            c = (\pi/2, \dots, \pi/2, 0, \dots, 0),

        with :math:`A` and :math:`c` constants of the grid offset (:meth:`_domain_phases`).
        That is one matrix-vector product and one sine forward and as few operations backward,
        against about twenty through eq. 7's coordinates and frequencies (each a kernel launch
        on a GPU, where the launches of these small tensors set the cost). At
        :math:`\omega' = 0` the features are exactly :math:`\gamma_0` (:math:`\sin(\pi/2)`
        rounds to 1), so the layer is still exactly the strict one (Remark 2).
        """
        dtype = self._dtype()
        size = self.kernel.domain_basis.shape[0]
        scale = 1.0 / math.sqrt(size)
        if self.soft == "none":
            key = (shape, dtype, str(device))
            if key not in self._strict_features:
                with filling_cache():  # sin(c) = (1, ..., 1, 0, ..., 0): cos 0, then sin 0
                    ones = torch.sin(_cosine_shift(shape, size, device)).to(dtype)
                    self._strict_features[key] = ones * scale
            return self.kernel.domain_layer(self._strict_features[key])
        phases = self._domain_phases(domain_coords, (grid_offset, *key), device)
        if phases is None:
            coords = domain_coords().to(device=device, dtype=dtype)
            return self.kernel.domain_preactivation(coords, self.domain_frequencies())
        matrix = phases.matrix
        values = torch.addmv(phases.shift, matrix, self.omega_prime.to(matrix.dtype))
        features = torch.sin(values).view(phases.shape).to(dtype) * scale
        return self.kernel.domain_layer(features)

    def _domain_phases(
        self, domain_coords: Callable[[], Tensor], where: tuple[object, ...], device: torch.device
    ) -> _DomainPhases | None:
        r""":math:`A` and :math:`c` of :meth:`_domain_preactivation`, kept for the last grid
        offset (and image size, ``where``), dtype and device (eval mode, the group
        convolutions' default offset and the T(2) convolution use one throughout), and
        recomputed when the kernel's ``domain_basis`` is another tensor
        (``module.to``, assignment) or was changed in place (``load_state_dict``: its version
        counter moved). ``None`` when the basis itself is differentiated, is a :mod:`torch.func`
        wrapper or an inference tensor (which has no version counter): the general path then
        serves it."""
        basis = self.kernel.domain_basis
        if basis.requires_grad or basis.is_inference() or not has_storage(basis):
            return None
        key = (*where, self._dtype(), str(device))
        cached = self._phases
        if (
            cached is not None
            and cached.key == key
            and cached.basis is basis
            and cached.version == basis._version
        ):
            return cached
        with filling_cache():
            embedded = embed_coordinates(domain_coords().to(device), self.kernel.angular_domain)
            # (m, e): the embedded coordinates each component of omega' scales.
            select = self.soft_selection.double().t() @ self.kernel.domain_expand.double()
            # (..., m, e) @ (e, D): one matrix product (an einsum would batch it per point).
            slopes = ((embedded[..., None, :] * select) @ basis.double().T).transpose(-1, -2)
            slopes = torch.cat([slopes, slopes], -2) * (2 * math.pi)  # (..., 2D, m)
            shift = _cosine_shift(tuple(slopes.shape[:-2]), basis.shape[0], device)
            # Long tables (soft translation: every grid position) in float64: the gradient of
            # omega' sums over all their rows, which float32 would round to a few 1e-6.
            dtype = torch.float64 if shift.numel() > _LONG_PHASES else self._dtype()
            self._phases = _DomainPhases(
                key,
                basis,
                basis._version,
                slopes.reshape(-1, slopes.shape[-1]).to(dtype),
                shift.reshape(-1).to(dtype),
                tuple(shift.shape),
            )
        return self._phases

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, soft={self.soft!r}"


class _PlanarLayer(_NonStationaryLayer):
    r"""Layers with image axes: T(2) convolution and SE(2) lifting / group convolution."""

    offsets: Tensor
    flat_offsets: Tensor

    def _init_planar(self, radius: float, padding: object) -> None:
        self.radius = radius
        self.padding = _padding(padding)
        offsets = disk_offsets(radius)
        self.reach = math.floor(radius)
        size = 2 * self.reach + 1
        self.register_buffer("offsets", offsets, persistent=False)
        flat = (offsets[:, 0] + self.reach) * size + offsets[:, 1] + self.reach
        self.register_buffer("flat_offsets", flat, persistent=False)
        self._index_cache: dict[tuple[int, int, str], tuple[Tensor, Tensor]] = {}
        self._layout_cache: dict[tuple[int, int, str], RowLayout] = {}

    def _filter_points(self) -> Tensor:
        r"""``(x - y) / rho`` ``(K, 2)`` float64 for input ``y`` = output ``x`` + offset."""
        # offset (row, col) moves by (col, -row) in (x, y) coordinates; kept float64 whatever
        # the module's dtype, like every group constant.
        offsets = self.offsets.to(torch.float64)
        return torch.stack([-offsets[:, 1], offsets[:, 0]], -1) / self.radius

    def _domain_scale(self, height: int, width: int) -> float:
        if self.config.domain_scale is not None:
            return self.config.domain_scale
        return float(max(height, width))

    def _layout(self, height: int, width: int, device: torch.device) -> RowLayout:
        key = (height, width, str(device))
        if key not in self._layout_cache:
            with filling_cache():
                layout = row_layout(height, width, self.offsets, self.padding, device)
            self._layout_cache[key] = layout
        return self._layout_cache[key]

    def _pad(self, x: Tensor) -> Tensor:
        pad = (self.reach,) * 4
        return F.pad(x, pad, mode="circular") if self.padding == "circular" else F.pad(x, pad)

    def _planar(
        self,
        x: Tensor,
        filter_coords: Tensor,
        domain_coords: Callable[[], Tensor],
        domain_shape: tuple[int, int],
        rotations_out: int,
        rotations_in: int,
        grid_offset: float = 0.0,
    ) -> Tensor:
        r"""The operator of eq. 2 on a pixel grid.

        Parameters
        ----------
        x : Tensor
            ``(B, I * S, H, W)``, channel-major then input rotation.
        filter_coords : Tensor
            ``(R, S, K, filter_dim)`` float64: coordinates of :math:`v^{-1}u` per output
            rotation, input rotation and disk offset.
        domain_coords : callable
            ``() -> (Rd, Sd, domain_dim)`` float64 (``Rd`` in ``{1, R}``, ``Sd`` in
            ``{1, S}``): the rotation part of :math:`v`; the translation part is added here per
            position. Called only when needed (:meth:`_domain_preactivation`).
        domain_shape : tuple of int
            ``(Rd, Sd)``.
        grid_offset : float
            The grid offset the domain coordinates are a function of.

        Returns
        -------
        Tensor
            ``(B, O, R, H, W)``.
        """
        batch, _, height, width = x.shape
        _check_fits(self.radius, height, width)
        dtype = self._dtype()
        zf = self.kernel.filter_preactivation(filter_coords.to(device=x.device, dtype=dtype))
        norm = 1.0 / rotations_in
        n_in, n_out = self.in_channels, self.out_channels
        if not self.translation_soft:
            zd = self._domain_preactivation(domain_coords, grid_offset, x.device, domain_shape)
            ker = self.kernel.head(zf + zd[:, :, None, :]).unflatten(-1, (n_in, n_out))
            ker = ker.permute(4, 0, 3, 1, 2)  # (O, R, I, S, K)
            size = 2 * self.reach + 1
            weight = ker.new_zeros(*ker.shape[:-1], size * size)
            weight = weight.index_copy(-1, self.flat_offsets, ker)
            weight = weight.reshape(n_out * rotations_out, n_in * rotations_in, size, size)
            if rotations_in > 1:
                weight = weight * norm
            if self.padding == "circular":
                out = F.conv2d(self._pad(x), weight)
            else:
                out = F.conv2d(x, weight, padding=self.reach)
            return out.view(batch, n_out, rotations_out, height, width)

        # Soft translation: a kernel per grid position and offset, 004 eq. 8 with the position
        # of the input pixel in the domain coordinates (see _DiskProductFunction).
        layout = self._layout(height, width, x.device)
        scale = self._domain_scale(height, width)

        def coords() -> Tensor:  # (L, Rd, Sd, domain_dim)
            out = domain_coords().to(x.device)[None].repeat(layout.length, 1, 1, 1)
            out[..., :2] = (layout.positions / scale)[:, None, None]
            return out

        shape = (layout.length, *domain_shape)
        where = (height, width, scale)
        zd = self._domain_preactivation(coords, grid_offset, x.device, shape, where)
        zd = zd.transpose(1, 2).contiguous()  # (L, Sd, Rd, J)
        zf = zf.permute(2, 1, 0, 3).contiguous()  # (K, S, R, J)
        keep = torch.is_grad_enabled() and (zf.requires_grad or zd.requires_grad)
        plan = _DiskProduct(layout, n_in, n_out, rotations_in, rotations_out, keep)
        layer = self.kernel.output_layer
        head = torch.cat([layer.weight, layer.bias[:, None]], 1)
        out = _DiskProductFunction.apply(x, zf, zd, head, plan)
        if rotations_in > 1:
            out = out * norm
        return out.view(batch, n_out, rotations_out, height, width)


# ------------------------------------------------------------------------------------ T(2)
class NonStationaryConv2d(_PlanarLayer):
    r"""Soft T(2) convolution: a continuous-kernel convolution whose kernel may depend on the
    absolute input position (004 eq. 2, Table 1 rows "T(2)-CNN" and "soft T(2)-CNN").

    .. math:: h(x) = \sum_{y:\ |x - y| \le \rho} \hat k\big((x - y)/\rho,\ y/s\big)\, f(y),

    :math:`\hat k` a :class:`RandomFourierKernel` with ``omega`` on the offset and
    ``omega_prime`` (on :math:`(x, y)`, present for ``soft="translation"``) on the position.
    ``soft="none"`` is one ``conv2d`` with a kernel from the kernel net; ``soft="translation"``
    evaluates a kernel per pixel and offset and applies them by batched products, one per row of
    the support disk, exactly (no approximation of eq. 8) and at about 2-2.3 times the cost on
    CPU (module docstring, "Cost").

    Parameters
    ----------
    in_channels, out_channels : int
    radius : float
        Support radius :math:`\rho` in pixels (a disk; 004 uses a diameter of 7 pixels).
    soft : {"none", "translation"}
        ``"none"``: the strict continuous CNN (no ``omega_prime``); ``"translation"``:
        learnable ``omega_prime`` of shape ``(2,)``.
    padding : {"zeros", "circular"}
        Outside the image; outputs keep the input size.
    config : NonStationaryKernelConfig, optional
        Kernel options (features, width, initial frequencies, ``domain_scale``).

    Shapes
    ------
    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> conv = NonStationaryConv2d(1, 2, radius=2.0, soft="translation", padding="circular")
    >>> x = torch.randn(1, 1, 8, 8)
    >>> y = conv(x)
    >>> y.shape
    torch.Size([1, 2, 8, 8])
    >>> torch.allclose(conv(x.roll(1, -1)), y.roll(1, -1), atol=1e-5)  # omega' = 0: strict
    True
    >>> with torch.no_grad():
    ...     _ = conv.omega_prime.fill_(0.5)
    >>> round(conv.equivariance_level().item(), 4)  # |omega'|
    0.7071
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        radius: float,
        soft: str = "none",
        padding: str = "zeros",
        config: NonStationaryKernelConfig | None = None,
    ) -> None:
        radius = _radius(radius)
        if soft not in SOFT_MODES["T2"]:
            raise ValueError(
                f"soft must be one of {tuple(SOFT_MODES['T2'])} for the T(2) convolution, "
                f"got {soft!r}"
            )
        fan_in = _channels(in_channels, "in_channels") * len(disk_offsets(radius))
        super().__init__(
            space="T2",
            soft=soft,
            in_channels=in_channels,
            out_channels=out_channels,
            filter_dim=2,
            domain_dim=2,
            angular_filter=(),
            angular_domain=(),
            fan_in=fan_in,
            config=config,
        )
        self._init_planar(radius, padding)

    def forward(self, x: Tensor) -> Tensor:
        r"""``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""
        x = _check_input(x, ("B", "C", "H", "W"), {1: ("C", self.in_channels)}, self.kernel.omega)
        filter_coords = self._filter_points()[None, None]

        def domain_coords() -> Tensor:
            return filter_coords.new_zeros(1, 1, 2)

        # squeeze, not [:, :, 0]: its backward is a view, not a zero-filled copy.
        return self._planar(x, filter_coords, domain_coords, (1, 1), 1, 1).squeeze(2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, radius={self.radius}, padding={self.padding!r}"


# ------------------------------------------------------------------------------- lifting
class NonStationaryLifting(_PlanarLayer):
    r"""Lifting from images to a rotation grid, relaxed by a non-stationary kernel (004 eq. 2).

    SE(2): :math:`h(x, \theta_r) = \sum_{|x - y| \le \rho} \hat k\big(R_{\theta_r}^{-1}(x-y)/\rho,
    \ (y/s, \theta_r/2\pi)\big) f(y)`, output ``(B, C', R, H, W)``.

    SO(2) acting on the plane (about the image centre): :math:`h(\theta_r) = \sum_{|y| \le \rho}
    \hat k\big(R_{\theta_r}^{-1}(0 - y)/\rho,\ \theta_r/2\pi\big) f(y)` -- the SE(2) lifting
    read at the centre -- output ``(B, C', R)``.

    The grid is :math:`\theta_r = \theta_0 + 2\pi r/R`, with :math:`\theta_0` random in training
    mode and 0 in eval mode unless ``grid_offset`` is given (module docstring).

    Parameters
    ----------
    group : SE2 or SO2
    in_channels, out_channels : int
    radius : float
        Support radius :math:`\rho` in pixels.
    num_rotations : int
        ``R`` (004 uses 4, 8, 16).
    soft : str
        SE(2): ``"none"``, ``"translation"`` (``omega_prime`` on :math:`y`), ``"rotation"`` (on
        :math:`\theta`) or ``"both"``; SO(2): ``"none"`` or ``"rotation"``.
    padding : {"zeros", "circular"}
        SE(2) only (SO(2) reads a disk inside the image).
    config : NonStationaryKernelConfig, optional

    Examples
    --------
    >>> import math, torch
    >>> from symprior.groups import SE2, transform_image
    >>> _ = torch.manual_seed(0)
    >>> lift = NonStationaryLifting(SE2(), 1, 3, radius=2.0, num_rotations=4, soft="rotation")
    >>> x = torch.randn(2, 1, 9, 9)
    >>> h = lift.eval()(x)
    >>> h.shape
    torch.Size([2, 3, 4, 9, 9])
    >>> g = SE2().exp(torch.tensor([math.pi / 2, 0.0, 0.0]))
    >>> torch.allclose(lift(transform_image(x, g)), lifted_action(g, h), atol=1e-5)
    True
    """

    def __init__(
        self,
        group: Group,
        in_channels: int,
        out_channels: int,
        *,
        radius: float,
        num_rotations: int = 8,
        soft: str = "none",
        padding: str = "zeros",
        config: NonStationaryKernelConfig | None = None,
    ) -> None:
        space = _group_key(group)
        radius = _radius(radius)
        num_rotations = _num_rotations(num_rotations)
        channels = _channels(in_channels, "in_channels")
        if space == "SO2" and padding != "zeros":
            raise ValueError(
                "padding applies to SE2 only: the SO(2) lifting reads a disk inside the image, "
                f"got padding={padding!r}"
            )
        super().__init__(
            space=space,
            soft=soft,
            in_channels=in_channels,
            out_channels=out_channels,
            filter_dim=2,
            domain_dim=3 if space == "SE2" else 1,
            angular_filter=(),
            angular_domain=(2,) if space == "SE2" else (0,),
            fan_in=channels
            * (len(disk_offsets(radius)) if space == "SE2" else math.pi * radius**2),
            config=config,
        )
        self.num_rotations = num_rotations
        self.group_key = space
        self._init_planar(radius, padding)

    def grid(self, grid_offset: float | Tensor | None = None) -> Tensor:
        r"""Angles :math:`\theta_r` ``(R,)`` float64 of the next forward's grid (eval mode)."""
        offset = 0.0 if grid_offset is None else _grid_offset(grid_offset)
        steps = torch.arange(self.num_rotations, dtype=torch.float64)
        return offset + 2 * math.pi * steps / self.num_rotations

    def forward(self, x: Tensor, grid_offset: float | Tensor | None = None) -> Tensor:
        r"""Lift ``(B, in_channels, H, W)`` to ``(B, out_channels, R, H, W)`` (SE2) or
        ``(B, out_channels, R)`` (SO2).

        ``grid_offset`` is :math:`\theta_0` in radians; ``None`` draws it in training mode
        (:func:`sample_grid_offset`) and uses 0 in eval mode.
        """
        x = _check_input(x, ("B", "C", "H", "W"), {1: ("C", self.in_channels)}, self.kernel.omega)
        if grid_offset is None:
            offset = sample_grid_offset(self.num_rotations) if self.training else 0.0
        else:
            offset = _grid_offset(grid_offset)
        angles = self.grid(offset).to(x.device)
        if self.group_key == "SO2":
            return self._lift_so2(x, angles, offset)
        filter_coords = rotate_inverse(self._filter_points(), angles)[:, None]  # (R, 1, K, 2)

        def domain_coords() -> Tensor:
            coords = torch.zeros(self.num_rotations, 1, 3, dtype=torch.float64, device=x.device)
            coords[:, 0, 2] = grid_turns(self.num_rotations, offset, x.device)
            return coords

        shape = (self.num_rotations, 1)
        return self._planar(x, filter_coords, domain_coords, shape, self.num_rotations, 1, offset)

    def _disk_pixels(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (height, width, "so2:" + str(device))
        if key not in self._index_cache:
            if 2 * self.radius > min(height, width):
                raise ValueError(
                    f"radius {self.radius} is larger than the {height}x{width} image allows: "
                    f"the SO(2) support disk about the centre needs radius <= "
                    f"{min(height, width) / 2}"
                )
            rows = torch.arange(height, dtype=torch.float64, device=device)
            cols = torch.arange(width, dtype=torch.float64, device=device)
            px = (cols - (width - 1) / 2)[None, :].expand(height, width)
            py = ((height - 1) / 2 - rows)[:, None].expand(height, width)
            points = torch.stack([px, py], -1).reshape(-1, 2)
            inside = (points**2).sum(-1) <= self.radius**2 + 1e-9
            self._index_cache[key] = (inside.nonzero()[:, 0], points[inside])
        return self._index_cache[key]

    def _lift_so2(self, x: Tensor, angles: Tensor, offset: float) -> Tensor:
        height, width = x.shape[-2:]
        index, points = self._disk_pixels(height, width, x.device)
        dtype = self._dtype()
        filter_coords = rotate_inverse(-points / self.radius, angles)  # (R, Y, 2)
        zf = self.kernel.filter_preactivation(filter_coords.to(dtype))

        def domain_coords() -> Tensor:
            return grid_turns(self.num_rotations, offset, x.device)[:, None, None]

        zd = self._domain_preactivation(domain_coords, offset, x.device, (self.num_rotations, 1))
        ker = self.kernel.head(zf + zd).unflatten(-1, (self.in_channels, self.out_channels))
        pixels = x.flatten(2).index_select(2, index)  # (B, I, Y)
        return torch.einsum("biy,ryio->bor", pixels, ker)

    def extra_repr(self) -> str:
        pad = f", padding={self.padding!r}" if self.group_key == "SE2" else ""
        return (
            f"{self.group_key}, {super().extra_repr()}, radius={self.radius}, "
            f"num_rotations={self.num_rotations}{pad}"
        )


# -------------------------------------------------------------------------- group conv
class NonStationaryGroupConv(_PlanarLayer):
    r"""Group convolution on a rotation grid, relaxed by a non-stationary kernel (004 eq. 2).

    SE(2), input and output ``(B, C, R, H, W)`` on the same grid :math:`\varphi_s`:

    .. math:: h(x, \theta_r) = \frac1R \sum_s \sum_{|x-y| \le \rho}
        \hat k\Big(\big(R_{\varphi_s}^{-1}(x-y)/\rho,\ (\theta_r-\varphi_s)/2\pi\big),\
        \big(y/s, \varphi_s/2\pi\big)\Big) f(y, \varphi_s).

    SO(2), input and output ``(B, C, R)``: :math:`h(\theta_r) = \frac1R \sum_s
    \hat k\big((\theta_r - \varphi_s)/2\pi,\ \varphi_s/2\pi\big) f(\varphi_s)` (the whole group
    is the support).

    Relative angles are computed from grid indices, so a cyclic shift of the grid is an exact
    symmetry; 90-degree rotations are exact when ``R`` is a multiple of 4.

    Parameters
    ----------
    group : SE2 or SO2
    in_channels, out_channels : int
    num_rotations : int
        ``R``, the size of the input's rotation axis.
    radius : float, optional
        Spatial support radius in pixels; required for SE2, must be ``None`` for SO2.
    soft : str
        As in :class:`NonStationaryLifting` (``omega_prime`` on :math:`y` and/or
        :math:`\varphi`).
    padding : {"zeros", "circular"}
        SE(2) only.
    config : NonStationaryKernelConfig, optional

    Examples
    --------
    >>> import math, torch
    >>> from symprior.groups import SE2
    >>> _ = torch.manual_seed(0)
    >>> conv = NonStationaryGroupConv(SE2(), 2, 3, num_rotations=4, radius=1.5)
    >>> h = torch.randn(1, 2, 4, 7, 7)
    >>> out = conv(h)
    >>> out.shape
    torch.Size([1, 3, 4, 7, 7])
    >>> g = SE2().exp(torch.tensor([math.pi / 2, 0.0, 0.0]))
    >>> torch.allclose(conv(lifted_action(g, h)), lifted_action(g, out), atol=1e-5)
    True
    """

    def __init__(
        self,
        group: Group,
        in_channels: int,
        out_channels: int,
        *,
        num_rotations: int = 8,
        radius: float | None = None,
        soft: str = "none",
        padding: str = "zeros",
        config: NonStationaryKernelConfig | None = None,
    ) -> None:
        space = _group_key(group)
        num_rotations = _num_rotations(num_rotations)
        channels = _channels(in_channels, "in_channels")
        if space == "SE2":
            if radius is None:
                raise ValueError("radius is required for the SE(2) group convolution")
            radius = _radius(radius)
            # The 1/R average makes each value a sum of I K terms per rotation, R rotations.
            fan_in = channels * len(disk_offsets(radius)) / num_rotations
        else:
            if radius is not None:
                raise ValueError(
                    "radius must be None for the SO(2) group convolution (its support is the "
                    f"whole group), got {radius!r}"
                )
            if padding != "zeros":
                raise ValueError(f"padding applies to SE2 only, got padding={padding!r}")
            fan_in = channels / num_rotations
        planar = space == "SE2"
        super().__init__(
            space=space,
            soft=soft,
            in_channels=in_channels,
            out_channels=out_channels,
            filter_dim=3 if planar else 1,
            domain_dim=3 if planar else 1,
            angular_filter=(2,) if planar else (0,),
            angular_domain=(2,) if planar else (0,),
            fan_in=fan_in,
            config=config,
        )
        self.num_rotations = num_rotations
        self.group_key = space
        if radius is not None:
            self._init_planar(radius, padding)

    def forward(self, x: Tensor, grid_offset: float | Tensor = 0.0) -> Tensor:
        r"""``(B, in_channels, R, H, W) -> (B, out_channels, R, H, W)`` (SE2) or
        ``(B, in_channels, R) -> (B, out_channels, R)`` (SO2).

        ``grid_offset`` is the absolute angle (radians) of rotation channel 0 of the input.
        """
        offset = _grid_offset(grid_offset)
        num = self.num_rotations
        fixed = {1: ("C", self.in_channels), 2: ("R", num)}
        if self.group_key == "SO2":
            x = _check_input(x, ("B", "C", "R"), fixed, self.kernel.omega)
            return self._conv_so2(x, offset)
        x = _check_input(x, ("B", "C", "R", "H", "W"), fixed, self.kernel.omega)
        angles = (offset + 2 * math.pi * torch.arange(num, dtype=torch.float64) / num).to(x.device)
        spatial = rotate_inverse(self._filter_points(), angles)  # (S, K, 2)
        num_off = spatial.shape[1]
        filter_coords = torch.cat(
            [
                spatial[None].expand(num, num, num_off, 2),
                relative_turns(num, x.device)[:, :, None, None].expand(num, num, num_off, 1),
            ],
            -1,
        )  # (R, S, K, 3)

        def domain_coords() -> Tensor:
            coords = torch.zeros(1, num, 3, dtype=torch.float64, device=x.device)
            coords[0, :, 2] = grid_turns(num, offset, x.device)
            return coords

        flat = x.reshape(x.shape[0], -1, *x.shape[-2:])
        return self._planar(flat, filter_coords, domain_coords, (1, num), num, num, offset)

    def _conv_so2(self, x: Tensor, offset: float) -> Tensor:
        dtype = self._dtype()
        relative = relative_turns(self.num_rotations, x.device)
        zf = self.kernel.filter_preactivation(relative.to(dtype)[..., None])

        def domain_coords() -> Tensor:
            return grid_turns(self.num_rotations, offset, x.device)[None, :, None]

        zd = self._domain_preactivation(domain_coords, offset, x.device, (1, self.num_rotations))
        ker = self.kernel.head(zf + zd).unflatten(-1, (self.in_channels, self.out_channels))
        return torch.einsum("bis,rsio->bor", x, ker) / self.num_rotations

    def extra_repr(self) -> str:
        spatial = (
            f", radius={self.radius}, padding={self.padding!r}" if self.group_key == "SE2" else ""
        )
        return (
            f"{self.group_key}, {super().extra_repr()}, num_rotations={self.num_rotations}{spatial}"
        )
