r"""Sampling grids of the non-stationary layers: disk offsets, rotation grids, feature actions,
and the flat image layout (:class:`RowLayout`) of the per-pixel kernel products.

Conventions (shared with :func:`symprior.groups.transform_image`): pixel ``(row, col)`` of an
``H x W`` image sits at :math:`x = \mathrm{col} - (W-1)/2`, :math:`y = (H-1)/2 - \mathrm{row}`,
one unit per pixel. Angles of the rotation grid are :math:`\theta_r = \theta_0 + 2\pi r / R`;
they enter the kernel in turns (:math:`\theta / 2\pi`), principal branch
:math:`(-\tfrac12, \tfrac12]`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from symprior._caching import filling_cache
from symprior.groups import transform_image

__all__ = [
    "RowLayout",
    "disk_offsets",
    "grid_turns",
    "lifted_action",
    "relative_turns",
    "rotate_inverse",
    "row_layout",
    "sample_grid_offset",
]

#: Tolerance below which a rotation of the features is taken as a whole number of grid steps.
_SNAP = 1e-6

#: Pixels per block of a transposing copy on the CPU (:func:`_transposing_copy`).
_TRANSPOSE_BLOCK = 256


def _transposing_copy(out: Tensor, src: Tensor, dim: int, step: int) -> None:
    r"""``out.copy_(src)`` for a ``src`` whose memory order differs from ``out``'s, in blocks of
    ``step`` along ``dim`` on the CPU.

    A transposing copy reads or writes one side with a large stride. Done whole it streams
    both through the caches; done in blocks of a few hundred pixels the strided side of a block
    stays in cache: 2-4 times faster for the ``(B, C, H, W)`` <-> pixel-major copies of
    :class:`RowLayout` at 004's sizes (measured: ``(64 x 16, 784)`` transposed in 0.65 ms
    against 2.6 ms). Other devices copy in one call (one kernel launch).
    """
    size = out.shape[dim]
    if out.device.type != "cpu" or step >= size:
        out.copy_(src)
        return
    for start in range(0, size, step):
        out.narrow(dim, start, min(step, size - start)).copy_(
            src.narrow(dim, start, min(step, size - start))
        )


def disk_offsets(radius: float) -> Tensor:
    r"""Integer pixel offsets ``(K, 2)`` as ``(row, col)`` inside the disk of ``radius`` pixels.

    Row-major order; the disk is closed (:math:`\mathrm{row}^2 + \mathrm{col}^2 \le r^2`).
    """
    reach = math.floor(radius)
    steps = torch.arange(-reach, reach + 1)
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    inside = (rows**2 + cols**2).double() <= radius**2 + 1e-9
    return torch.stack([rows[inside], cols[inside]], -1)


def rotate_inverse(points: Tensor, angles: Tensor) -> Tensor:
    r""":math:`R_\theta^{-1} p` for points ``(..., 2)`` and angles ``(A,)``: ``(A, ..., 2)``."""
    cos = torch.cos(angles).reshape(-1, *([1] * (points.ndim - 1)))
    sin = torch.sin(angles).reshape(-1, *([1] * (points.ndim - 1)))
    x, y = points[..., 0], points[..., 1]
    return torch.stack([cos * x + sin * y, cos * y - sin * x], -1)


def wrap_turns(turns: Tensor) -> Tensor:
    r"""Angles in turns mapped to the principal branch :math:`(-\tfrac12, \tfrac12]`."""
    return turns - torch.ceil(turns - 0.5)


def grid_turns(num_rotations: int, offset: float, device: torch.device | None = None) -> Tensor:
    r"""Absolute angles of the rotation grid in turns, principal branch, float64 ``(R,)``."""
    steps = torch.arange(num_rotations, dtype=torch.float64, device=device)
    return wrap_turns(offset / (2 * math.pi) + steps / num_rotations)


def relative_turns(num_rotations: int, device: torch.device | None = None) -> Tensor:
    r"""Relative angles :math:`\theta_r - \theta_s` in turns, ``(R, S)`` float64.

    Computed from the index difference :math:`(r - s) \bmod R` mapped to
    :math:`(-R/2, R/2]`, so the value depends on the group element :math:`v^{-1}u` alone and
    never on rounding of the grid angles (a cyclic shift of both grids maps it to itself
    exactly).
    """
    idx = torch.arange(num_rotations, device=device)
    steps = (idx[:, None] - idx[None, :]) % num_rotations
    steps = torch.where(2 * steps > num_rotations, steps - num_rotations, steps)
    return steps.double() / num_rotations


def sample_grid_offset(num_rotations: int) -> float:
    r"""Random shift :math:`\theta_0 \sim U[0, 2\pi/R)` of the rotation grid, global torch RNG.

    Used by the lifting layers in training mode (Monte-Carlo integration over SO(2), 004 sec. 5);
    a network that wants the absolute rotation of every layer to be exact draws it once and
    passes it as ``grid_offset`` to the lifting and to the group convolutions.
    """
    if isinstance(num_rotations, bool) or not isinstance(num_rotations, int) or num_rotations < 1:
        raise ValueError(f"num_rotations must be an int >= 1, got {num_rotations!r}")
    return float(torch.rand((), dtype=torch.float64)) * 2 * math.pi / num_rotations


@dataclass(frozen=True, eq=False)
class RowLayout:
    r"""Flat, row-padded layout of an image in which a product over the support disk is one
    strided view per row of the disk: no patches are gathered.

    An image ``(B, C, H, W)`` is stored as ``(length, C, B)`` (batch last): padded by
    ``reach`` zero (or wrapped) rows above and below, row by row with ``row_width`` columns,
    flattened, with ``lead`` zeros in front and zeros behind. The *grid* of positions
    ``n = row * row_width + col`` (``H * row_width`` of them) covers the image.

    The input at grid position ``n`` plus disk offset ``k`` (row ``dr``, column ``dc``) sits at
    address ``n + base[k]``. A disk row holds contiguous columns, so the patch of that row is
    the slice ``[n + base[k0], n + base[k0] + count)`` for every position: a strided view
    (:meth:`rows_view`). The adjoint reads the output gradient at ``n - k``, the same kind of
    view with the row's columns reversed (:meth:`adjoint_start`).

    Columns. With circular padding a stored row carries the ``reach`` wrapped columns on each
    side, and the grid has ``2 reach`` junk columns per row whose values are discarded. With
    zero padding rows are stored without padding columns (``row_width = W``): a patch that
    crosses the left or right edge reads the neighbouring row there, and those (position,
    offset) pairs are masked instead -- their kernel is set to zero (``valid``), which is
    exactly the zero padding.

    Attributes
    ----------
    height, width, reach : int
    circular : bool
    row_width, lead, left, length : int
        Columns per stored row, zeros in front of the flat array, columns of left padding, and
        the flat array's length.
    rows : tuple of (int, int, int, int)
        Per disk row: first and last-plus-one offset index, row offset ``dr`` and half-width
        ``w`` (columns ``-w .. w``).
    base : Tensor
        ``(K,)`` int64 address offsets of the disk offsets.
    blocked_offset, blocked_address : Tensor
        ``(grid * K,)`` int64: the disk offset and the address of the input pixel of every
        (position, offset) pair in *row-blocked* order: disk row by disk row, position-major
        within a row (so disk row ``j``'s block, :meth:`block`, reshapes to
        ``(grid, k1 - k0)``).
    adjoint_source : Tensor
        ``(grid * K,)`` int64 in row-blocked order with each row's offsets reversed (the order in
        which the adjoint's views read them): for the kernel acting on grid position ``p``'s own
        pixel from offset ``k``, the row-blocked index of the forward pair ``(p - k, k)``, which
        has that kernel (wrapped around the image for circular padding).
    adjoint_absent : Tensor
        int64 indices into ``adjoint_source`` of the pairs with no forward pair (the source lies
        off the image with zero padding, or ``p`` is a junk column): their kernels are zero.
    valid : Tensor or None
        ``(grid * K,)`` bool in row-blocked order, zero padding only: whether the pixel at
        ``n + k`` lies in the image's columns. ``None`` for circular padding.
    positions : Tensor
        ``(length, 2)`` float64 pixel positions of the addresses: wrapped into the image for
        circular padding (the value there *is* that pixel); elsewhere any position (the value
        there is zero or masked).
    """

    height: int
    width: int
    reach: int
    circular: bool
    row_width: int
    lead: int
    left: int
    length: int
    rows: tuple[tuple[int, int, int, int], ...]
    base: Tensor
    blocked_offset: Tensor
    blocked_address: Tensor
    adjoint_source: Tensor
    adjoint_absent: Tensor
    valid: Tensor | None
    positions: Tensor
    _masks: dict[torch.dtype, Tensor] = field(default_factory=dict, compare=False, repr=False)

    def mask(self, dtype: torch.dtype) -> Tensor | None:
        r"""``valid`` as a ``(grid * K, 1)`` column of ``dtype`` to multiply by, cached; ``None``
        for circular padding."""
        if self.valid is None:
            return None
        if dtype not in self._masks:
            with filling_cache():
                self._masks[dtype] = self.valid.to(dtype)[:, None]
        return self._masks[dtype]

    @property
    def grid_size(self) -> int:
        r"""Number of grid positions, ``H * row_width``."""
        return self.height * self.row_width

    def block(self, row: int) -> slice:
        r"""The slice of row-blocked order that holds disk row ``row``."""
        first, stop = self.rows[row][:2]
        return slice(self.grid_size * first, self.grid_size * stop)

    def address(self, dr: int, dc: int) -> int:
        r"""Address offset of the pixel ``dr`` rows and ``dc`` columns from a grid position."""
        return self.lead + (self.reach + dr) * self.row_width + self.left + dc

    def row_start(self, row: int) -> int:
        r"""Address offset of the first (leftmost) offset of disk row ``row``."""
        _, _, dr, half = self.rows[row]
        return self.address(dr, -half)

    def adjoint_start(self, row: int) -> int:
        r"""Address offset of :math:`n - k` for the offsets of disk row ``row`` taken in
        reverse column order (``dc = w, ..., -w``)."""
        _, _, dr, half = self.rows[row]
        return self.address(-dr, -half)

    def flatten(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        r"""``(B, C, H, W)`` -> the flat padded array ``(length, C, B)`` (in ``out``, a buffer of
        as many elements, if given)."""
        batch, channels, height, width = x.shape
        r, wp = self.reach, self.row_width
        shape = (self.length, channels, batch)
        flat = x.new_empty(shape) if out is None else out.view(shape)
        top = self.lead + r * wp
        # Everything but the image rows' stored columns is padding: zero it, then copy.
        flat[:top] = 0.0
        flat[top + height * wp :] = 0.0
        rows = flat[top : top + height * wp].view(height, wp, channels, batch)
        rows[:, self.left : self.left + width] = x.permute(2, 3, 1, 0)
        if self.circular:
            rows[:, :r] = rows[:, width : width + r]
            rows[:, width + r :] = rows[:, r : 2 * r]
            flat[self.lead : top] = flat[top + (height - r) * wp : top + height * wp]
            flat[top + height * wp : top + (height + r) * wp] = flat[top : top + r * wp]
        return flat

    def to_grid(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        r"""``(B, C, H, W)`` -> ``(grid, B, C)``, zero on junk columns (in ``out``, a buffer of
        as many elements, if given)."""
        if out is None:
            out = x.new_empty(self.grid_size * x.shape[0] * x.shape[1])
        if self.row_width == self.width:
            # A plain 2-D transpose (B C, H W) -> (H W, B C).
            pixels = x.reshape(-1, self.grid_size)
            out = out.view(self.grid_size, pixels.shape[0])
            _transposing_copy(out, pixels.t(), 0, _TRANSPOSE_BLOCK)
            return out.view(self.grid_size, *x.shape[:2])
        grid = out.view(self.height, self.row_width, *x.shape[:2])
        grid[:, self.width :] = 0.0
        step = max(1, _TRANSPOSE_BLOCK // self.width)
        _transposing_copy(grid[:, : self.width], x.permute(2, 3, 0, 1), 0, step)
        return grid.view(self.grid_size, *x.shape[:2])

    def from_grid(self, y: Tensor) -> Tensor:
        r"""``(grid, C, B)`` -> ``(B, C, H, W)``, dropping junk columns."""
        image = y.view(self.height, self.row_width, *y.shape[1:])[:, : self.width]
        out = y.new_empty(y.shape[2], y.shape[1], self.height, self.width)
        step = max(1, _TRANSPOSE_BLOCK // 2 // self.width)
        _transposing_copy(out, image.permute(3, 2, 0, 1), 2, step)
        return out

    def rows_view(self, flat: Tensor, start: int, count: int) -> Tensor:
        r"""The strided view ``(grid, count * C, B)`` of ``flat`` ``(length, C, B)`` whose entry
        ``n`` holds the ``count`` pixels from address ``n + start`` on."""
        _, channels, batch = flat.shape
        return flat.as_strided(
            (self.grid_size, count * channels, batch),
            (channels * batch, batch, 1),
            flat.storage_offset() + start * channels * batch,
        )


def row_layout(
    height: int, width: int, offsets: Tensor, padding: str, device: torch.device
) -> RowLayout:
    r"""The :class:`RowLayout` of an ``H x W`` image for disk ``offsets`` ``(K, 2)`` (row-major,
    as :func:`disk_offsets` returns them) and ``padding`` ``"zeros"`` or ``"circular"``."""
    reach = int(offsets.abs().max()) if offsets.numel() else 0
    circular = padding == "circular"
    left = reach if circular else 0
    lead = 0 if circular else reach
    row_width = width + 2 * left
    length = lead + (height + 2 * reach) * row_width + 2 * left + reach
    rows = []
    start = 0
    for dr, run in itertools.groupby(offsets.tolist(), key=lambda offset: offset[0]):
        cols = [dc for _, dc in run]
        half = cols[-1]
        if cols != list(range(-half, half + 1)):
            raise ValueError(f"disk row {dr} is not a symmetric run of columns: {cols}")
        rows.append((start, start + len(cols), dr, half))
        start += len(cols)
    off = offsets.to(device=device, dtype=torch.long)
    own = lead + reach * row_width + left  # address offset of a grid position's own pixel
    base = own + off[:, 0] * row_width + off[:, 1]
    grid = torch.arange(height * row_width, device=device)[:, None]
    col = grid % row_width
    offset = torch.arange(len(off), device=device)
    blocks = [offset[a:b] for a, b, *_ in rows]
    count = len(grid)
    blocked_offset = torch.cat([k.expand(count, -1).reshape(-1) for k in blocks])
    blocked_address = torch.cat([(grid + base[k]).reshape(-1) for k in blocks])
    # The adjoint's kernels are the forward's, read from the pair (p - k, k) whose input pixel
    # is p; wrapped around the image for circular padding, absent (-1) off the image or on junk
    # columns.
    image_row, image_col = grid[:, 0] // row_width, col[:, 0]
    sources = []
    for (first, stop, *_), k in zip(rows, blocks, strict=True):
        k = k.flip(0)
        src_row = image_row[:, None] - off[k, 0]
        src_col = image_col[:, None] - off[k, 1]
        if circular:
            inside_image = (image_col < width)[:, None].expand_as(src_col)
            src_row, src_col = src_row % height, src_col % width
        else:
            inside_image = (src_row >= 0) & (src_row < height) & (src_col >= 0)
            inside_image &= src_col < width
        pair = count * first + (src_row * row_width + src_col) * (stop - first) + k - first
        sources.append(torch.where(inside_image, pair, -1).reshape(-1))
    adjoint_source = torch.cat(sources)
    valid = None
    if not circular:
        dc = off[:, 1]

        def inside(shift: Tensor) -> Tensor:  # whether column col + shift is in the image
            return ((col + shift >= 0) & (col + shift < width)).reshape(-1)

        valid = torch.cat([inside(dc[k]) for k in blocks])
    flat = torch.arange(length, device=device) - lead
    row = torch.div(flat, row_width, rounding_mode="floor") - reach
    column = flat % row_width - left
    if circular:
        row, column = row % height, column % width
    positions = torch.stack(
        [column.double() - (width - 1) / 2, (height - 1) / 2 - row.double()], -1
    )
    return RowLayout(
        height,
        width,
        reach,
        circular,
        row_width,
        lead,
        left,
        length,
        tuple(rows),
        base,
        blocked_offset,
        blocked_address,
        adjoint_source.clamp(min=0),
        (adjoint_source < 0).nonzero().reshape(-1),
        valid,
        positions,
    )


def _rotation_angle(g: Tensor) -> float:
    if not isinstance(g, Tensor):
        raise TypeError(f"g must be a torch.Tensor, got {type(g).__name__}")
    if g.shape not in ((2, 2), (3, 3)):
        raise ValueError(
            f"g must be one 2x2 rotation or one 3x3 SE(2) element, got shape {tuple(g.shape)}"
        )
    lin = g[:2, :2].detach().double().cpu()
    if (
        float((lin.T @ lin - torch.eye(2, dtype=torch.float64)).abs().max()) > 1e-6
        or float(torch.linalg.det(lin)) < 0
    ):
        raise ValueError("g must be a rotation (SO(2)) or a rigid motion (SE(2)) of the plane")
    return math.atan2(float(lin[1, 0]), float(lin[0, 0]))


def _shift_rotations(features: Tensor, steps: float, dim: int) -> Tensor:
    num = features.shape[dim]
    steps = steps % num
    whole = round(steps)
    if abs(steps - whole) < _SNAP:
        return torch.roll(features, whole % num, dims=dim)
    low = math.floor(steps)
    frac = steps - low
    return (1 - frac) * torch.roll(features, low, dims=dim) + frac * torch.roll(
        features, low + 1, dims=dim
    )


def lifted_action(
    g: Tensor, features: Tensor, *, spatial: bool = True, padding: str = "zeros"
) -> Tensor:
    r"""Act with a rotation or rigid motion on features over a rotation grid.

    :math:`(g \cdot h)(x, \theta) = h(g^{-1}x, \theta - \alpha)` for :math:`g` a rotation by
    :math:`\alpha` (and translation :math:`t`): the image axes are transformed with
    :func:`~symprior.groups.transform_image` and the rotation axis is shifted cyclically by
    :math:`\alpha / (2\pi/R)` steps (``torch.roll`` for a whole number of steps, linear
    interpolation on the circle otherwise). This is the output action of
    :class:`NonStationaryLifting` and :class:`NonStationaryGroupConv`.

    Parameters
    ----------
    g : Tensor
        One ``2 x 2`` rotation or one ``3 x 3`` SE(2) element.
    features : Tensor
        ``(..., R, H, W)`` if ``spatial`` (SE(2) layout) else ``(..., R)`` (SO(2) layout).
    spatial : bool
        Whether ``features`` have image axes.
    padding : {"zeros", "circular"}
        Outside the image (see :func:`~symprior.groups.transform_image`).

    Returns
    -------
    Tensor
        Same shape as ``features``; exact for rotations by multiples of :math:`2\pi/R` that
        are also multiples of 90 degrees, and for integer translations.

    Examples
    --------
    >>> import math, torch
    >>> from symprior.groups import SO2
    >>> h = torch.arange(4.0)
    >>> lifted_action(SO2().exp(torch.tensor([math.pi / 2])), h, spatial=False)
    tensor([3., 0., 1., 2.])
    """
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    angle = _rotation_angle(g)
    if spatial:
        if features.ndim < 3:
            raise ValueError(
                f"features must have shape (..., R, H, W), got {tuple(features.shape)}"
            )
        dim = -3
    else:
        if features.ndim < 1:
            raise ValueError("features must have shape (..., R)")
        if g.shape == (3, 3) and float(g[:2, 2].detach().abs().max()) > 0:
            raise ValueError("features without image axes (spatial=False) admit no translation")
        dim = -1
    steps = angle / (2 * math.pi) * features.shape[dim]
    out = _shift_rotations(features, steps, dim)
    if spatial:
        out = transform_image(out, g.to(features.device), padding=padding)
    return out
