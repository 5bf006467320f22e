"""Laplace with the exact Hessian over a few relaxation parameters, against MAP epochs.

The typical use of 004's soft SE(2) CNN (notebook 1): a posterior over ``omega_prime`` (three
components per relaxed layer, six here) by ``Laplace(subset="relaxation", structure="full")``,
which polishes the mode with damped Newton steps and takes the evidence at the end. Its own
cost (a fit of one MAP epoch minus a MAP fit of one epoch) is printed in MAP epochs, each
measured in this process (differences of 5- and 1-epoch fits, fastest of the rounds).

An exact Hessian over ``p`` parameters takes ``p`` backward passes through the gradient's graph
over the whole data, so its cost grows with ``p``; the issue's <= 1 MAP epoch target is about the
Kronecker-factored curvature of ``engines.py``, this script is for information.
Run: ``.venv/bin/python benchmarks/laplace_full.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _common import machine

from symprior.inference import MAP, Laplace
from symprior.models import Categorical, SymmetryModel
from symprior.models.zoo import soft_se2_cnn


def make(device: str) -> tuple[SymmetryModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = soft_se2_cnn(soft="rotation", random_grid=False)
    x = torch.randn(512, 1, 12, 12, generator=gen).to(device)
    y = torch.randint(0, 2, (512,), generator=gen).to(device)
    return SymmetryModel(net, Categorical()), x, y


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    d = args.device
    options = {"batch_size": 64, "lr": 1e-3, "progress": False, "device": d}

    def map_fit(epochs: int) -> float:
        model, x, y = make(d)
        return timed(lambda: MAP(num_epochs=epochs, **options).fit(model, (x, y)))

    def laplace_fit() -> float:
        model, x, y = make(d)
        engine = Laplace(subset="relaxation", structure="full", num_epochs=1, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one epoch is not a mode: repairs are expected
            return timed(lambda: engine.fit(model, (x, y)))

    map_fit(1)  # warm-up (imports, first allocations)
    times: dict[str, list[float]] = {"map1": [], "map5": [], "laplace": []}
    for _ in range(args.rounds):
        times["map1"].append(map_fit(1))
        times["map5"].append(map_fit(5))
        times["laplace"].append(laplace_fit())
    best = {k: min(v) for k, v in times.items()}
    epoch = (best["map5"] - best["map1"]) / 4
    own = best["laplace"] - best["map1"]
    print("soft SE(2) CNN (soft rotation, channels 8-8, 4 rotations), 512 images 12x12, batch 64")
    print(f"MAP epoch                        : {epoch * 1e3:8.1f} ms")
    print(
        f"Laplace full Hessian over 6 omega': {own * 1e3:8.1f} ms = {own / epoch:5.2f} MAP epochs"
    )


if __name__ == "__main__":
    main()
