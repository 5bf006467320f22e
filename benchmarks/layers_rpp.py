r"""Speed of the residual-pathway MLP against plain torch MLPs of the same sizes.

Times one training step (forward, mean-squared loss, backward) of an SO(2) ``RPPMLP`` with hidden
representation ``96 * V + 64 * Scalar`` (256 features, 352 with the 96 gate scalars) and of two
``nn.Sequential`` MLPs of ``nn.Linear`` layers in the same process: one with 256 hidden features,
one with the 352 pre-activation features the RPP layers actually multiply. Also times building
the ``RPPMLP`` (cold: empty basis caches; warm: cached bases).

Run: ``.venv/bin/python benchmarks/layers_rpp.py [--device cuda] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from _common import machine, median_time
from torch import nn

from symprior.groups import SO2, Scalar, V, _basis
from symprior.nn.rpp import RPPMLP


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved_medians(
    steps: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per step, timing the candidates round-robin so load drifts hit all alike."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        net.zero_grad(set_to_none=True)
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()

    return run


def _plain_mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(machine())
    print(
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )

    G = SO2()
    rep_in, rep_out = 4 * V(G), V(G) + Scalar(G)
    hidden = 96 * V(G) + 64 * Scalar(G)

    def build(cold: bool) -> None:
        if cold:
            _basis._block_basis_cached.cache_clear()
            _basis._blocks_cached.cache_clear()
        RPPMLP(rep_in, rep_out, hidden, args.depth)

    cold = median_time(lambda: build(True), repeats=5, warmup=0)
    warm = median_time(lambda: build(False), repeats=5, warmup=1)
    print(
        f"build  RPPMLP({rep_in!r} -> {rep_out!r}, hidden={hidden!r}, depth={args.depth}): "
        f"cold (bases solved) {1e3 * cold:.1f} ms, warm (bases cached) {1e3 * warm:.1f} ms"
    )

    torch.manual_seed(0)
    rpp = RPPMLP(rep_in, rep_out, hidden, args.depth).to(device)
    gated = rpp.layers[0].rep_out.size
    plain = _plain_mlp([rep_in.size] + [hidden.size] * args.depth + [rep_out.size]).to(device)
    plain_gated = _plain_mlp([rep_in.size] + [gated] * args.depth + [rep_out.size]).to(device)
    x = torch.randn(args.batch, rep_in.size, device=device)
    y = torch.randn(args.batch, rep_out.size, device=device)

    nets = {
        "RPPMLP": rpp,
        f"plain MLP, {hidden.size} hidden": plain,
        f"plain MLP, {gated} hidden": plain_gated,
    }
    steps = {name: _step(net, x, y) for name, net in nets.items()}
    results = _interleaved_medians(steps, device, args.warmup, args.repeats)
    for name, net in nets.items():
        n_params = sum(p.numel() for p in net.parameters())
        print(
            f"step   {name:<24} {n_params:>8d} params  {1e6 * results[name]:9.1f} us  "
            f"(fwd+bwd, batch {args.batch}, median of {args.repeats}, interleaved)"
        )
    t_rpp = results["RPPMLP"]
    for name, t in results.items():
        if name != "RPPMLP":
            print(f"ratio  RPPMLP / {name:<22} {t_rpp / t:6.2f}x")


if __name__ == "__main__":
    main()
