r"""Batched matrix functions used by the groups (float64 throughout)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LogUndefinedError", "matrix_log", "skew2", "skew3", "unskew3"]


class LogUndefinedError(ValueError):
    r"""Raised when a logarithm is asked for outside the principal domain."""


def _sqrtm_denman_beavers(a: Tensor, iterations: int = 60) -> Tensor:
    r"""Principal square root by the scaled Denman-Beavers iteration (batched).

    Converges quadratically for matrices with no eigenvalue on the closed negative real axis.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a, eye.clone()
    for _ in range(iterations):
        # Determinant scaling keeps the iteration well conditioned far from the identity.
        det = torch.linalg.det(y @ z).abs().clamp_min(1e-300)
        mu = det.pow(-1.0 / (2 * a.shape[-1]))[..., None, None]
        y_next = 0.5 * (mu * y + torch.linalg.inv(z) / mu)
        z_next = 0.5 * (mu * z + torch.linalg.inv(y) / mu)
        done = bool((y_next - y).abs().amax() <= 1e-15 * y_next.abs().amax().clamp_min(1.0))
        y, z = y_next, z_next
        if done:
            break
    return y


def matrix_log(a: Tensor) -> Tensor:
    r"""Principal matrix logarithm of a batch of real matrices ``(..., n, n)``.

    Inverse scaling and squaring: take square roots until :math:`\|A^{1/2^k} - I\| < 1/4`, sum the
    Gregory series of :math:`\log(I + X)` to machine precision and multiply by :math:`2^k`. Works
    for defective matrices (shears) where an eigendecomposition would fail. Raises ``ValueError``
    when a matrix has an eigenvalue on the closed negative real axis (no real principal log).
    """
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"matrix_log expects square matrices, got shape {tuple(a.shape)}")
    a = a.to(torch.float64) if not a.dtype.is_floating_point else a
    eig = torch.linalg.eigvals(a)
    neg = (eig.imag.abs() <= 1e-12 * eig.abs().clamp_min(1.0)) & (eig.real <= 0)
    if bool(neg.any()):
        raise LogUndefinedError(
            "matrix_log: a matrix has an eigenvalue on the closed negative real axis, so it has no "
            "real principal logarithm (it is outside the image of exp on the principal domain)"
        )
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    x = a
    k = 0
    while float((x - eye).abs().sum(-1).amax()) >= 0.25 and k < 60:
        x = _sqrtm_denman_beavers(x)
        k += 1
    d = x - eye
    # log(I + D) = 2 atanh(D (2I + D)^-1) converges faster than the Mercator series.
    y = torch.linalg.solve((2 * eye + d).transpose(-1, -2), d.transpose(-1, -2)).transpose(-1, -2)
    y2 = y @ y
    term = y
    out = y.clone()
    for j in range(1, 40):
        term = term @ y2
        out = out + term / (2 * j + 1)
        if float(term.abs().amax()) < 1e-18:
            break
    return (2.0**k) * 2.0 * out


def skew2(theta: Tensor) -> Tensor:
    r"""The 2x2 generator ``theta * [[0, -1], [1, 0]]`` for a batch of angles ``(...,)``."""
    z = torch.zeros_like(theta)
    return torch.stack([torch.stack([z, -theta], -1), torch.stack([theta, z], -1)], -2)


def skew3(w: Tensor) -> Tensor:
    r"""The cross-product matrix :math:`[w]_\times` of ``w`` with shape ``(..., 3)``."""
    z = torch.zeros_like(w[..., 0])
    x, y, s = w[..., 0], w[..., 1], w[..., 2]
    return torch.stack(
        [torch.stack([z, -s, y], -1), torch.stack([s, z, -x], -1), torch.stack([-y, x, z], -1)],
        -2,
    )


def unskew3(m: Tensor) -> Tensor:
    r"""Inverse of :func:`skew3` on the antisymmetric part of ``m``."""
    return 0.5 * torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
    )
