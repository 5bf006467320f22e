r"""Sampling grids of the non-stationary layers: disk offsets, rotation grids, feature actions.

Conventions (shared with :func:`symprior.groups.transform_image`): pixel ``(row, col)`` of an
``H x W`` image sits at :math:`x = \mathrm{col} - (W-1)/2`, :math:`y = (H-1)/2 - \mathrm{row}`,
one unit per pixel. Angles of the rotation grid are :math:`\theta_r = \theta_0 + 2\pi r / R`;
they enter the kernel in turns (:math:`\theta / 2\pi`), principal branch
:math:`(-\tfrac12, \tfrac12]`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from symprior.groups import transform_image

__all__ = [
    "disk_offsets",
    "grid_turns",
    "lifted_action",
    "planar_indices",
    "relative_turns",
    "rotate_inverse",
    "sample_grid_offset",
]

#: Tolerance below which a rotation of the features is taken as a whole number of grid steps.
_SNAP = 1e-6


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


def planar_indices(
    height: int, width: int, offsets: Tensor, padding: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    r"""Gather indices ``(H W, K)`` into the padded, flattened image and its pixel positions.

    The image is padded by ``reach = max |offset|`` on each side. Entry ``[p, k]`` is the flat
    index of the input pixel at output pixel ``p`` plus offset ``k``. The positions
    ``(Hp Wp, 2)`` (float64, pixels) are those of the padded pixels: wrapped into the image for
    ``padding="circular"`` (the input there *is* that pixel), extended linearly for zeros (the
    input there is zero, so any value would do).
    """
    reach = int(offsets.abs().max()) if offsets.numel() else 0
    hp, wp = height + 2 * reach, width + 2 * reach
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    off = offsets.to(device)
    out_r = rows[:, None, None] + reach + off[None, None, :, 0]
    out_c = cols[None, :, None] + reach + off[None, None, :, 1]
    index = (out_r * wp + out_c).reshape(height * width, -1)
    prow = torch.arange(hp, device=device, dtype=torch.float64) - reach
    pcol = torch.arange(wp, device=device, dtype=torch.float64) - reach
    if padding == "circular":
        prow, pcol = prow % height, pcol % width
    px = pcol - (width - 1) / 2
    py = (height - 1) / 2 - prow
    positions = torch.stack(torch.broadcast_tensors(px[None, :], py[:, None]), -1)
    return index, positions.reshape(-1, 2)


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
