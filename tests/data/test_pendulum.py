"""Damped pendulum (000 sec. 5.2): RK4 against closed forms and scipy, energy, geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from symprior.data.pendulum import pendulum, pendulum_energy, simulate_pendulum

DT = torch.float64
MODELS = [pytest.param(True, id="linearized"), pytest.param(False, id="full")]


def underdamped(t: torch.Tensor, theta0: float, damping: float, gravity: float) -> torch.Tensor:
    """Closed-form solution of theta'' + damping theta' + gravity theta = 0, theta'(0) = 0."""
    gamma = damping / 2
    wd = math.sqrt(gravity - gamma**2)
    return torch.exp(-gamma * t) * (
        theta0 * torch.cos(wd * t) + gamma * theta0 / wd * torch.sin(wd * t)
    )


def test_paper_defaults_against_closed_form() -> None:
    data = pendulum(dtype=DT)
    assert data.x.shape == (6000, 1)
    t = torch.arange(6000, dtype=DT) * 0.01
    torch.testing.assert_close(data.x[:, 0], t, rtol=0, atol=1e-12)
    assert data.theta[0] == math.pi / 3 and data.omega[0] == 0.0
    ref = underdamped(t, math.pi / 3, damping=0.2, gravity=9.8)
    assert float((data.theta - ref).abs().max()) < 1e-6


def test_rk4_is_fourth_order() -> None:
    errors = []
    for dt in (0.04, 0.02):
        steps = round(4.0 / dt) + 1
        theta, _ = simulate_pendulum(num_steps=steps, dt=dt)
        t = torch.arange(steps, dtype=DT) * dt
        errors.append(float((theta - underdamped(t, math.pi / 3, 0.2, 9.8)).abs().max()))
    assert 12.0 < errors[0] / errors[1] < 20.0


@pytest.mark.parametrize("linearized", MODELS)
def test_rk4_matches_solve_ivp(linearized: bool) -> None:
    steps, dt, lam, g, length, mass = 301, 0.01, 0.5, 9.8, 1.5, 2.0
    theta, omega = simulate_pendulum(
        1.0,
        -0.5,
        num_steps=steps,
        dt=dt,
        damping=lam,
        mass=mass,
        length=length,
        gravity=g,
        linearized=linearized,
    )

    def rhs(_: float, s: np.ndarray) -> list[float]:
        restoring = s[0] if linearized else math.sin(s[0])
        return [s[1], -lam / mass * s[1] - g / length * restoring]

    t = np.arange(steps) * dt
    sol = solve_ivp(
        rhs, (0.0, t[-1]), [1.0, -0.5], t_eval=t, method="DOP853", rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(theta.numpy(), sol.y[0], atol=1e-7, rtol=0)
    np.testing.assert_allclose(omega.numpy(), sol.y[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("linearized", MODELS)
def test_energy_decays_monotonically_with_damping(linearized: bool) -> None:
    data = pendulum(linearized=linearized, dtype=DT)
    steps = data.energy.diff()
    assert bool((steps < 0).all()), float(steps.max())
    assert float(data.energy[-1]) < 1e-3 * float(data.energy[0])


@pytest.mark.parametrize("linearized", MODELS)
def test_energy_rate_is_minus_lambda_l2_omega2(linearized: bool) -> None:
    lam, length, h = 0.3, 1.2, 0.01
    data = pendulum(num_steps=500, damping=lam, length=length, linearized=linearized, dtype=DT)
    rate = (data.energy[2:] - data.energy[:-2]) / (2 * h)
    expected = -lam * length**2 * data.omega[1:-1].square()
    assert float((rate - expected).abs().max()) < 1e-3 * float(expected.abs().max())


@pytest.mark.parametrize("linearized", MODELS)
def test_energy_conserved_without_damping(linearized: bool) -> None:
    data = pendulum(damping=0.0, linearized=linearized, dtype=DT)
    drift = (data.energy / data.energy[0] - 1).abs().max()
    assert float(drift) < 1e-6


def test_energy_formula() -> None:
    theta = torch.tensor([0.3, -1.0], dtype=DT)
    omega = torch.tensor([2.0, 0.5], dtype=DT)
    full = pendulum_energy(theta, omega, mass=2.0, length=0.5, gravity=9.8, linearized=False)
    lin = pendulum_energy(theta, omega, mass=2.0, length=0.5, gravity=9.8)
    kinetic = 0.5 * 2.0 * 0.25 * omega**2
    torch.testing.assert_close(full, kinetic + 2.0 * 9.8 * 0.5 * (1 - torch.cos(theta)))
    torch.testing.assert_close(lin, kinetic + 0.5 * 2.0 * 9.8 * 0.5 * theta**2)


@pytest.mark.parametrize("length", [1.0, 2.5], ids=["L=1", "L=2.5"])
def test_positions_on_circle_of_radius_length(length: float) -> None:
    data = pendulum(num_steps=400, length=length, dtype=DT)
    torch.testing.assert_close(data.y.norm(dim=-1), torch.full((400,), length, dtype=DT))
    expected = length * torch.stack([torch.sin(data.theta), -torch.cos(data.theta)], -1)
    torch.testing.assert_close(data.y, expected, rtol=0, atol=1e-14)
    assert float(data.y[0, 1]) == pytest.approx(-length * 0.5)  # theta0 = pi/3, y up


def test_undamped_linear_is_periodic() -> None:
    # The time-translation symmetry t -> t + T of the undamped trajectory, T = 2 pi sqrt(L/g).
    period = 2 * math.pi / math.sqrt(9.8)
    dt = period / 200
    theta, _ = simulate_pendulum(num_steps=801, dt=dt, damping=0.0)
    torch.testing.assert_close(theta[200:], theta[:-200], rtol=0, atol=1e-7)


def test_batched_initial_conditions_match_single_runs() -> None:
    theta0 = torch.tensor([0.1, 1.0, 2.0], dtype=DT)
    batch, _ = simulate_pendulum(theta0, 0.0, num_steps=100, linearized=False)
    for i in range(3):
        single, _ = simulate_pendulum(float(theta0[i]), num_steps=100, linearized=False)
        torch.testing.assert_close(batch[i], single, rtol=0, atol=0)


def test_noise_and_chronological_split() -> None:
    clean = pendulum(num_steps=3000, dtype=DT)
    noisy = pendulum(num_steps=3000, noise_std=0.05, seed=3, dtype=DT)
    residual = noisy.y - clean.y
    assert abs(float(residual.std()) - 0.05) < 0.003
    assert abs(float(residual.mean())) < 0.003
    train, test = noisy.split(0.9)
    assert train.num_samples == 2700 and test.num_samples == 300
    assert float(train.x.max()) < float(test.x.min())
    torch.testing.assert_close(test.theta, noisy.theta[2700:])
