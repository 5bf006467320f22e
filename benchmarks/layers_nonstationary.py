"""Speed of the non-stationary layers (paper 004) against strict layers and plain conv2d.

Times forward + backward (median over repeats, after warm-up) in one process, interleaving the
variants of a comparison within each repeat so load changes hit them alike, and prints the
machine, the date, the medians and the ratios (median of the per-repeat ratios, with their
range).

Comparisons (defaults: batch 64, 28 x 28 images, 16 channels, support diameter 7 pixels, inputs
requiring grad):

* T(2): strict continuous CNN (``soft="none"``) vs soft T(2) (``soft="translation"``, a kernel
  per pixel) vs ``F.conv2d`` 7 x 7. The soft layer starts at ``omega_prime = 0.5`` so that its
  kernels really vary over the image (the cost does not depend on the value).
* SE(2) lifting and group convolution: strict vs soft SO(2) vs ``F.conv2d`` with the same
  channel counts (``C -> R C`` and ``R C -> R C``).

``--steady-malloc`` keeps glibc from returning freed memory to the system (``mallopt``), so that
no step pays page faults for memory another step freed: the ratios then compare steady-state
compute. By default the process's allocator behaves as it does for users (whose steps may fault
when glibc trims its heap; PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for this).

Run ``python benchmarks/layers_nonstationary.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from symprior.groups import SE2
from symprior.nn.nonstationary import (
    NonStationaryConv2d,
    NonStationaryGroupConv,
    NonStationaryKernelConfig,
    NonStationaryLifting,
)


def _steady_malloc() -> bool:
    """Stop glibc from trimming its heap or mmapping large blocks (both return memory to the
    system, so the next allocation of that size faults its pages in again)."""
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    ok = libc.mallopt(m_trim_threshold, 1 << 30) == 1
    return bool(ok and libc.mallopt(m_mmap_threshold, 1 << 25) == 1)


def _step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        out = fn(x)
        out.backward(torch.ones_like(out))

    return run


def _time(variants: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list]:
    # On CUDA the clock is read only after the device has finished the step's kernels.
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for run in variants.values():
        for _ in range(warmup):
            run()
    times: dict[str, list] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def _report(title: str, times: dict[str, list], pairs: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    for name, values in times.items():
        print(f"  {name:<28s} median {statistics.median(values) * 1e3:9.1f} ms")
    for num, den in pairs:
        ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
        print(
            f"  ratio {num} / {den}: {statistics.median(ratios):.2f} "
            f"(repeats {min(ratios):.2f} - {max(ratios):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--radius", type=float, default=3.5)
    parser.add_argument("--rotations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-group-conv", action="store_true")
    parser.add_argument("--skip-se2", action="store_true", help="time the T(2) layers only")
    parser.add_argument(
        "--steady-malloc",
        action="store_true",
        help="keep freed memory in the process (glibc mallopt): no page faults between steps",
    )
    args = parser.parse_args()
    steady = args.steady_malloc and _steady_malloc()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print("symprior benchmark: non-stationary continuous filters (004)")
    print(f"date     {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine  {platform.platform()} / {platform.processor() or platform.machine()}")
    print(f"cpus     {os.cpu_count()} (torch threads {torch.get_num_threads()})")
    print(f"torch    {torch.__version__}")
    if args.steady_malloc:
        print(f"malloc   steady (no trim, no mmap below 32 MiB): {'set' if steady else 'FAILED'}")
    dev = torch.device(args.device)
    if dev.type == "cuda":
        print(f"device   {torch.cuda.get_device_name(dev)}")
    b, n, c, radius, rot = args.batch, args.size, args.channels, args.radius, args.rotations
    reach = int(radius)
    print(
        f"sizes    batch {b}, {n}x{n}, {c} channels, radius {radius} "
        f"({2 * reach + 1}x{2 * reach + 1} window), R = {rot}; inputs require grad"
    )

    x = torch.randn(b, c, n, n, device=dev, requires_grad=True)
    strict = NonStationaryConv2d(c, c, radius=radius)
    soft = NonStationaryConv2d(
        c,
        c,
        radius=radius,
        soft="translation",
        config=NonStationaryKernelConfig(omega_prime_init=0.5),
    ).to(dev)
    strict = strict.to(dev)
    weight = torch.randn(c, c, 2 * reach + 1, 2 * reach + 1, device=dev, requires_grad=True)
    times = _time(
        {
            "T(2) strict": _step(strict, x),
            "T(2) soft translation": _step(soft, x),
            "conv2d": _step(lambda v: F.conv2d(v, weight, padding=reach), x),
        },
        args.warmup,
        args.repeats,
    )
    _report(
        "T(2) convolution",
        times,
        [("T(2) soft translation", "T(2) strict"), ("T(2) strict", "conv2d")],
    )
    if args.skip_se2:
        return

    lift_strict = NonStationaryLifting(SE2(), c, c, radius=radius, num_rotations=rot).to(dev).eval()
    lift_soft = (
        NonStationaryLifting(SE2(), c, c, radius=radius, num_rotations=rot, soft="rotation")
        .to(dev)
        .eval()
    )
    lift_weight = torch.randn(
        c * rot, c, 2 * reach + 1, 2 * reach + 1, device=dev, requires_grad=True
    )
    times = _time(
        {
            "SE(2) lifting strict": _step(lift_strict, x),
            "SE(2) lifting soft SO(2)": _step(lift_soft, x),
            "conv2d": _step(lambda v: F.conv2d(v, lift_weight, padding=reach), x),
        },
        args.warmup,
        args.repeats,
    )
    _report(
        "SE(2) lifting",
        times,
        [("SE(2) lifting soft SO(2)", "SE(2) lifting strict"), ("SE(2) lifting strict", "conv2d")],
    )

    if args.skip_group_conv:
        return
    h = torch.randn(b, c, rot, n, n, device=dev, requires_grad=True)
    gconv_strict = NonStationaryGroupConv(SE2(), c, c, radius=radius, num_rotations=rot).to(dev)
    gconv_soft = NonStationaryGroupConv(
        SE2(), c, c, radius=radius, num_rotations=rot, soft="rotation"
    ).to(dev)
    g_weight = torch.randn(
        c * rot, c * rot, 2 * reach + 1, 2 * reach + 1, device=dev, requires_grad=True
    )
    times = _time(
        {
            "SE(2) group conv strict": _step(gconv_strict, h),
            "SE(2) group conv soft SO(2)": _step(gconv_soft, h),
            "conv2d": _step(lambda v: F.conv2d(v.flatten(1, 2), g_weight, padding=reach), h),
        },
        args.warmup,
        max(3, args.repeats // 2),
    )
    _report(
        "SE(2) group convolution",
        times,
        [
            ("SE(2) group conv soft SO(2)", "SE(2) group conv strict"),
            ("SE(2) group conv strict", "conv2d"),
        ],
    )


if __name__ == "__main__":
    main()
