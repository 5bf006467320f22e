r"""The damped pendulum of 000 sec. 5.2: predict the bob's :math:`(x, y)` position from time.

Recipe (000 sec. 5.2): a mass :math:`m` on a massless rod of length :math:`L`, with wind
resistance :math:`F_w = -\lambda L \dot\theta`, obeys

.. math::

    \ddot\theta + \frac{\lambda}{m}\dot\theta + \frac{g}{L}\theta = 0,

integrated with the classical Runge-Kutta method (RK4) for 6000 steps of :math:`dt = 0.01`
(:math:`t \in [0, 60)`), with :math:`m = L = 1`, :math:`\theta(0) = \pi/3`,
:math:`\dot\theta(0) = 0`, :math:`\lambda = 0.2`. The paper writes :math:`g = -9.8`; the equation
needs the restoring sign, so ``gravity`` is the magnitude 9.8.

Choices where 000 is silent (documented here):

* The equation above is the *linearised* (small-angle) pendulum and is used by default
  (``linearized=True``), exactly as printed; ``linearized=False`` replaces :math:`\theta` by
  :math:`\sin\theta` in the restoring term.
* The pivot is the origin, :math:`y` points up and :math:`\theta = 0` hangs straight down:
  :math:`(x, y) = (L\sin\theta, -L\cos\theta)`.
* Sample times are :math:`t_k = k\,dt`, :math:`k = 0, \dots, 5999` (the initial state included).
* The energy is :math:`E = \tfrac12 m L^2\dot\theta^2 + U(\theta)` with
  :math:`U = \tfrac12 m g L\theta^2` (linearised) or :math:`m g L(1 - \cos\theta)`; along exact
  solutions :math:`\dot E = -\lambda L^2\dot\theta^2 \le 0`.

Symmetry. 000 motivates the task by rotational symmetry ("the pendulum rotates about a vertical
line") and compares SE(2), E(2) and T(2) models. Concretely, the targets lie on the SO(2) orbit of
radius :math:`L` about the pivot, and without damping the map :math:`t \mapsto (x, y)` is exactly
invariant under the time translation :math:`t \mapsto t + T` by the period (for the linearised
equation :math:`T = 2\pi\sqrt{L/g}`); the damping :math:`\lambda > 0` breaks that symmetry, with a
strength that grows with :math:`\lambda`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from symprior.data._common import (
    SupervisedData,
    check_dtype,
    check_float,
    check_int,
    make_generator,
)

__all__ = ["PendulumData", "pendulum", "pendulum_energy", "simulate_pendulum"]


@dataclasses.dataclass(frozen=True, eq=False)
class PendulumData(SupervisedData):
    r"""A damped-pendulum trajectory (000 sec. 5.2).

    Attributes
    ----------
    x : Tensor
        Times ``(N, 1)``.
    y : Tensor
        Bob positions ``(N, 2)`` as :math:`(L\sin\theta, -L\cos\theta)`, plus observation noise
        of standard deviation ``noise_std``.
    theta, omega, energy : Tensor
        Angle, angular velocity and total energy ``(N,)`` (noise free).
    damping, mass, length, gravity, dt, noise_std : float
        The simulation constants (:math:`\lambda, m, L, |g|, dt`) and the noise level.
    linearized : bool
        Whether the small-angle equation of 000 was integrated.
    """

    theta: Tensor
    omega: Tensor
    energy: Tensor
    damping: float
    mass: float
    length: float
    gravity: float
    dt: float
    noise_std: float
    linearized: bool


def _restoring(theta: np.ndarray, linearized: bool) -> np.ndarray:
    return theta if linearized else np.sin(theta)


def simulate_pendulum(
    theta0: float | Tensor = math.pi / 3,
    omega0: float | Tensor = 0.0,
    *,
    num_steps: int = 6000,
    dt: float = 0.01,
    damping: float = 0.2,
    mass: float = 1.0,
    length: float = 1.0,
    gravity: float = 9.8,
    linearized: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""RK4 trajectories of the damped pendulum of 000 sec. 5.2, float64.

    The state :math:`(\theta, \dot\theta)` obeys
    :math:`\ddot\theta = -(\lambda/m)\dot\theta - (g/L)\,\theta` (or :math:`\sin\theta` when
    ``linearized=False``). Initial conditions broadcast, so a batch of pendulums is integrated at
    once.

    Parameters
    ----------
    theta0, omega0 : float or Tensor
        Initial angle and angular velocity, scalars or broadcastable tensors of shape ``S``.
    num_steps : int
        Number of stored states (``num_steps - 1`` RK4 steps).
    dt : float
        Step size.
    damping, mass, length, gravity : float
        :math:`\lambda \ge 0`, :math:`m > 0`, :math:`L > 0`, :math:`|g| > 0`.
    linearized : bool
        Integrate the small-angle equation printed in 000 (default) or the full pendulum.

    Returns
    -------
    theta, omega : Tensor
        ``S + (num_steps,)`` float64, entry ``k`` at time ``k * dt``.
    """
    check_int(num_steps, "num_steps")
    h = check_float(dt, "dt", minimum=0.0, strict=True)
    lam = check_float(damping, "damping", minimum=0.0)
    m = check_float(mass, "mass", minimum=0.0, strict=True)
    ell = check_float(length, "length", minimum=0.0, strict=True)
    g = check_float(gravity, "gravity", minimum=0.0, strict=True)
    if not isinstance(linearized, bool):
        raise TypeError(f"linearized must be a bool, got {type(linearized).__name__}")
    th0 = torch.as_tensor(theta0, dtype=torch.float64).cpu().numpy()
    om0 = torch.as_tensor(omega0, dtype=torch.float64).cpu().numpy()
    if not (np.isfinite(th0).all() and np.isfinite(om0).all()):
        raise ValueError("theta0 and omega0 must be finite")
    th, om = np.broadcast_arrays(th0, om0)
    th, om = th.astype(np.float64), om.astype(np.float64)
    friction, stiffness = lam / m, g / ell

    theta = np.empty((*th.shape, num_steps), dtype=np.float64)
    omega = np.empty_like(theta)

    def accel(t: np.ndarray, o: np.ndarray) -> np.ndarray:
        return -friction * o - stiffness * _restoring(t, linearized)

    # A simulator, not a layer: the loop over time steps is inherent to RK4 on a nonlinear ODE.
    for k in range(num_steps):
        theta[..., k] = th
        omega[..., k] = om
        a1 = accel(th, om)
        t2, o2 = th + 0.5 * h * om, om + 0.5 * h * a1
        a2 = accel(t2, o2)
        t3, o3 = th + 0.5 * h * o2, om + 0.5 * h * a2
        a3 = accel(t3, o3)
        t4, o4 = th + h * o3, om + h * a3
        a4 = accel(t4, o4)
        th = th + (h / 6) * (om + 2 * o2 + 2 * o3 + o4)
        om = om + (h / 6) * (a1 + 2 * a2 + 2 * a3 + a4)
    return torch.from_numpy(theta), torch.from_numpy(omega)


