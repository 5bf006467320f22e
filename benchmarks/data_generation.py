"""Timing of symprior.data generators against plain baselines, same process, median of repeats."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine, median_time
from scipy.integrate import solve_ivp

from symprior.data import (
    nbody,
    pendulum,
    power_rotation,
    rotated_digits,
    simulate_nbody,
    synthetic,
)
from symprior.data.nbody import _initial_states


def main() -> None:
    print(machine())
    rows = []

    # Pendulum: 6000 RK4 steps (000 sec. 5.2) vs scipy's adaptive RK45 on the same grid.
    t = np.arange(6000) * 0.01

    def scipy_pendulum() -> None:
        solve_ivp(
            lambda _, s: [s[1], -0.2 * s[1] - 9.8 * s[0]],
            (0, t[-1]),
            [math.pi / 3, 0.0],
            t_eval=t,
            rtol=1e-9,
            atol=1e-9,
        )

    rows.append(
        (
            "pendulum 6000 steps",
            median_time(lambda: pendulum()),
            "scipy solve_ivp RK45 rtol 1e-9",
            median_time(scipy_pendulum),
        )
    )

    # N-body: batched semi-implicit Euler vs a Python loop over samples of the same steps.
    gen = torch.Generator().manual_seed(0)
    m, x, v = _initial_states(500, 4, (1, 10), (0.01, 0.1), (0.1, 1), 0.01, 1.0, gen)

    def per_sample() -> None:
        for i in range(500):
            xi, vi, mi = x[i], v[i], m[i]
            for _ in range(100):
                d = xi[None, :, :] - xi[:, None, :]
                r = d.norm(dim=-1).fill_diagonal_(math.inf)
                vi = vi + 0.001 * (mi[None, :, None] * d / r[..., None] ** 3).sum(1)
                xi = xi + 0.001 * vi

    rows.append(
        (
            "simulate_nbody 500 samples",
            median_time(lambda: simulate_nbody(m, x, v)),
            "per-sample torch loop",
            median_time(per_sample, repeats=3),
        )
    )
    rows.append(
        ("nbody(5000) full dataset", median_time(lambda: nbody(5000), repeats=3), "-", float("nan"))
    )

    # Digits: rotation of all 1797 digits on a 16x16 canvas vs affine_grid + grid_sample.
    data = rotated_digits(seed=0)
    base, angles = data.base, data.angles

    def grid_sample() -> None:
        c, s = torch.cos(angles), torch.sin(angles)
        theta = torch.stack([torch.stack([c, s, 0 * c], -1), torch.stack([-s, c, 0 * c], -1)], 1)
        grid = F.affine_grid(theta, list(base.shape), align_corners=False)
        F.grid_sample(base, grid, align_corners=False)

    rows.append(
        (
            "rotated_digits() 1797 x 16x16",
            median_time(lambda: rotated_digits(seed=0)),
            "affine_grid+grid_sample (rotation only)",
            median_time(grid_sample),
        )
    )
    rows.append(
        ("power_rotation(4096)", median_time(lambda: power_rotation(4096)), "-", float("nan"))
    )
    rows.append(("synthetic(100000)", median_time(lambda: synthetic(100_000)), "-", float("nan")))

    for name, ours, base_name, theirs in rows:
        ratio = ours / theirs if theirs == theirs else float("nan")
        print(
            f"{name:32s} {ours * 1e3:9.2f} ms | {base_name:40s} {theirs * 1e3:9.2f} ms"
            f" | ratio {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
