r"""The gravitational N-body task of 001 app. C.2 (after Brehmer et al. 2023, GATr).

Recipe (001 sec. 5.1 and app. C.2): four bodies per sample, a central "star" of mass in
:math:`[1, 10]` and three "planets" of mass in :math:`[0.01, 0.1]` at a radius in
:math:`[0.1, 1]`; predict the positions after 100 Euler steps of Newton's equations from the
initial masses, positions and velocities. The centre of mass is subtracted (001 sec. 5: "we subtract
the center of mass for translation"), so the remaining symmetry is :math:`SO(3)`. In-distribution
samples are rotated by an angle in :math:`[-10°, 10°]`, out-of-distribution samples by an angle of
magnitude in :math:`[90°, 180°]`.

Details 001 leaves to Brehmer et al. (2023) and that follow their reference simulator: units with
gravitational constant :math:`G = 1`; masses log-uniform in their ranges; planets in the
:math:`x`-:math:`y` plane around the star, which starts at rest at the origin; planet velocities
those of a stable circular orbit, :math:`\sqrt{G M_\star / r}`, clockwise or counter-clockwise with
probability 1/2 each, plus isotropic Gaussian noise of standard deviation 0.01; total time 0.1 in
100 semi-implicit Euler steps (:math:`v \leftarrow v + dt\,a`, then
:math:`x \leftarrow x + dt\,v`, :math:`dt = 0.001`); samples in which a body moves by more than 2
are rejected as outliers.

Choices of symprior (001 is silent):

* planets are uniform in area on the annulus :math:`0.1 \le r \le 1`; the star is body 0 (no
  permutation of the bodies);
* the centre-of-mass frame is the zero-momentum frame: the mass-weighted mean position *and*
  velocity are subtracted from the initial state, so the centre of mass stays at the origin for
  the whole simulation (the semi-implicit Euler steps conserve total momentum);
* a rotation by angle :math:`\alpha` is about an axis drawn uniformly on the sphere (001 learns
  :math:`SO(3)`): :math:`R = \exp(\alpha\, \hat n \cdot L)` with the generators
  :math:`L_x, L_y, L_z` of :class:`~symprior.groups.SO3`, so about :math:`\hat n = e_z` it is the
  counter-clockwise :class:`~symprior.groups.SO2` rotation of the :math:`x`-:math:`y` plane. A
  random axis matters: the planets' in-plane angle is already uniform, so rotations about
  :math:`e_z` alone would not move the data out of distribution; tilting the orbital plane does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import Tensor

from symprior.data._common import (
    SupervisedData,
    check_dtype,
    check_float,
    check_int,
    check_range,
    make_generator,
)
from symprior.groups import SO3, Rep, Scalar, V

__all__ = [
    "IN_DISTRIBUTION_DEGREES",
    "OUT_OF_DISTRIBUTION_DEGREES",
    "NBodyData",
    "nbody",
    "nbody_rotations",
    "rotate_nbody",
    "simulate_nbody",
]

#: Largest rotation angle (degrees) of the in-distribution set (001 app. C.2).
IN_DISTRIBUTION_DEGREES = 10.0
#: Range of rotation-angle magnitudes (degrees) of the out-of-distribution set (001 app. C.2).
OUT_OF_DISTRIBUTION_DEGREES = (90.0, 180.0)

RotationKind = Literal["none", "in_distribution", "out_of_distribution"]
_KINDS = ("none", "in_distribution", "out_of_distribution")
_MAX_ROUNDS = 100
_CHUNK = 512


@dataclasses.dataclass(frozen=True, eq=False)
class NBodyData(SupervisedData):
    r"""Samples of the N-body task (001 app. C.2), ``B`` bodies each, body 0 the star.

    Attributes
    ----------
    x : Tensor
        ``(N, B, 7)``: per body the mass, the initial position (3) and the initial velocity (3),
        in the centre-of-mass frame; the action of :math:`SO(3)` is ``rep_in`` on the last axis.
    y : Tensor
        ``(N, B, 3)`` positions after ``num_steps`` Euler steps (``rep_out`` = ``V(SO3())``).
    rotations : Tensor
        ``(N, 3, 3)`` the rotation applied to each sample (identity when not rotated).
    angles : Tensor
        ``(N,)`` its angle in radians, in :math:`[0, \pi]`.
    axes : Tensor
        ``(N, 3)`` its unit axis (:math:`e_z` for the identity).
    dt, gravity : float
        Step size and gravitational constant :math:`G`.
    num_steps : int
        Number of Euler steps.
    """

    rotations: Tensor
    angles: Tensor
    axes: Tensor
    dt: float
    gravity: float
    num_steps: int

    @property
    def masses(self) -> Tensor:
        """``(N, B)`` body masses."""
        return self.x[..., 0]

    @property
    def positions(self) -> Tensor:
        """``(N, B, 3)`` initial positions."""
        return self.x[..., 1:4]

    @property
    def velocities(self) -> Tensor:
        """``(N, B, 3)`` initial velocities."""
        return self.x[..., 4:7]

    @property
    def group(self) -> SO3:
        """The symmetry group, :math:`SO(3)`."""
        return SO3()

    @property
    def rep_in(self) -> Rep:
        """Action on the last axis of ``x``: a scalar (mass) and two vectors."""
        group = SO3()
        return Scalar(group) + V(group) + V(group)

    @property
    def rep_out(self) -> Rep:
        """Action on the last axis of ``y``: a vector."""
        return V(SO3())


def _accelerations(masses: Tensor, positions: Tensor, gravity: float, eye: Tensor) -> Tensor:
    """Accelerations ``(B, D, M)`` from masses ``(B, M)`` and positions ``(B, D, M)``."""
    # Samples on the last (contiguous) axis: every reduction below adds whole slabs, which is
    # an order of magnitude faster than reducing over short trailing axes of size B or D.
    diff = positions[:, None] - positions[None, :]  # x_j - x_i at [j, i, d, m]
    dist2 = diff.square().sum(dim=2)
    # Infinite self-distance makes the self-interaction exactly zero without a special case.
    weights = (gravity * masses[:, None, :]) * dist2.masked_fill(eye, math.inf).pow(-1.5)
    return (weights[:, :, None, :] * diff).sum(dim=0)


def simulate_nbody(
    masses: Tensor,
    positions: Tensor,
    velocities: Tensor,
    *,
    num_steps: int = 100,
    dt: float = 0.001,
    gravity: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""Newtonian gravity by semi-implicit Euler steps, batched over samples (001 app. C.2).

    Each step is :math:`v_i \leftarrow v_i + dt\,G\sum_{j\ne i} m_j (x_j - x_i)/|x_j - x_i|^3`,
    then :math:`x_i \leftarrow x_i + dt\,v_i` (the order of Brehmer et al.'s simulator). Equivariant
    under rotations, translations and permutations of the bodies; conserves total momentum.

    Parameters
    ----------
    masses : Tensor
        ``(..., B)``.
    positions, velocities : Tensor
        ``(..., B, D)`` (``D = 3`` for the task; any dimension works).
    num_steps : int
    dt : float
    gravity : float
        The gravitational constant :math:`G`.

    Returns
    -------
    positions, velocities : Tensor
        ``(..., B, D)`` after ``num_steps`` steps, in the dtype of the inputs.
    """
    for name, value in (("masses", masses), ("positions", positions), ("velocities", velocities)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor")
    if positions.ndim < 2 or positions.shape != velocities.shape:
        raise ValueError(
            f"positions and velocities must both have shape (..., B, D), got "
            f"{tuple(positions.shape)} and {tuple(velocities.shape)}"
        )
    if masses.shape != positions.shape[:-1]:
        raise ValueError(
            f"masses must have shape {tuple(positions.shape[:-1])} (positions without the last "
            f"axis), got {tuple(masses.shape)}"
        )
    check_int(num_steps, "num_steps", minimum=0)
    h = check_float(dt, "dt", minimum=0.0, strict=True)
    big_g = check_float(gravity, "gravity", minimum=0.0)
    batch, (bodies, dim) = positions.shape[:-2], positions.shape[-2:]
    x = positions.reshape(-1, bodies, dim).permute(1, 2, 0).contiguous()
    v = velocities.reshape(-1, bodies, dim).permute(1, 2, 0).contiguous()
    m = masses.reshape(-1, bodies).T.contiguous()
    eye = torch.eye(bodies, dtype=torch.bool, device=x.device)[:, :, None]
    # Chunks of samples keep the working set in cache: on CPU, one pass over 5000 samples is
    # several times slower than ten passes over 500.
    xs, vs = [], []
    for start in range(0, max(x.shape[-1], 1), _CHUNK):
        xc, vc = x[..., start : start + _CHUNK], v[..., start : start + _CHUNK]
        mc = m[..., start : start + _CHUNK]
        for _ in range(num_steps):
            vc = vc + h * _accelerations(mc, xc, big_g, eye)
            xc = xc + h * vc
        xs.append(xc)
        vs.append(vc)
    x, v = torch.cat(xs, dim=-1), torch.cat(vs, dim=-1)

    def unflatten(t: Tensor) -> Tensor:
        return t.permute(2, 0, 1).reshape(*batch, bodies, dim)

    return unflatten(x), unflatten(v)


def nbody_rotations(
    num: int,
    kind: RotationKind,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Random rotations for the N-body test sets of 001 app. C.2, float64.

    ``"in_distribution"``: angle uniform in :math:`[-10°, 10°]`; ``"out_of_distribution"``:
    magnitude uniform in :math:`[90°, 180°]` with a random sign; ``"none"``: the identity. The
    axis is uniform on the sphere (module docstring). A negative angle about :math:`\hat n` is
    reported as the positive angle about :math:`-\hat n`.

    Returns
    -------
    rotations : Tensor
        ``(num, 3, 3)``, :math:`\exp(\alpha\,\hat n\cdot L)` with :class:`~symprior.groups.SO3`.
    angles : Tensor
        ``(num,)`` magnitudes :math:`|\alpha|` in radians.
    axes : Tensor
        ``(num, 3)`` unit axes.
    """
    check_int(num, "num")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    f64 = torch.float64
    axes = torch.randn(num, 3, generator=generator, dtype=f64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    u = torch.rand(num, generator=generator, dtype=f64)
    if kind == "none":
        degrees = torch.zeros(num, dtype=f64)
        axes = torch.tensor([0.0, 0.0, 1.0], dtype=f64).expand(num, 3).clone()
    elif kind == "in_distribution":
        degrees = (2 * u - 1) * IN_DISTRIBUTION_DEGREES
    else:
        low, high = OUT_OF_DISTRIBUTION_DEGREES
        sign = torch.where(torch.rand(num, generator=generator, dtype=f64) < 0.5, -1.0, 1.0)
        degrees = sign * (low + (high - low) * u)
    angles = torch.deg2rad(degrees)
    rotations = SO3().exp(angles[:, None] * axes)
    axes = torch.where(angles[:, None] < 0, -axes, axes)
    return rotations, angles.abs(), axes


def _axis_angle(rotations: Tensor) -> tuple[Tensor, Tensor]:
    vec = SO3().log(rotations)
    angles = vec.norm(dim=-1)
    e_z = torch.tensor([0.0, 0.0, 1.0], dtype=vec.dtype).expand_as(vec)
    safe = angles.clamp_min(1e-300)[:, None]
    axes = torch.where(angles[:, None] > 0, vec / safe, e_z)
    return angles, axes


def rotate_nbody(
    data: NBodyData,
    rotations: Tensor | RotationKind,
    *,
    seed: int = 0,
) -> NBodyData:
    r"""Rotate every sample of ``data``: inputs and targets alike (the simulator is equivariant).

    Parameters
    ----------
    data : NBodyData
    rotations : Tensor or str
        Rotation matrices ``(N, 3, 3)`` (or one ``(3, 3)``), or a kind of :func:`nbody_rotations`
        (``"in_distribution"``, ``"out_of_distribution"``, ``"none"``) drawn with ``seed``.
        Rotations compose with those already applied (``data.rotations`` becomes
        ``R @ data.rotations``); rotate an unrotated set to get the paper's test sets.
    seed : int
        Seed of the random rotations (ignored for a tensor).

    Returns
    -------
    NBodyData
        ``x`` and ``y`` rotated by :math:`R`, ``rotations``, ``angles`` and ``axes`` updated.
    """
    if not isinstance(data, NBodyData):
        raise TypeError(f"data must be NBodyData, got {type(data).__name__}")
    n = data.num_samples
    if isinstance(rotations, str):
        rot, _, _ = nbody_rotations(n, rotations, generator=make_generator(seed))
    elif isinstance(rotations, Tensor):
        rot = SO3().check_elements(rotations.detach(), "rotations").to("cpu", torch.float64)
        rot = rot.expand(n, 3, 3) if rot.ndim == 2 else rot
        if rot.shape != (n, 3, 3):
            raise ValueError(
                f"rotations must have shape ({n}, 3, 3) or (3, 3), got {tuple(rotations.shape)}"
            )
    else:
        raise TypeError(f"rotations must be a Tensor or a str, got {type(rotations).__name__}")
    device, dtype = data.x.device, data.x.dtype
    rot_d = rot.to(device)
    x = data.rep_in.act(rot_d[:, None], data.x.to(torch.float64))
    y = data.rep_out.act(rot_d[:, None], data.y.to(torch.float64))
    total = rot_d @ data.rotations.to(torch.float64)
    angles, axes = _axis_angle(total.cpu())
    return dataclasses.replace(
        data,
        x=x.to(dtype),
        y=y.to(dtype),
        rotations=total.to(dtype),
        angles=angles.to(device, dtype),
        axes=axes.to(device, dtype),
    )


def _log_uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> Tensor:
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _initial_states(
    num: int,
    num_bodies: int,
    star_mass: tuple[float, float],
    planet_mass: tuple[float, float],
    radius: tuple[float, float],
    velocity_noise: float,
    gravity: float,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    f64 = torch.float64
    planets = num_bodies - 1
    m_star = _log_uniform((num, 1), *star_mass, gen)
    m_planets = _log_uniform((num, planets), *planet_mass, gen)
    masses = torch.cat([m_star, m_planets], dim=1)

    r0, r1 = radius
    r = torch.sqrt(r0**2 + (r1**2 - r0**2) * torch.rand(num, planets, generator=gen, dtype=f64))
    phi = 2 * math.pi * torch.rand(num, planets, generator=gen, dtype=f64)
    zeros = torch.zeros_like(r)
    planet_x = torch.stack([r * torch.cos(phi), r * torch.sin(phi), zeros], dim=-1)
    # e_z x (x, y, 0) = (-y, x, 0): the direction of a circular orbit in the x-y plane.
    tangent = torch.stack([-planet_x[..., 1], planet_x[..., 0], zeros], dim=-1)
    orientation = torch.where(torch.rand(num, planets, generator=gen, dtype=f64) < 0.5, -1.0, 1.0)
    speed_over_r = torch.sqrt(gravity * m_star / r**3)
    planet_v = (orientation * speed_over_r)[..., None] * tangent
    planet_v = planet_v + velocity_noise * torch.randn(num, planets, 3, generator=gen, dtype=f64)

    origin = torch.zeros(num, 1, 3, dtype=f64)
    positions = torch.cat([origin, planet_x], dim=1)
    velocities = torch.cat([origin, planet_v], dim=1)
    weights = (masses / masses.sum(dim=1, keepdim=True))[..., None]
    positions = positions - (weights * positions).sum(dim=1, keepdim=True)
    velocities = velocities - (weights * velocities).sum(dim=1, keepdim=True)
    return masses, positions, velocities


def nbody(
    num_samples: int = 100,
    *,
    rotation: RotationKind = "in_distribution",
    num_bodies: int = 4,
    num_steps: int = 100,
    dt: float = 0.001,
    gravity: float = 1.0,
    star_mass: tuple[float, float] = (1.0, 10.0),
    planet_mass: tuple[float, float] = (0.01, 0.1),
    radius: tuple[float, float] = (0.1, 1.0),
    velocity_noise: float = 0.01,
    outlier_threshold: float = 2.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> NBodyData:
    r"""The N-body dataset of 001 app. C.2: initial state -> positions after 100 Euler steps.

    001 trains on 100 samples and tests on 5000 (validation, test and OOD sets each): e.g.
    ``nbody(100, seed=0)``, ``nbody(5000, seed=1)`` and
    ``nbody(5000, rotation="out_of_distribution", seed=2)``.

    Parameters
    ----------
    num_samples : int
        ``N``.
    rotation : {"in_distribution", "out_of_distribution", "none"}
        Random rotation of each sample about its centre of mass (:func:`nbody_rotations`).
    num_bodies : int
        ``B``, the star and ``B - 1`` planets (001: 4).
    num_steps, dt, gravity
        As in :func:`simulate_nbody` (total time ``num_steps * dt`` = 0.1 by default).
    star_mass, planet_mass, radius : tuple of float
        Ranges ``(low, high)`` of the star mass, planet masses and planet radii.
    velocity_noise : float
        Standard deviation of the noise on the circular-orbit velocities.
    outlier_threshold : float
        Samples in which a body moves further are redrawn.
    seed : int
    dtype : torch.dtype

    Returns
    -------
    NBodyData
        ``x`` ``(N, B, 7)``, ``y`` ``(N, B, 3)``, ``rotations`` ``(N, 3, 3)``, ``angles``
        ``(N,)``, ``axes`` ``(N, 3)``.

    Examples
    --------
    >>> data = nbody(8, dtype=torch.float64)
    >>> tuple(data.x.shape), tuple(data.y.shape)
    ((8, 4, 7), (8, 4, 3))
    >>> com = (data.masses[..., None] * data.y).sum(1) / data.masses.sum(1, keepdim=True)
    >>> bool(com.abs().max() < 1e-12)
    True
    >>> bool((data.angles <= math.radians(10)).all())
    True
    """
    check_int(num_samples, "num_samples")
    if rotation not in _KINDS:
        raise ValueError(f"rotation must be one of {_KINDS}, got {rotation!r}")
    check_int(num_bodies, "num_bodies", minimum=2)
    check_int(num_steps, "num_steps", minimum=0)
    check_float(dt, "dt", minimum=0.0, strict=True)
    big_g = check_float(gravity, "gravity", minimum=0.0, strict=True)
    m_star = check_range(star_mass, "star_mass")
    m_planet = check_range(planet_mass, "planet_mass")
    radii = check_range(radius, "radius")
    noise = check_float(velocity_noise, "velocity_noise", minimum=0.0)
    threshold = check_float(outlier_threshold, "outlier_threshold", minimum=0.0, strict=True)
    check_dtype(dtype)
    gen = make_generator(seed)

    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    accepted = 0
    for _ in range(_MAX_ROUNDS):
        # Draw a few more than needed: rejection of outliers removes some.
        batch = math.ceil(1.1 * (num_samples - accepted)) + 1
        masses, pos, vel = _initial_states(
            batch, num_bodies, m_star, m_planet, radii, noise, big_g, gen
        )
        final, _ = simulate_nbody(masses, pos, vel, num_steps=num_steps, dt=dt, gravity=big_g)
        keep = (final - pos).norm(dim=-1).amax(dim=-1) <= threshold
        inputs.append(torch.cat([masses[..., None], pos, vel], dim=-1)[keep])
        targets.append(final[keep])
        accepted += int(keep.sum())
        if accepted >= num_samples:
            break
    else:
        raise RuntimeError(
            f"fewer than {num_samples} samples passed outlier_threshold={threshold} in "
            f"{_MAX_ROUNDS} rounds; raise outlier_threshold"
        )
    x = torch.cat(inputs)[:num_samples]
    y = torch.cat(targets)[:num_samples]
    eye = torch.eye(3, dtype=torch.float64).expand(num_samples, 3, 3)
    base = NBodyData(
        x=x,
        y=y,
        rotations=eye.clone(),
        angles=torch.zeros(num_samples, dtype=torch.float64),
        axes=torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(num_samples, 3).clone(),
        dt=float(dt),
        gravity=big_g,
        num_steps=num_steps,
    )
    if rotation != "none":
        rot, angles, axes = nbody_rotations(num_samples, rotation, generator=gen)
        base = dataclasses.replace(rotate_nbody(base, rot), angles=angles, axes=axes)
    return base.to(dtype=dtype)