def pendulum_energy(
    theta: Tensor,
    omega: Tensor,
    *,
    mass: float = 1.0,
    length: float = 1.0,
    gravity: float = 9.8,
    linearized: bool = True,
) -> Tensor:
    r"""Total energy :math:`\tfrac12 m L^2\dot\theta^2 + U(\theta)` (module docstring)."""
    potential = (
        0.5 * mass * gravity * length * theta.square()
        if linearized
        else mass * gravity * length * (1 - torch.cos(theta))
    )
    return 0.5 * mass * length**2 * omega.square() + potential


def pendulum(
    *,
    num_steps: int = 6000,
    dt: float = 0.01,
    theta0: float = math.pi / 3,
    omega0: float = 0.0,
    damping: float = 0.2,
    mass: float = 1.0,
    length: float = 1.0,
    gravity: float = 9.8,
    linearized: bool = True,
    noise_std: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PendulumData:
    r"""The damped-pendulum regression task of 000 sec. 5.2: time ``t`` -> bob position ``(x, y)``.

    Defaults are the paper's: 6000 RK4 steps of ``dt = 0.01``, :math:`m = L = 1`,
    :math:`\theta_0 = \pi/3`, :math:`\dot\theta_0 = 0`, :math:`\lambda = 0.2`. 000 splits the
    trajectory chronologically 90%/10% (sec. 5.2; 80/10/10 in app. A.3.1): use
    ``data.split(0.9)``.

    Parameters
    ----------
    num_steps, dt, theta0, omega0, damping, mass, length, gravity, linearized
        As in :func:`simulate_pendulum`.
    noise_std : float
        Standard deviation of Gaussian noise added to the positions ``y`` (0: exact targets).
    seed : int
        Seed of the observation noise (the simulation itself is deterministic).
    dtype : torch.dtype
        Floating dtype of the returned tensors.

    Returns
    -------
    PendulumData
        ``x`` ``(num_steps, 1)``, ``y`` ``(num_steps, 2)``, ``theta``/``omega``/``energy``
        ``(num_steps,)``.

    Examples
    --------
    >>> data = pendulum(num_steps=200, dtype=torch.float64)
    >>> t, xy = data
    >>> tuple(t.shape), tuple(xy.shape)
    ((200, 1), (200, 2))
    >>> bool(torch.allclose(xy.norm(dim=-1), torch.ones(200, dtype=torch.float64)))
    True
    >>> bool((data.energy[1:] < data.energy[:-1]).all())
    True
    """
    check_dtype(dtype)
    noise = check_float(noise_std, "noise_std", minimum=0.0)
    generator = make_generator(seed)
    check_float(theta0, "theta0")
    check_float(omega0, "omega0")
    theta, omega = simulate_pendulum(
        theta0,
        omega0,
        num_steps=num_steps,
        dt=dt,
        damping=damping,
        mass=mass,
        length=length,
        gravity=gravity,
        linearized=linearized,
    )
    times = torch.arange(num_steps, dtype=torch.float64) * dt
    xy = length * torch.stack([torch.sin(theta), -torch.cos(theta)], dim=-1)
    if noise > 0:
        xy = xy + noise * torch.randn(xy.shape, generator=generator, dtype=torch.float64)
    energy = pendulum_energy(
        theta, omega, mass=mass, length=length, gravity=gravity, linearized=linearized
    )
    return PendulumData(
        x=times[:, None].to(dtype),
        y=xy.to(dtype),
        theta=theta.to(dtype),
        omega=omega.to(dtype),
        energy=energy.to(dtype),
        damping=float(damping),
        mass=float(mass),
        length=float(length),
        gravity=float(gravity),
        dt=float(dt),
        noise_std=noise,
        linearized=linearized,
    )
