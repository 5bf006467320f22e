"""N-body task (001 app. C.2): recipe, centre of mass, SO(3) equivariance, ID/OOD rotations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from symprior.data.nbody import (
    NBodyData,
    nbody,
    nbody_rotations,
    rotate_nbody,
    simulate_nbody,
)
from symprior.groups import SO2, SO3
from symprior.testing import assert_equivariant

DT = torch.float64


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def simulate_x(x: Tensor) -> Tensor:
    """The task's map: rows (mass, position, velocity) -> final positions."""
    return simulate_nbody(x[..., 0], x[..., 1:4], x[..., 4:7])[0]


def naive_simulation(m: Tensor, x: Tensor, v: Tensor, steps: int, dt: float) -> Tensor:
    """Obviously-correct reference: loops over steps and body pairs, one sample."""
    x, v = x.clone(), v.clone()
    n = len(m)
    for _ in range(steps):
        a = torch.zeros_like(x)
        for i in range(n):
            for j in range(n):
                if i != j:
                    d = x[j] - x[i]
                    a[i] += m[j] * d / float(d.norm()) ** 3
        v = v + dt * a
        x = x + dt * v
    return x


@pytest.fixture(scope="module")
def base() -> NBodyData:
    return nbody(64, rotation="none", seed=11, dtype=DT)


def test_simulator_matches_naive_loop(base: NBodyData) -> None:
    for k in range(3):
        ref = naive_simulation(base.masses[k], base.positions[k], base.velocities[k], 100, 0.001)
        torch.testing.assert_close(base.y[k], ref, rtol=0, atol=1e-12)


def test_recipe_of_initial_states(base: NBodyData) -> None:
    m = base.masses
    assert bool(((m[:, 0] >= 1) & (m[:, 0] <= 10)).all())
    assert bool(((m[:, 1:] >= 0.01) & (m[:, 1:] <= 0.1)).all())
    rel_x = base.positions[:, 1:] - base.positions[:, :1]
    rel_v = base.velocities[:, 1:] - base.velocities[:, :1]
    r = rel_x.norm(dim=-1)
    assert bool(((r >= 0.1) & (r <= 1.0)).all())
    # Unrotated: the planets start in the x-y plane around the star.
    torch.testing.assert_close(rel_x[..., 2], torch.zeros_like(r), rtol=0, atol=1e-15)
    # Circular-orbit speed sqrt(G M / r) up to the velocity noise (std 0.01 per axis).
    circular = torch.sqrt(m[:, :1] / r)
    assert float((rel_v.norm(dim=-1) - circular).abs().max()) < 0.06
    # Tangential: velocity relative to the star is nearly orthogonal to the radius.
    radial = (rel_v * rel_x).sum(-1) / r
    assert float(radial.abs().max()) < 0.06
    assert bool(((base.y - base.positions).norm(dim=-1) <= 2.0).all())


def test_centre_of_mass_frame(base: NBodyData) -> None:
    m = base.masses[..., None]
    total = m.sum(1)
    for name, value in (("x0", base.positions), ("v0", base.velocities), ("xT", base.y)):
        com = (m * value).sum(1) / total
        assert float(com.abs().max()) < 1e-13, name


def test_simulator_conserves_momentum_and_moves_com_uniformly() -> None:
    gen = seeded(0)
    m = 0.5 + torch.rand(5, 4, generator=gen, dtype=DT)
    x = torch.randn(5, 4, 3, generator=gen, dtype=DT)
    v = torch.randn(5, 4, 3, generator=gen, dtype=DT)
    xt, vt = simulate_nbody(m, x, v, num_steps=50, dt=0.002)
    p0, pt = (m[..., None] * v).sum(1), (m[..., None] * vt).sum(1)
    torch.testing.assert_close(pt, p0, rtol=0, atol=1e-12)
    total = m.sum(1, keepdim=True)
    com0, comt = (m[..., None] * x).sum(1) / total, (m[..., None] * xt).sum(1) / total
    torch.testing.assert_close(comt, com0 + 0.1 * p0 / total, rtol=0, atol=1e-12)


def test_simulator_results_do_not_depend_on_batching() -> None:
    gen = seeded(8)
    m = 0.5 + torch.rand(1100, 3, generator=gen, dtype=DT)
    x = torch.randn(1100, 3, 3, generator=gen, dtype=DT)
    v = torch.randn(1100, 3, 3, generator=gen, dtype=DT)
    whole, _ = simulate_nbody(m, x, v, num_steps=5)
    for part in (slice(0, 3), slice(509, 515), slice(1090, 1100)):
        alone, _ = simulate_nbody(m[part], x[part], v[part], num_steps=5)
        torch.testing.assert_close(whole[part], alone, rtol=0, atol=0)
    grid, _ = simulate_nbody(
        m.reshape(20, 55, 3), x.reshape(20, 55, 3, 3), v.reshape(20, 55, 3, 3), num_steps=5
    )
    torch.testing.assert_close(grid.reshape(1100, 3, 3), whole, rtol=0, atol=0)


