"""Cost of the diagnostics (issue: diagnostics), as ratios in one process.

* ``to_arviz`` with the pointwise log-likelihood against a hand-written torch loop computing the
  same numbers: for each posterior draw, the network output by ``functional_call``, the Gaussian
  log density of every observation and every layer's equivariance level. The ratio is the cost of
  going through the Pyro model trace (what makes any likelihood work) and of building ArviZ data.
* ``compare`` of two hypotheses against twice the hand-written loop plus ``az.loo`` on its output.
* ``summary`` and the three plots, absolute.

The posterior is built by hand (a diagonal Gaussian over the residuals of an RPP-MLP), so no
fitting is timed. Run: ``.venv/bin/python benchmarks/diagnostics.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from _common import machine, median_time
from torch.func import functional_call

from symprior.diagnostics import (
    compare,
    plot_equivariance_errors,
    plot_equivariance_levels,
    plot_relaxation_posteriors,
    summary,
    to_arviz,
)
from symprior.groups import SO2, Scalar, V
from symprior.inference import DiagonalBlock, Posterior, SiteInfo
from symprior.inference._posterior import substituted
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPMLP, equivariance_levels

SIGMA = 0.5


def make(seed: int = 0, n: int = 256):
    torch.manual_seed(seed)
    G = SO2()
    net = RPPMLP(4 * V(G), V(G) + Scalar(G), 16 * V(G) + 16 * Scalar(G), 2)
    model = SymmetryModel(net, Gaussian(SIGMA))
    sites = [SiteInfo(k, tuple(p.shape)) for k, (p, _) in model.relaxation_sites.items()]
    dim = sum(s.numel for s in sites)
    block = DiagonalBlock(
        [s.name for s in sites], 0.01 * torch.randn(dim), torch.full((dim,), 0.01)
    )
    point = {k: p.detach().clone() for k, p in net.named_parameters() if k in model.point_names}
    post = Posterior(sites, [block], point, engine="svi", model=model)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 8, generator=gen)
    y = torch.randn(n, 3, generator=gen)
    return post, x, y


def by_hand(post: Posterior, x: torch.Tensor, y: torch.Tensor, num: int):
    net = post.model.network
    draws = post.sample(num, torch.Generator().manual_seed(0))
    loglik, levels = [], []
    with torch.no_grad():
        for i in range(num):
            values = {**post.point, **{k: v[i] for k, v in draws.items()}}
            out = functional_call(net, values, (x,))
            z = (y - out) / SIGMA
            loglik.append((-0.5 * z**2 - math.log(SIGMA) - 0.5 * math.log(2 * math.pi)).sum(-1))
            with substituted(net, values):
                levels.append(torch.stack(list(equivariance_levels(net).values())))
    return torch.stack(loglik), torch.stack(levels)


def main() -> None:
    import arviz as az

    print(machine())
    post, x, y = make()
    num = 100
    print(f"RPP-MLP 8 -> 3, hidden 16V+16S, depth 2; N = {len(x)} observations, {num} draws")

    def export():
        return to_arviz(
            post, data=(x, y), num_samples=num, generator=torch.Generator().manual_seed(0)
        )

    t_export = median_time(export, repeats=3)
    t_hand = median_time(lambda: by_hand(post, x, y, num), repeats=3)
    print(f"to_arviz (log-lik + levels)   {t_export * 1e3:8.1f} ms")
    print(f"hand-written torch loop       {t_hand * 1e3:8.1f} ms   ratio {t_export / t_hand:5.2f}x")

    def loo_by_hand():
        for _ in range(2):
            loglik, _ = by_hand(post, x, y, num)
            data = az.from_dict(log_likelihood={"obs": loglik.numpy()[None]})
            az.loo(data, var_name="obs", reff=1.0)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        t_compare = median_time(
            lambda: compare(
                {"a": post, "b": post},
                (x, y),
                num_samples=num,
                generator=torch.Generator().manual_seed(0),
            ),
            repeats=3,
        )
        t_loo = median_time(loo_by_hand, repeats=3)
    print(f"compare (2 hypotheses)        {t_compare * 1e3:8.1f} ms")
    print(f"hand loop + az.loo, twice     {t_loo * 1e3:8.1f} ms   ratio {t_compare / t_loo:5.2f}x")

    idata = export()
    errors = {
        "strict": torch.zeros(1),
        "relaxed": torch.from_numpy(np.abs(np.random.default_rng(0).normal(0.1, 0.02, 200))),
    }
    for name, fn in (
        ("summary", lambda: summary(idata)),
        ("plot_equivariance_levels", lambda: plot_equivariance_levels(idata)),
        ("plot_relaxation_posteriors", lambda: plot_relaxation_posteriors(idata)),
        ("plot_equivariance_errors", lambda: plot_equivariance_errors(errors)),
    ):
        print(f"{name:29s} {median_time(fn, repeats=3) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
