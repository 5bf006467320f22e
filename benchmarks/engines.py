"""Engine overhead (issue: inference engines), as ratios in one process.

* A MAP epoch through ``SymmetryModel`` against the same network trained by a hand-written torch
  loop with the same loss (scaled Gaussian log-likelihood + Gaussian residual penalties), the same
  Adam and the same minibatches (target <= 1.10x).
* An SVI step (mean-field guide over the relaxation parameters) against a MAP step (target <= 1.5x).
* Laplace over the relaxation parameters (full Hessian) against one MAP epoch (target <= 1x).

Per-epoch times are differences between fits of ``E1`` and ``E2`` epochs, so set-up is excluded.
Run: ``.venv/bin/python benchmarks/engines.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import machine

from symprior.groups import SO2, Scalar, V
from symprior.inference import MAP, SVI
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPMLP
from symprior.priors import ResidualPrior


def make(device: str, seed: int = 0):
    torch.manual_seed(seed)
    G = SO2()
    net = RPPMLP(4 * V(G), V(G) + Scalar(G), 96 * V(G) + 64 * Scalar(G), 2).to(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 8, generator=gen).to(device)
    y = torch.randn(1024, 3, generator=gen).to(device)
    return net, x, y


def hand_written_epochs(device: str, epochs: int, batch: int = 64) -> float:
    net, x, y = make(device)
    sigma, scale = 0.5, ResidualPrior().scale.value
    relax = [p for n, p in net.named_parameters() if "residual" in n]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = x.shape[0]
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
        for idx in order.split(batch):
            opt.zero_grad()
            out = net(x[idx])
            loss = (n / len(idx)) * ((y[idx] - out) ** 2).sum() / (2 * sigma**2)
            loss = loss + sum((p**2).sum() for p in relax) / (2 * scale**2)
            loss.backward()
            opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def engine_epochs(engine_cls, device: str, epochs: int, **kw) -> float:
    net, x, y = make(device)
    model = SymmetryModel(net, Gaussian(0.5))
    engine = engine_cls(
        num_epochs=epochs, batch_size=64, lr=1e-3, progress=False, device=device, **kw
    )
    start = time.perf_counter()
    engine.fit(model, (x, y))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def laplace_time(device: str) -> float:
    """Curvature + evidence of Laplace over the relaxation parameters: the time of a one-epoch
    Laplace fit minus that of a one-epoch MAP fit on the same model and data. The RPP residuals
    of this 256-wide network have ~94k entries, so the curvature is Kronecker-factored (KFAC);
    a full Hessian is for models with few relaxation parameters (omega_prime, magnitudes)."""
    import warnings

    from symprior.inference import Laplace

    def run(engine) -> float:
        net, x, y = make(device)
        model = SymmetryModel(net, Gaussian(0.5))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one epoch is not a mode: the repair is expected
            engine.fit(model, (x, y))
        return time.perf_counter() - start

    common = {"num_epochs": 1, "batch_size": 64, "lr": 1e-3, "progress": False, "device": device}
    lap = run(Laplace(subset="relaxation", structure="kron", **common))
    map_ = run(MAP(**common))
    return lap - map_


def per_epoch(fn, e1: int = 1, e2: int = 4, repeats: int = 3) -> float:
    values = []
    for _ in range(repeats):
        values.append((fn(e2) - fn(e1)) / (e2 - e1))
    values.sort()
    return values[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(machine())
    d = args.device
    hand = per_epoch(lambda e: hand_written_epochs(d, e))
    map_ = per_epoch(lambda e: engine_epochs(MAP, d, e))
    svi = per_epoch(lambda e: engine_epochs(SVI, d, e, guide="normal"))
    print("RPP-MLP 256 wide, batch 64, 1024 points (16 steps per epoch)")
    print(f"hand-written torch epoch : {hand * 1e3:8.1f} ms")
    print(
        f"MAP epoch                : {map_ * 1e3:8.1f} ms   ratio {map_ / hand:5.2f}  (target <= 1.10)"
    )
    print(
        f"SVI epoch (normal guide) : {svi * 1e3:8.1f} ms   ratio to MAP {svi / map_:5.2f}  (target <= 1.5)"
    )
    try:
        lap = laplace_time(d)
        print(
            f"Laplace (relaxation, kron): {lap * 1e3:7.1f} ms   ratio to a MAP epoch {lap / map_:5.2f}  (target <= 1)"
        )
    except (ImportError, AttributeError, ValueError) as err:
        print(f"Laplace: not measured ({err})")


if __name__ == "__main__":
    main()
