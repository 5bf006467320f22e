r"""Speed of :class:`symprior.nn.power.PowerLayer` against ``torch.nn.Conv2d`` of the same size.

A batch of 64 images 28x28, 16 -> 16 channels, float32:

* ``PowerLayer`` with the two shift generators and powers ``K = 1`` (a 3x3 receptive field at
  magnitude 1; the layer takes its ``"fourier"`` path) against
  ``nn.Conv2d(16, 16, 3, padding=1, padding_mode="circular")``: forward + backward in training
  mode (the magnitudes require gradients, so the base-matrix powers are recomputed every step),
  as a first layer (gradients of the parameters only) and as a hidden layer (also of the
  input), and forward alone in inference mode (cached powers);
* the same with the scaling generator (``"separable"`` path, 1-D operators along each axis),
  against the 3x3 convolution and against a convolution of the *same receptive field*: the
  scaling operators resample the whole image (at ``t = 1`` only 6-12% of their weight lies
  within one pixel of the output pixel; the script prints the fractions), so that convolution is
  a circular ``27 x 27`` one, every offset of the 28-pixel image but the +-14 one;
* for information, the rotation generator (``"dense"`` path, ``784 x 784`` matrices).

Layer and baseline run in this process, interleaved repeat by repeat (so load on a shared
machine hits both alike), after a warm-up; the median is reported.
Usage: ``python benchmarks/layers_power.py [--repeats N] [--threads T] [--device cpu|cuda]``.
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

from symprior.nn.power import PowerLayer, image_generators

BATCH, CHANNELS, SIZE = 64, 16, 28


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    steps: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median wall time in seconds of each step, the steps alternating within every repeat."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def train_step(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Forward and backward of a mean-square loss."""

    def step() -> object:
        module.zero_grad(set_to_none=True)
        loss = module(x).square().mean()
        loss.backward()
        return loss

    return step


def eval_step(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Forward only, without autograd."""

    def step() -> object:
        with torch.no_grad():
            return module(x)

    return step


def weight_within(layer: PowerLayer, reach: int) -> float:
    """Fraction of the absolute weight of the layer's base matrices and their inverses (powers
    -1 and 1) on input pixels at most ``reach`` pixels (circularly, along each axis) from the
    output pixel."""
    with torch.no_grad():
        base = layer.base_matrices()
        mats = torch.cat([base, torch.linalg.inv(base)]).abs()
    h, w = layer.image_shape if layer.image_shape is not None else (SIZE, SIZE)
    rows = torch.arange(h * w) // w
    cols = torch.arange(h * w) % w

    def circular(a: torch.Tensor, n: int) -> torch.Tensor:
        d = (a[:, None] - a[None, :]).remainder(n)
        return torch.minimum(d, n - d)

    near = (circular(rows, h) <= reach) & (circular(cols, w) <= reach)
    return float(mats[:, near].sum() / mats.sum())


def compare(
    name: str,
    layer: nn.Module,
    conv: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    repeats: int,
    warmup: int,
) -> list[tuple[str, float, float]]:
    """Training and inference timings of ``layer`` and ``conv``."""
    layer.train()
    train = interleaved_medians(
        {"layer": train_step(layer, x), "conv": train_step(conv, x)}, device, repeats, warmup
    )
    hidden = x.detach().clone().requires_grad_(True)
    train_hidden = interleaved_medians(
        {"layer": train_step(layer, hidden), "conv": train_step(conv, hidden)},
        device,
        repeats,
        warmup,
    )
    layer.eval()
    infer = interleaved_medians(
        {"layer": eval_step(layer, x), "conv": eval_step(conv, x)}, device, repeats, warmup
    )
    return [
        (f"{name} fwd+bwd, first layer", train["layer"], train["conv"]),
        (f"{name} fwd+bwd, hidden layer", train_hidden["layer"], train_hidden["conv"]),
        (f"{name} forward, eval (cached)", infer["layer"], infer["conv"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="PowerLayer vs conv2d timings.")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dense-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.platform()} ({platform.machine()})")
    print(f"cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}")
    print(f"torch: {torch.__version__}, device: {device}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"batch {BATCH}, {SIZE}x{SIZE} images, {CHANNELS} -> {CHANNELS} channels, float32")

    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, device=device)
    conv = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, padding_mode="circular").to(device)
    # Same receptive field as the scaling operators (the whole image): offsets -13..13.
    reach = (SIZE - 1) // 2
    size = 2 * reach + 1
    wide = nn.Conv2d(CHANNELS, CHANNELS, size, padding=reach, padding_mode="circular")
    wide = wide.to(device)
    rows = []
    for kind, repeats in (("translation", args.repeats), ("scaling", args.repeats)):
        layer = PowerLayer(image_generators(SIZE, SIZE, kind), 1, CHANNELS, CHANNELS).to(device)
        label = f"{kind} K=1 [{layer.path}]"
        print(
            f"{kind}: weight of the powers +-1 within 1 pixel {weight_within(layer.cpu(), 1):.3f}, "
            f"within {reach} pixels {weight_within(layer, reach):.3f}"
        )
        layer.to(device)
        rows += compare(label, layer, conv, x, device, repeats, args.warmup)
        if kind == "scaling":
            rows += compare(
                f"{label} vs {size}x{size}", layer, wide, x, device, repeats, args.warmup
            )
    rotation = PowerLayer(image_generators(SIZE, SIZE, "rotation"), 1, CHANNELS, CHANNELS)
    rotation = rotation.to(device)
    rows += compare(
        f"rotation K=1 [{rotation.path}]", rotation, conv, x, device, args.dense_repeats, 1
    )

    print(f"{'case':52s} {'PowerLayer ms':>14s} {'conv2d ms':>10s} {'ratio':>7s}")
    for name, t_layer, t_conv in rows:
        print(f"{name:52s} {1e3 * t_layer:14.2f} {1e3 * t_conv:10.2f} {t_layer / t_conv:7.2f}")


if __name__ == "__main__":
    main()
