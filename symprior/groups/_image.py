r"""Actions of planar groups on images by resampling: :math:`(g \cdot f)(p) = f(g^{-1} p)`.

Pixel ``(row, col)`` of an ``H x W`` image sits at the point
:math:`x = \mathrm{col} - (W-1)/2`, :math:`y = (H-1)/2 - \mathrm{row}`: the origin is the image
centre, ``x`` points right, ``y`` points up, and one unit is one pixel. With this convention a
rotation by :math:`+90°` is ``torch.rot90(image, 1, dims=(-2, -1))`` and the translation
``(1, 0)`` moves the content one column to the right.

Sample points that land on pixel centres (to ``1e-6``) are snapped to them, so rotations by
multiples of 90 degrees and integer shifts are exact (a pure gather); otherwise the image is
interpolated bilinearly. Outside the image the signal is zero (``padding="zeros"``) or periodic
(``padding="circular"``, exact for integer shifts, as in a circular convolution).
"""

from __future__ import annotations

import torch
from torch import Tensor

from symprior.groups._group import (
    O2,
    SE2,
    SL2,
    SO2,
    Affine2,
    Cyclic,
    Dihedral,
    Group,
    Scaling,
    Translation,
)

__all__ = ["image_coordinates", "transform_image"]

_PLANAR = (SO2, O2, SE2, SL2, Affine2, Cyclic, Dihedral)


def image_coordinates(
    height: int,
    width: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Points ``(height, width, 2)`` of the pixel centres, as ``(x, y)`` (module docstring)."""
    rows = torch.arange(height, dtype=dtype, device=device)
    cols = torch.arange(width, dtype=dtype, device=device)
    y = (height - 1) / 2 - rows
    x = cols - (width - 1) / 2
    return torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), -1)


def _check_group(group: Group | None) -> None:
    if group is None:
        return
    ok = isinstance(group, _PLANAR) or (
        isinstance(group, Translation | Scaling) and group.space_dim == 2
    )
    if not ok:
        raise ValueError(
            f"transform_image supports planar groups (SO2, O2, SE2, Translation(2), Scaling(2), "
            f"Affine2, SL2, Cyclic, Dihedral), got {group!r}"
        )


def _inverse_affine(g: Tensor) -> tuple[Tensor, Tensor]:
    """Linear part and offset of g^-1 for 2x2 linear or 3x3 homogeneous elements."""
    if g.shape[-1] == 2:
        return torch.linalg.inv(g), g.new_zeros(*g.shape[:-2], 2)
    lin = torch.linalg.inv(g[..., :2, :2])
    off = -(lin @ g[..., :2, 2:3])[..., 0]
    return lin, off


def transform_image(
    images: Tensor,
    g: Tensor,
    group: Group | None = None,
    *,
    padding: str = "zeros",
) -> Tensor:
    r"""Act with planar group elements on images.

    Parameters
    ----------
    images : Tensor
        ``(..., H, W)``. With a batch of elements, the first axis of ``images`` is the batch.
    g : Tensor
        One element or a batch ``(B, n, n)``: ``2 x 2`` linear maps (SO2, O2, Scaling(2), SL2,
        Cyclic, Dihedral) or ``3 x 3`` homogeneous matrices (SE2, Translation(2), Affine2).
    group : Group, optional
        When given, ``g`` is checked against it and the group must act on the plane.
    padding : {"zeros", "circular"}
        The signal outside the image.

    Returns
    -------
    Tensor
        :math:`(g \cdot f)(p) = f(g^{-1}p)` with the dtype and device of ``images``.

    Examples
    --------
    >>> import torch, math
    >>> from symprior.groups import SO2
    >>> img = torch.arange(9.0).reshape(3, 3)
    >>> g = SO2().exp(torch.tensor([math.pi / 2]))
    >>> torch.equal(transform_image(img, g), torch.rot90(img, 1, dims=(-2, -1)))
    True
    """
    if not isinstance(images, Tensor) or not isinstance(g, Tensor):
        raise TypeError("images and g must be torch.Tensors")
    if images.ndim < 2:
        raise ValueError(f"images must have shape (..., H, W), got {tuple(images.shape)}")
    if padding not in ("zeros", "circular"):
        raise ValueError(f"padding must be 'zeros' or 'circular', got {padding!r}")
    _check_group(group)
    if group is not None:
        group.check_elements(g)
    if g.ndim < 2 or g.shape[-1] != g.shape[-2] or g.shape[-1] not in (2, 3):
        raise ValueError(
            f"g must be 2x2 linear or 3x3 homogeneous planar elements, got shape {tuple(g.shape)}"
        )
    if g.ndim > 3:
        raise ValueError(f"g must be one element or a batch (B, n, n), got {tuple(g.shape)}")
    batched = g.ndim == 3
    if batched and images.shape[0] != g.shape[0]:
        raise ValueError(
            f"a batch of {g.shape[0]} elements needs images with leading axis {g.shape[0]}, "
            f"got {tuple(images.shape)}"
        )
    h, w = images.shape[-2:]
    g64 = g.detach().to(device=images.device, dtype=torch.float64)
    gb = g64 if batched else g64[None]
    lin, off = _inverse_affine(gb)  # (B, 2, 2), (B, 2)
    pts = image_coordinates(h, w, device=images.device).reshape(-1, 2)  # (P, 2)
    src = torch.einsum("bij,pj->bpi", lin, pts) + off[:, None, :]
    col = src[..., 0] + (w - 1) / 2
    row = (h - 1) / 2 - src[..., 1]
    # Snap sample points that are pixel centres up to rounding, so exact actions stay exact.
    col = torch.where((col - col.round()).abs() < 1e-6, col.round(), col)
    row = torch.where((row - row.round()).abs() < 1e-6, row.round(), row)
    r0, c0 = row.floor(), col.floor()
    fr, fc = (row - r0).to(images.dtype), (col - c0).to(images.dtype)
    r0l, c0l = r0.long(), c0.long()

    nb = gb.shape[0]
    flat = images.reshape(nb, -1, h * w) if batched else images.reshape(1, -1, h * w)
    out = torch.zeros(nb, flat.shape[1], h * w, dtype=images.dtype, device=images.device)
    for dr, dc, weight in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        rr, cc = r0l + dr, c0l + dc
        if padding == "circular":
            valid = torch.ones_like(rr, dtype=torch.bool)
            rr, cc = rr % h, cc % w
        else:
            valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            rr, cc = rr.clamp(0, h - 1), cc.clamp(0, w - 1)
        idx = (rr * w + cc)[:, None, :].expand(nb, flat.shape[1], h * w)
        wgt = torch.where(valid, weight, torch.zeros_like(weight))
        if not bool((wgt != 0).any()):
            continue
        out = out + wgt[:, None, :] * torch.gather(flat.expand(nb, -1, -1), 2, idx)
    return out.reshape(images.shape)
