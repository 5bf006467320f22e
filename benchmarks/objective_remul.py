r"""Speed of the REMUL objective (:mod:`symprior.nn.remul`) against hand-written torch.

An unconstrained MLP on N-body-like data, 4 particles in 3-D (``x`` of shape ``(B, 4, 3)``,
``V(SO3())`` acting on every particle), predicting 4 positions; forward + backward of:

* ``remul_objective`` (MSE task loss + l2 equivariance loss, ``num_samples`` = 1 and 4) against
  the same loss written in plain torch (Haar rotations from normalised Gaussian quaternions,
  ``einsum``), which is the library's overhead (ratio ~ 1 expected);
* the same objective against the plain task loss alone, which is REMUL's cost (it evaluates the
  model on ``(1 + num_samples) B`` inputs);
* ``augmentation_loss`` against the plain task loss on an augmented batch written by hand;
* one ``GradNorm.step`` (last layer) plus the network step, against the network step alone.

Both sides of every ratio run in this process, after a warm-up, over several repeats; the
median is reported. Usage: ``python benchmarks/objective_remul.py [--repeats N] [--device D]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symprior.groups import SO3, V
from symprior.nn.remul import GradNorm, augmentation_loss, remul_objective

BATCH, PARTICLES, HIDDEN = 256, 4, 256


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_median(
    step_a: Callable[[], object],
    step_b: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: int,
) -> tuple[float, float]:
    """Median wall times in seconds of two steps timed alternately (robust to load drift)."""
    for _ in range(warmup):
        step_a()
        step_b()
    _sync(device)
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        for step, times in ((step_a, times_a), (step_b, times_b)):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


class ParticleMLP(nn.Module):
    """An unconstrained MLP on the flattened particles, ``(N, P, 3) -> (N, P, 3)``."""

    def __init__(self) -> None:
        super().__init__()
        d = 3 * PARTICLES
        self.net = nn.Sequential(
            nn.Linear(d, HIDDEN),
            nn.SiLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.SiLU(),
            nn.Linear(HIDDEN, d),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).reshape(x.shape)


def haar_rotations(num: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform rotations from normalised Gaussian quaternions, written directly in torch."""
    q = torch.randn(num, 4, generator=generator, dtype=torch.float64, device=generator.device)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).to(device).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()}")
    print(f"cpu count: {torch.get_num_threads()} torch threads / {os.cpu_count()} cpus")
    print(f"torch: {torch.__version__} | device: {device}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"batch {BATCH}, {PARTICLES} particles in 3-D, MLP hidden {HIDDEN}, float32, SO(3)")

    torch.manual_seed(0)
    group = SO3()
    rep = V(group)
    net = ParticleMLP().to(device)
    x = torch.randn(BATCH, PARTICLES, 3, device=device)
    y = torch.randn(BATCH, PARTICLES, 3, device=device)
    gen = torch.Generator().manual_seed(0)

    def run(loss_fn: Callable[[], Tensor]) -> Callable[[], object]:
        def step() -> object:
            net.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            return loss

        return step

    def plain_task() -> Tensor:
        return F.mse_loss(net(x), y)

    def remul(m: int) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            return remul_objective(
                net,
                x,
                y,
                F.mse_loss,
                group,
                rep,
                rep,
                alpha=1.0,
                beta=1.0,
                num_samples=m,
                generator=gen,
            ).total

        return loss

    def hand_remul(m: int) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            r = haar_rotations(m * BATCH, gen, device).to(x.dtype).reshape(m, BATCH, 3, 3)
            fx = net(x)
            gx = torch.einsum("mbij,bpj->mbpi", r, x).reshape(m * BATCH, PARTICLES, 3)
            lhs = net(gx).reshape(m, BATCH, PARTICLES, 3)
            rhs = torch.einsum("mbij,bpj->mbpi", r, fx)
            equi = (lhs - rhs).square().flatten(2).sum(-1).mean()
            return F.mse_loss(fx, y) + equi

        return loss

    def augmentation(m: int) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            return augmentation_loss(
                net, x, y, F.mse_loss, group, rep, rep, num_samples=m, generator=gen
            )

        return loss

    def hand_augmentation(m: int) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            r = haar_rotations(m * BATCH, gen, device).to(x.dtype).reshape(m, BATCH, 3, 3)
            gx = torch.einsum("mbij,bpj->mbpi", r, x).reshape(m * BATCH, PARTICLES, 3)
            gy = torch.einsum("mbij,bpj->mbpi", r, y).reshape(m * BATCH, PARTICLES, 3)
            return F.mse_loss(net(gx), gy)

        return loss

    balance = GradNorm(2, lr=0.025).to(device)

    def gradnorm_step() -> object:
        net.zero_grad(set_to_none=True)
        out = remul_objective(
            net, x, y, F.mse_loss, group, rep, rep, alpha=1.0, beta=1.0, generator=gen
        )
        assert out.objective is not None
        losses = torch.stack([out.objective, out.equivariance])
        total = balance.weighted_loss(losses)
        balance.step(losses, net.net[-1])
        total.backward()
        return total

    def timed(name: str, a: Callable[[], object], b: Callable[[], object]) -> None:
        rows.append((name, *paired_median(a, b, device, args.repeats, args.warmup)))

    rows: list[tuple[str, float, float]] = []
    for m in (1, 4):
        timed(f"remul_objective m={m} vs hand-written torch", run(remul(m)), run(hand_remul(m)))
        timed(f"remul_objective m={m} vs task loss only", run(remul(m)), run(plain_task))
        timed(
            f"augmentation_loss m={m} vs hand-written torch",
            run(augmentation(m)),
            run(hand_augmentation(m)),
        )
    timed("REMUL m=1 + GradNorm.step vs fixed weights", gradnorm_step, run(remul(1)))

    print(f"{'case':48s} {'symprior ms':>12s} {'baseline ms':>12s} {'ratio':>7s}")
    for name, t_a, t_b in rows:
        print(f"{name:48s} {1e3 * t_a:12.2f} {1e3 * t_b:12.2f} {t_a / t_b:7.2f}")


if __name__ == "__main__":
    main()
