"""The linear-Gaussian reference model shared by the engine tests.

``RPPLinear(V(SO2), V(SO2))`` with a Gaussian likelihood of known noise, a Gaussian weight prior on
the equivariant coefficients and a Gaussian residual prior: every parameter is random and the output
is linear in them, so the posterior and the evidence are closed form.
"""

import math

import torch
from torch.func import functional_call, jacrev

from symprior.groups import SO2, V
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPLinear
from symprior.priors import EquivariantPrior, ResidualPrior

SIGMA, S_EQ, S_RES = 0.3, 2.0, 0.5


def exact_map(**kwargs):
    """MAP options that reach the mode of a quadratic to round-off (L-BFGS, full batch)."""
    return {"num_epochs": 3, "optimizer": "lbfgs", "lr": 1.0, "progress": False, **kwargs}


def network_at(post, net, x):
    """``u -> net(x)`` with the network's parameters read from a flat vector ``u`` laid out
    in ``post.site_names`` order (the layout of ``post.loc()`` and ``post.covariance()``):
    an explicit reference for linearised predictives, differentiable by ``jacrev``."""
    shapes = {n: p.shape for n, p in net.named_parameters()}

    def run(u):
        values, i = {}, 0
        for name in post.site_names:
            k = shapes[name].numel()
            values[name] = u[i : i + k].reshape(shapes[name])
            i += k
        return functional_call(net, values, (x,))

    return run


def make(seed=0, n=20, s_res=S_RES, sigma=SIGMA, dtype=torch.float64):
    torch.manual_seed(seed)
    layer = RPPLinear(V(SO2()), V(SO2())).to(dtype)
    model = SymmetryModel(
        layer,
        Gaussian(sigma),
        priors={"*": ResidualPrior(s_res)},
        weight_prior=EquivariantPrior(S_EQ),
    )
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 2, generator=gen, dtype=dtype)
    true_w = torch.tensor([[1.0, -0.5], [0.7, 1.2]], dtype=dtype)
    y = x @ true_w.T + 0.2 + sigma * torch.randn(n, 2, generator=gen, dtype=dtype)
    return model, x, y


def site_order(model):
    """Latent sites in the order the engines use (model trace order)."""
    names = model.site_names()
    return names["relaxations"] + names["weights"]


def closed_form(model, x, y, s_res=S_RES, sigma=SIGMA):
    """Posterior mean, covariance and log evidence over the flattened sites (engine order)."""
    layer = model.network
    names = site_order(model)
    params = dict(layer.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    theta0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def out(theta):
        chunks = theta.split(sizes)
        values = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return functional_call(layer, values, (x,)).reshape(-1)

    phi = jacrev(out)(theta0)  # exact: the output is linear in theta
    offset = out(torch.zeros_like(theta0))
    prior_var = torch.cat(
        [
            torch.full(
                (params[n].numel(),), (s_res if "residual" in n else S_EQ) ** 2, dtype=x.dtype
            )
            for n in names
        ]
    )
    target = y.reshape(-1) - offset
    precision = phi.T @ phi / sigma**2 + torch.diag(1 / prior_var)
    cov = torch.linalg.inv(precision)
    mean = cov @ phi.T @ target / sigma**2
    k = phi @ torch.diag(prior_var) @ phi.T + sigma**2 * torch.eye(phi.shape[0], dtype=x.dtype)
    evidence = torch.distributions.MultivariateNormal(torch.zeros_like(target), k).log_prob(target)
    return names, mean, cov, float(evidence), phi, prior_var, target


__all__ = ["SIGMA", "S_EQ", "S_RES", "closed_form", "make", "math", "site_order"]
