r"""Time LieAlgebraConv against a plain conv2d of the same size, in the same process.

Forward + backward of a batch of 64 images 28 x 28 with 16 channels in and out, kernel 5x5,
for each supported group, against ``torch.nn.Conv2d(16, 16, 5, padding=2)``. The two alternate
step by step; prints the machine, the date, the median time per step of each and the median of
the per-step ratios.

Usage: ``python benchmarks/layers_lie_algebra.py [--device cuda] [--repeats 20] [--threads 1]``.
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
from torch import nn

from symprior.groups import SE2, SL2, SO2, Affine2, Group, Scaling
from symprior.nn.lie_algebra import LieAlgebraConv

BATCH, CHANNELS, SIZE, KERNEL = 64, 16, 28, 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_times(
    baseline: Callable[[], None],
    candidate: Callable[[], None],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> tuple[float, float, float]:
    r"""Median seconds of ``baseline`` and ``candidate`` and the median of their per-pair ratios.

    The two steps alternate, so load from other processes hits both alike.
    """
    for _ in range(warmup):
        baseline()
        candidate()
    _sync(device)
    base_times, cand_times = [], []
    for _ in range(repeats):
        for step, times in ((baseline, base_times), (candidate, cand_times)):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
    ratios = [c / b for b, c in zip(base_times, cand_times, strict=True)]
    return statistics.median(base_times), statistics.median(cand_times), statistics.median(ratios)


def forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x).square().mean().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()}")
    print(f"cpu count: {os.cpu_count()} | torch threads: {torch.get_num_threads()}")
    print(f"torch: {torch.__version__} | device: {device}", end="")
    print(f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    print(
        f"batch {BATCH}, {CHANNELS} -> {CHANNELS} channels, {SIZE}x{SIZE}, kernel {KERNEL}, "
        f"{args.num_samples} Lie-algebra samples, forward + backward, float32, "
        f"median of {args.repeats}"
    )

    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, device=device)
    conv = nn.Conv2d(CHANNELS, CHANNELS, KERNEL, padding=KERNEL // 2).to(device)
    print(f"{'layer':<34s} {'layer ms':>9s} {'conv2d ms':>10s} {'ratio':>6s}")
    groups: list[Group] = [SO2(), SE2(), Scaling(2), SL2(), Affine2()]
    for group in groups:
        for mode in ("train", "eval"):
            layer = LieAlgebraConv(
                group, CHANNELS, CHANNELS, KERNEL, num_samples=args.num_samples
            ).to(device)
            layer.train(mode == "train")
            base, seconds, ratio = paired_times(
                forward_backward(conv, x),
                forward_backward(layer, x),
                device,
                args.warmup,
                args.repeats,
            )
            name = f"LieAlgebraConv {group!r} {mode}"
            print(f"{name:<34s} {seconds * 1e3:9.2f} {base * 1e3:10.2f} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