def test_simulator_is_so3_equivariant(base: NBodyData) -> None:
    worst = assert_equivariant(
        simulate_x,
        SO3(),
        base.x[:16],
        rep_in=base.rep_in,
        rep_out=base.rep_out,
        elements=SO3().sample(6, seeded(1)),
        dtypes=(DT,),
    )
    assert worst < 1e-10


def test_simulator_is_translation_equivariant(base: NBodyData) -> None:
    shift = torch.tensor([3.0, -1.0, 0.5], dtype=DT)
    moved, _ = simulate_nbody(base.masses, base.positions + shift, base.velocities)
    torch.testing.assert_close(moved, base.y + shift, rtol=0, atol=1e-10)


def test_rotation_convention_matches_so2_and_so3() -> None:
    rz = SO3().exp(torch.tensor([0.0, 0.0, math.pi / 2], dtype=DT))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=DT)
    torch.testing.assert_close(rz, expected, rtol=0, atol=1e-15)
    alpha = torch.tensor([0.7], dtype=DT)
    r3 = SO3().exp(torch.cat([torch.zeros(2, dtype=DT), alpha]))
    torch.testing.assert_close(r3[:2, :2], SO2().exp(alpha), rtol=0, atol=1e-15)
    rotations, angles, axes = nbody_rotations(200, "out_of_distribution", generator=seeded(2))
    torch.testing.assert_close(SO3().exp(angles[:, None] * axes), rotations, rtol=0, atol=1e-14)
    torch.testing.assert_close((rotations @ axes[..., None])[..., 0], axes, rtol=0, atol=1e-14)
    # Counter-clockwise about the axis: u -> R u turns towards axis x u by +angle.
    u = torch.linalg.cross(axes, torch.randn(200, 3, generator=seeded(3), dtype=DT))
    ru = (rotations @ u[..., None])[..., 0]
    sin = (ru * torch.linalg.cross(axes, u)).sum(-1) / u.square().sum(-1)
    torch.testing.assert_close(sin, torch.sin(angles), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [("in_distribution", 0.0, 10.0), ("out_of_distribution", 90.0, 180.0), ("none", 0.0, 0.0)],
    ids=["in_distribution", "out_of_distribution", "none"],
)
def test_rotation_angle_ranges(kind: str, low: float, high: float) -> None:
    rotations, angles, axes = nbody_rotations(2000, kind, generator=seeded(4))  # type: ignore[arg-type]
    degrees = torch.rad2deg(angles)
    assert bool(((degrees >= low) & (degrees <= high)).all())
    # The angle read back from the matrix agrees (SO(3) log, principal branch).
    torch.testing.assert_close(SO3().log(rotations).norm(dim=-1), angles, rtol=0, atol=1e-6)
    torch.testing.assert_close(axes.norm(dim=-1), torch.ones(2000, dtype=DT))
    if kind != "none":
        assert float(degrees.min()) < low + 1.0 and float(degrees.max()) > high - 1.0
        # Axes spread over the sphere: the mean axis is near zero.
        assert float(axes.mean(0).norm()) < 0.1


@pytest.mark.parametrize("kind", ["in_distribution", "out_of_distribution"])
def test_rotated_sets_are_rotated_copies_with_valid_targets(kind: str, base: NBodyData) -> None:
    rotated = nbody(64, rotation=kind, seed=11, dtype=DT)  # type: ignore[arg-type]
    r = rotated.rotations[:, None]
    torch.testing.assert_close(rotated.x, base.rep_in.act(r, base.x), rtol=0, atol=1e-14)
    torch.testing.assert_close(rotated.y, base.rep_out.act(r, base.y), rtol=0, atol=1e-14)
    resimulated = simulate_x(rotated.x)
    scale = float(rotated.y.abs().max())
    assert float((resimulated - rotated.y).abs().max()) < 1e-10 * scale
    torch.testing.assert_close(
        SO3().exp(rotated.angles[:, None] * rotated.axes), rotated.rotations, rtol=0, atol=1e-14
    )


def test_rotate_nbody_composes_and_accepts_kinds(base: NBodyData) -> None:
    ood = rotate_nbody(base, "out_of_distribution", seed=5)
    degrees = torch.rad2deg(ood.angles)
    assert bool(((degrees >= 90 - 1e-6) & (degrees <= 180 + 1e-6)).all())
    back = rotate_nbody(ood, ood.rotations.transpose(-1, -2))
    torch.testing.assert_close(back.x, base.x, rtol=0, atol=1e-13)
    torch.testing.assert_close(back.angles, torch.zeros(64, dtype=DT), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="rotations"):
        rotate_nbody(base, torch.eye(3, dtype=DT).expand(3, 3, 3))
    with pytest.raises(ValueError, match="kind"):
        rotate_nbody(base, "sideways")  # type: ignore[arg-type]


def test_float32_default_and_shapes() -> None:
    data = nbody(5, num_bodies=3, seed=1)
    assert data.x.dtype == torch.float32 and data.x.shape == (5, 3, 7)
    assert data.y.shape == (5, 3, 3) and data.rotations.shape == (5, 3, 3)
    assert float(torch.rad2deg(data.angles).max()) <= 10.0 + 1e-4
