"""The Laplace engine against closed forms, hand-computed curvature and finite differences."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn
from torch.func import functional_call, jacrev

from symprior.groups import SO2, Scalar, V
from symprior.inference import MAP, Posterior
from symprior.inference._curvature import KroneckerEigenBlock, output_jacobian
from symprior.inference._laplace import CurvatureWarning, Laplace, linearized_predict
from symprior.models import Categorical, Gaussian, SymmetryLikelihood, SymmetryModel
from symprior.nn import RPPLinear
from symprior.nn.nonstationary import NonStationaryConv2d, NonStationaryKernelConfig
from symprior.nn.rpp import RPPMLP
from symprior.priors import EquivariantPrior, FrequencyPrior, ResidualPrior
from tests.conftest import DEVICES
from tests.inference.linear_gaussian import (
    S_EQ,
    S_RES,
    SIGMA,
    closed_form,
    exact_map,
    make,
    network_at,
)

F64 = torch.float64


def _log_joint(phi, prior_var, target, theta, sigma=SIGMA):
    """log N(target | phi theta, sigma^2) + log N(theta | 0, diag(prior_var))."""
    lik = torch.distributions.Normal(phi @ theta, sigma).log_prob(target).sum()
    prior = torch.distributions.Normal(0.0, prior_var.sqrt()).log_prob(theta).sum()
    return lik + prior


def _block_precisions(precision, sizes):
    out, i = [], 0
    for n in sizes:
        out.append(precision[i : i + n, i : i + n])
        i += n
    return out


# --------------------------------------------------------------------- linear-Gaussian model
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [None, 7], ids=["full-batch", "minibatches"])
def test_full_laplace_equals_the_closed_form_posterior_and_evidence(device, batch_size):
    model, x, y = make()
    names, mean, cov, evidence, *_ = closed_form(model, x, y)
    # A short Adam run far from the mode: the Newton polish makes the quadratic case exact.
    post = Laplace(
        "all",
        "full",
        num_epochs=20,
        lr=0.05,
        batch_size=batch_size,
        curvature_batch_size=batch_size,  # several curvature batches sum to the exact evidence
        progress=False,
        device=device,
    ).fit(model, (x.to(device), y.to(device)))
    assert post.site_names == names
    assert [b.kind for b in post.blocks] == ["full"]
    assert torch.allclose(post.loc().cpu(), mean, rtol=1e-6, atol=1e-9)
    assert torch.allclose(post.covariance().cpu(), cov, rtol=1e-6, atol=1e-12)
    assert post.log_evidence().item() == pytest.approx(evidence, rel=1e-6)
    assert post.info["repaired_eigenvalues"] == 0
    assert all(post.info[f"curvature.{n}"] == "hessian" for n in names)
    # the network holds the mode afterwards
    assert torch.allclose(model.network.residual.detach().cpu().reshape(-1), mean[:4], rtol=1e-6)


def test_full_laplace_in_float32_matches_the_float64_closed_form():
    model, _, _ = make(dtype=torch.float32)
    model64, x, y = make()
    _, mean, cov, evidence, *_ = closed_form(model64, x, y)
    data = (x.float(), y.float())
    post = Laplace("all", "full", num_epochs=20, lr=0.05, progress=False).fit(model, data)
    assert post.loc().dtype == torch.float32 and post.blocks[0].scale_tril.dtype == torch.float32
    assert torch.allclose(post.loc().double(), mean, rtol=1e-3, atol=1e-4)
    assert torch.allclose(post.covariance().double(), cov, rtol=1e-3, atol=1e-6)
    assert post.log_evidence().item() == pytest.approx(evidence, rel=1e-4)


@pytest.mark.parametrize("s_res", [0.2, 1.5])
def test_log_evidence_method_equals_the_closed_form_at_the_mode(s_res):
    model, x, y = make(s_res=s_res)
    names, mean, _, evidence, *_ = closed_form(model, x, y, s_res=s_res)
    shapes = {n: p.shape for n, p in model.network.named_parameters()}
    sizes = [shapes[n].numel() for n in names]
    params = {n: c.reshape(shapes[n]) for n, c in zip(names, mean.split(sizes), strict=True)}
    before = model.network.residual.detach().clone()
    value = Laplace("all", "full").log_evidence(model, (x, y), params)
    assert value.dtype == F64
    assert value.item() == pytest.approx(evidence, rel=1e-9)
    # evaluating the evidence leaves the model untouched
    assert torch.equal(model.network.residual.detach(), before)


def test_diag_structure_equals_its_closed_form():
    model, x, y = make()
    names, mean, _, _, phi, prior_var, target = closed_form(model, x, y)
    post = Laplace("all", "diag", **exact_map()).fit(model, (x, y))
    assert [b.kind for b in post.blocks] == ["diagonal"] and post.site_names == names
    precision = (phi**2).sum(0) / SIGMA**2 + 1 / prior_var  # diag(Phi^T Phi)/sigma^2 + prior
    assert torch.allclose(post.covariance().diagonal(), 1 / precision, rtol=1e-10)
    assert torch.allclose(post.loc(), mean, rtol=1e-6, atol=1e-9)
    theta = post.loc()
    expected = (
        _log_joint(phi, prior_var, target, theta)
        + 0.5 * len(theta) * math.log(2 * math.pi)
        - 0.5 * precision.log().sum()
    )
    assert post.info["log_evidence"] == pytest.approx(float(expected), rel=1e-10)


def test_kron_structure_equals_its_closed_form():
    model, x, y = make()
    names, mean, _, _, phi, prior_var, target = closed_form(model, x, y)
    post = Laplace("all", "kron", **exact_map()).fit(model, (x, y))
    assert post.site_names == ["residual", "bias_residual", "coeffs", "bias_coeffs"] == names
    assert [b.kind for b in post.blocks] == ["kronecker_eigen", "kronecker_eigen", "diagonal"]
    assert post.info["curvature.residual"] == "kron"
    assert post.info["curvature.bias_residual"] == "kron-bias"
    assert post.info["curvature.coeffs"] == "diag-ggn"
    n = x.shape[0]
    eye = torch.eye(2, dtype=F64)
    # residual B (2 x 2): G_sum = N I / sigma^2, A_sum = X^T X, precision G (x) A / N + I / s^2
    residual = torch.kron(eye / SIGMA**2, x.T @ x) + torch.eye(4, dtype=F64) / S_RES**2
    bias = n * eye / SIGMA**2 + eye / S_RES**2  # exact GGN of the bias residual
    coeffs = (phi[:, 6:] ** 2).sum(0) / SIGMA**2 + 1 / S_EQ**2  # diagonal fallback
    expected = [torch.linalg.inv(residual), torch.linalg.inv(bias), torch.diag(1 / coeffs)]
    for block, cov in zip(post.blocks, expected, strict=True):
        assert torch.allclose(block.covariance(), cov, rtol=1e-10, atol=1e-14)
    assert torch.allclose(post.loc(), mean, rtol=1e-6, atol=1e-9)
    logdet = torch.logdet(residual) + torch.logdet(bias) + coeffs.log().sum()
    expected_evidence = (
        _log_joint(phi, prior_var, target, post.loc()) + 4 * math.log(2 * math.pi) - 0.5 * logdet
    )
    assert post.info["log_evidence"] == pytest.approx(float(expected_evidence), rel=1e-10)


def test_linearized_predictive_is_exact_for_the_linear_model():
    model, x, y = make()
    _, mean, cov, *_ = closed_form(model, x, y)
    post = Laplace("all", "full", **exact_map()).fit(model, (x, y))
    x_new = torch.randn(5, 2, generator=torch.Generator().manual_seed(9), dtype=F64)
    _, _, _, _, phi_new, _, _ = closed_form(model, x_new, torch.zeros(5, 2, dtype=F64))
    pred_mean, pred_var = linearized_predict(post, x_new, batch_size=2)
    assert pred_mean.shape == pred_var.shape == (5, 2)
    assert torch.allclose(pred_mean.reshape(-1), phi_new @ mean, rtol=1e-6, atol=1e-9)
    expected_var = torch.einsum("ki,ij,kj->k", phi_new, cov, phi_new)
    assert torch.allclose(pred_var.reshape(-1), expected_var, rtol=1e-6)


def test_evidence_learning_recovers_the_evidence_maximising_residual_scale():
    model, x, y = make(s_res=0.5)

    def negative_evidence(log_scale):
        return -closed_form(model, x, y, s_res=math.exp(log_scale))[3]

    best = minimize_scalar(
        negative_evidence, bounds=(-6, 3), method="bounded", options={"xatol": 1e-10}
    )
    post = Laplace(
        "all",
        "full",
        learn_hyperparameters=["residual_scale"],
        hyper_every=1,
        hyper_steps=8,
        hyper_lr=0.15,
        num_epochs=16,
        lr=0.01,
        progress=False,
    ).fit(model, (x, y))
    learned = post.info["hyper.residual_scale"]
    assert learned == pytest.approx(math.exp(best.x), rel=1e-3)
    # written back into the prior, as a float
    assert model.priors["residual"].scale.value == learned
    assert isinstance(model.priors["residual"].scale.value, float)
    # the final posterior is the closed form at the learned scale
    _, mean, _, evidence, *_ = closed_form(model, x, y, s_res=learned)
    assert torch.allclose(post.loc(), mean, rtol=1e-6, atol=1e-9)
    assert post.log_evidence().item() == pytest.approx(evidence, rel=1e-6)


# ---------------------------------------------------------------------- KFAC and diagonal GGN
def _mlp_model(likelihood, seed=0, prior_scale=0.7):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    prior = dist.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(prior_scale, dtype=F64))
    model = SymmetryModel(net, likelihood, weight_prior=prior)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(25, 2, generator=gen, dtype=F64)
    if isinstance(likelihood, Categorical):
        y = torch.randint(0, 3, (25,), generator=gen)
    else:
        y = torch.sin(2 * x[:, :1]) * torch.ones(1, 3, dtype=F64) + 0.1 * torch.randn(
            25, 3, generator=gen, dtype=F64
        )
    return model, x, y


def _output_hessians(kind, out, sigma):
    """Per-sample Hessians (N, K, K) of -log p(y | f) in the output f."""
    if kind == "gaussian":
        return torch.eye(out.shape[1], dtype=F64).expand(out.shape[0], -1, -1) / sigma**2
    p = torch.softmax(out, -1)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


LIKELIHOODS = {"gaussian": lambda: Gaussian(0.3), "categorical": lambda: Categorical()}


class _PlainTanh(torch.autograd.Function):
    """tanh as an autograd Function whose backward cannot run under vmap (it reads a value)."""

    @staticmethod
    def forward(ctx, h):
        out = torch.tanh(h)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        bound = float(grad.abs().max().item())  # data-dependent: no batching rule
        return grad.clamp(-bound, bound) * (1 - out**2)


class _TanhModule(nn.Module):
    def forward(self, h):
        return _PlainTanh.apply(h)


@pytest.mark.parametrize("passes", ["batched", "chunks-of-2", "no-batching-rule"])
@pytest.mark.parametrize("kind", list(LIKELIHOODS))
def test_kfac_blocks_equal_per_sample_kronecker_factors(kind, passes, monkeypatch):
    """KFAC factors against per-sample closed forms, with the loss columns back-propagated all
    at once, in ragged chunks, and one by one (an autograd Function without a batching rule)."""
    from symprior.inference import _curvature

    model, x, y = _mlp_model(LIKELIHOODS[kind]())
    if passes == "chunks-of-2":
        monkeypatch.setattr(_curvature, "KFAC_COLUMNS_PER_PASS", 2)
    if passes == "no-batching-rule":
        model.network[1] = _TanhModule()
        with pytest.raises(RuntimeError, match=r"vmap|atching rule"):
            h = torch.randn(2, 3, dtype=F64, requires_grad=True)
            out = _PlainTanh.apply(h)
            torch.autograd.grad(out, h, torch.ones(2, 2, 3, dtype=F64), is_grads_batched=True)
    post = Laplace("all", "kron", **exact_map()).fit(model, (x, y))
    net = model.network
    w1, b1, w2, b2 = (p.detach() for p in net.parameters())
    h = x @ w1.T + b1
    a = torch.tanh(h)
    out = a @ w2.T + b2
    lam = _output_hessians(kind, out, 0.3)
    j_h = w2[None] * (1 - a**2)[:, None, :]  # d out / d h, (N, K, 3)
    g1 = torch.einsum("nkp,nkl,nlq->pq", j_h, lam, j_h).contiguous()
    g2 = lam.sum(0).contiguous()
    n, prior = x.shape[0], 1 / 0.7**2
    expected = {
        "0.weight": torch.kron(g1, (x.T @ x).contiguous()) / n + prior * torch.eye(6, dtype=F64),
        "0.bias": g1 + prior * torch.eye(3, dtype=F64),
        "2.weight": torch.kron(g2, (a.T @ a).contiguous()) / n + prior * torch.eye(9, dtype=F64),
        "2.bias": g2 + prior * torch.eye(3, dtype=F64),
    }
    assert [b.names for b in post.blocks] == [[k] for k in expected]
    assert [b.kind for b in post.blocks] == ["kronecker_eigen"] * 4
    for block in post.blocks:
        precision = expected[block.names[0]]
        assert torch.allclose(
            block.covariance(), torch.linalg.inv(precision), rtol=1e-8, atol=1e-12
        )
        assert post.info[f"curvature.{block.names[0]}"] in ("kron", "kron-bias")


@pytest.mark.parametrize("kind", list(LIKELIHOODS))
def test_diagonal_ggn_equals_the_per_sample_jacobian_reference(kind):
    model, x, y = _mlp_model(LIKELIHOODS[kind]())
    post = Laplace("all", "diag", **exact_map()).fit(model, (x, y))
    net = model.network
    names = [n for n, _ in net.named_parameters()]
    params = {n: p.detach() for n, p in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    j = torch.cat([jac[n].reshape(x.shape[0], 3, -1) for n in names], -1)  # (N, K, P)
    lam = _output_hessians(kind, functional_call(net, params, (x,)), 0.3)
    ggn = torch.einsum("nkp,nkl,nlp->p", j, lam, j)
    assert post.site_names == names
    assert torch.allclose(post.covariance().diagonal(), 1 / (ggn + 1 / 0.7**2), rtol=1e-9)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_linearized_variance_equals_the_dense_covariance_reference(structure):
    model, x, y = _mlp_model(Gaussian(0.3))
    post = Laplace("all", structure, **exact_map()).fit(model, (x, y))
    loc = post.loc()
    run = network_at(post, model.network, x[:6])

    j = jacrev(run)(loc).reshape(18, -1)
    expected = torch.einsum("ki,ij,kj->k", j, post.covariance(), j).reshape(6, 3)
    mean, var = linearized_predict(post, x[:6])
    assert torch.allclose(mean, run(loc), rtol=1e-12)
    assert torch.allclose(var, expected, rtol=1e-8)


def test_kfac_of_a_convolution_equals_its_unfolded_patch_reference():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1).double()
    net = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(2 * 16, 2)).double()
    prior = dist.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(0.5, dtype=F64))
    model = SymmetryModel(net, Gaussian(0.2), weight_prior=prior)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 4, 4, generator=gen, dtype=F64)
    y = torch.randn(6, 2, generator=gen, dtype=F64)
    post = Laplace("all", "kron", **exact_map()).fit(model, (x, y))
    head = nn.Sequential(*list(net)[1:])
    h = conv(x).detach()
    # d output / d conv output per sample: (N, K, C_out, T) with T = 16 positions
    jac = torch.stack([jacrev(head)(h[n : n + 1])[0, :, 0] for n in range(6)]).reshape(6, 2, 2, 16)
    g_sum = torch.einsum("nkpt,nkqt->pq", jac, jac) / 0.2**2
    bias = torch.einsum("nkp,nkq->pq", jac.sum(-1), jac.sum(-1)) / 0.2**2
    patches = F.unfold(x, 3, padding=1)  # (N, 9, T)
    a_sum = torch.einsum("nit,njt->ij", patches, patches) / 16
    precision = torch.kron(g_sum.contiguous(), a_sum.contiguous()) / 6 + 4 * torch.eye(
        18, dtype=F64
    )
    blocks = {b.names[0]: b for b in post.blocks}
    assert post.info["curvature.0.weight"] == "kron"
    assert torch.allclose(blocks["0.weight"].covariance(), torch.linalg.inv(precision), rtol=1e-8)
    expected_bias = torch.linalg.inv(bias + 4 * torch.eye(2, dtype=F64))
    assert torch.allclose(blocks["0.bias"].covariance(), expected_bias, rtol=1e-8)


class _Cube(torch.autograd.Function):
    """u ** 3 as an old-style autograd Function: torch.func cannot trace it."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return u**3

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * 3 * u**2


@pytest.mark.parametrize("outputs", [2, 12], ids=["fewer-outputs", "more-outputs"])
def test_output_jacobian_falls_back_to_autograd_for_untraceable_functions(outputs):
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(outputs, 5, generator=gen, dtype=F64)
    u = torch.randn(5, generator=gen, dtype=F64)

    def fn(v):
        return _Cube.apply(mix @ v).reshape(-1, 2)

    out, jac = output_jacobian(fn, u)
    expected = torch.autograd.functional.jacobian(fn, u).reshape(outputs // 2, 2, 5)
    assert torch.allclose(out, fn(u)) and torch.allclose(jac, expected, rtol=1e-12)


def test_kronecker_posterior_saves_loads_and_samples_its_covariance(tmp_path):
    model, x, y = make()
    post = Laplace("all", "kron", **exact_map()).fit(model, (x, y))
    path = tmp_path / "post.pt"
    post.save(path)
    loaded = Posterior.load(path, model)
    assert isinstance(loaded.blocks[0], KroneckerEigenBlock)
    assert torch.equal(loaded.covariance(), post.covariance())
    block = post.blocks[0]
    draws = block.sample(40000, torch.Generator().manual_seed(3))
    empirical = torch.cov(draws.T)
    assert torch.allclose(
        draws.mean(0), block.loc, atol=4 * block.covariance().diagonal().max().sqrt() / 200
    )
    assert torch.allclose(
        empirical, block.covariance(), rtol=0.05, atol=0.03 * float(block.covariance().abs().max())
    )


# ----------------------------------------------------------------------- nonlinear models
def _nonstationary(lam, sigma, seed=0):
    torch.manual_seed(seed)
    conv = NonStationaryConv2d(
        1,
        1,
        radius=1.5,
        soft="translation",
        padding="circular",
        config=NonStationaryKernelConfig(num_features=4, hidden=8),
    ).double()
    return SymmetryModel(conv, Gaussian(sigma), priors={"*": FrequencyPrior(lam)})


def _image_data(broken, n=8, size=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=gen, dtype=F64)
    blur = torch.tensor([[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]], dtype=F64) / 6
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), blur[None, None])  # T(2)-equivariant
    if broken:
        # a position-dependent gain along x breaks translation equivariance
        y = y * (1 + 0.5 * torch.linspace(-1, 1, size, dtype=F64))
    return x, y + 0.01 * torch.randn(y.shape, generator=gen, dtype=F64)


def _rpp_mlp(scales):
    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), V(SO2()), hidden=V(SO2()) + Scalar(SO2()), depth=1).double()
    return SymmetryModel(
        net,
        Gaussian(scales["noise_scale"]),
        priors={"*": ResidualPrior(scales["residual_scale"])},
        weight_prior=EquivariantPrior(scales["equivariant_scale"]),
    )


def _set(model, name, value):
    if name == "lam":
        model.priors["omega_prime"].lam.value = value
    elif name == "noise_scale":
        model.likelihood_list[0].hyper.value = value
    elif name == "residual_scale":
        next(iter(model.priors.values())).scale.value = value
    else:
        next(iter(model.weight_priors.values())).scale.value = value


CASES = {
    "nonstationary-relaxation-full": (
        lambda v: _nonstationary(v["lam"], v["noise_scale"]),
        {"lam": 0.5, "noise_scale": 0.2},
        ("relaxation", "full"),
    ),
    "rpp-mlp-all-diag": (
        _rpp_mlp,
        {"noise_scale": 0.3, "residual_scale": 0.2, "equivariant_scale": 1.5},
        ("all", "diag"),
    ),
    "rpp-mlp-all-kron": (
        _rpp_mlp,
        {"noise_scale": 0.3, "residual_scale": 0.2, "equivariant_scale": 1.5},
        ("all", "kron"),
    ),
}


def _case_data(name):
    if name.startswith("nonstationary"):
        return _image_data(broken=True, n=4, size=5)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(16, 2, generator=gen, dtype=F64)
    return x, torch.tanh(x @ torch.tensor([[1.0, -0.4], [0.4, 1.0]], dtype=F64)) + 0.3


@pytest.mark.parametrize("case", list(CASES))
def test_evidence_gradient_matches_central_finite_differences(case):
    build, hypers, (subset, structure) = CASES[case]
    model = build(hypers)
    x, y = _case_data(case)
    MAP(num_epochs=30, lr=0.02, progress=False).fit(model, (x, y))
    engine = Laplace(subset, structure)
    tensors = {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in hypers.items()}
    for k, t in tensors.items():
        _set(model, k, t)
    value = engine.log_evidence(model, (x, y))
    grads = torch.autograd.grad(value, list(tensors.values()))
    for (k, v), grad in zip(hypers.items(), grads, strict=True):
        step = 1e-5 * v
        evals = []
        for shifted in (v + step, v - step):
            _set(model, k, shifted)
            evals.append(float(engine.log_evidence(model, (x, y)).detach()))
        _set(model, k, v)
        finite_difference = (evals[0] - evals[1]) / (2 * step)
        assert float(grad) == pytest.approx(finite_difference, rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_direct_evidence_equals_the_traced_model(structure, monkeypatch):
    """Evidence, log joint and posterior computed through the model's direct log joint (and,
    for kron, the likelihood read off the curvature pass) equal those of the traced model, on a
    nonlinear model with random noise and random residual scale (log-Jacobian terms)."""

    def fit():
        torch.manual_seed(0)
        net = RPPMLP(V(SO2()), V(SO2()), hidden=V(SO2()) + Scalar(SO2()), depth=1).double()
        model = SymmetryModel(
            net,
            Gaussian(dist.LogNormal(-1.0, 0.5)),
            priors={"*": ResidualPrior(dist.HalfNormal(0.3))},
            weight_prior=EquivariantPrior(1.5),
        )
        x, y = _case_data("rpp")
        engine = Laplace(
            "all",
            structure,
            num_epochs=20,
            batch_size=8,
            curvature_batch_size=5,  # ragged batches: 5, 5, 5, 1
            lr=0.02,
            progress=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CurvatureWarning)
            return engine.fit(model, (x, y))

    direct = fit()
    monkeypatch.setattr(SymmetryModel, "fast_log_joint_supported", lambda self: False)
    traced = fit()
    for key in ("log_evidence", "log_joint"):
        assert direct.info[key] == pytest.approx(traced.info[key], rel=1e-10), key
    assert torch.allclose(direct.loc(), traced.loc(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(direct.covariance(), traced.covariance(), rtol=1e-8, atol=1e-12)


def test_non_positive_definite_curvature_is_repaired_and_reported():
    torch.manual_seed(0)
    sigma = 30.0
    layer = RPPLinear(V(SO2()), V(SO2())).double()
    # Cauchy: -log p = log(pi (1 + t^2)) is concave for |t| > 1, so at t = 5 the residual's
    # curvature is negative and the weak likelihood cannot make up for it.
    cauchy = dist.Cauchy(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    model = SymmetryModel(layer, Gaussian(sigma), priors={"*": cauchy})
    with torch.no_grad():
        layer.residual.fill_(5.0)
        layer.bias_residual.zero_()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10, 2, generator=gen, dtype=F64)
    y = torch.randn(10, 2, generator=gen, dtype=F64)
    engine = Laplace(num_epochs=1, lr=1e-12, newton_steps=0, progress=False)
    with pytest.warns(CurvatureWarning, match=r"4 eigenvalue\(s\)"):
        post = engine.fit(model, (x, y))
    assert post.info["repaired_eigenvalues"] == 4
    # reference: Hessian = Phi^T Phi / sigma^2 + prior curvature, evidence with clipped eigenvalues
    theta = post.loc()
    residual, bias = theta[:4].reshape(2, 2), theta[4:]
    weight = layer.equivariant_weight().detach()
    phi = torch.cat(
        [
            torch.kron(torch.eye(2, dtype=F64)[None], x[:, None, :]).reshape(20, 4),
            torch.eye(2, dtype=F64).repeat(10, 1),
        ],
        1,
    )
    hess = phi.T @ phi / sigma**2 + torch.diag(2 * (1 - theta**2) / (1 + theta**2) ** 2)
    eig = torch.linalg.eigvalsh(hess)
    assert int((eig < 0).sum()) == 4
    # eigenvalues below the relative floor are raised to the smallest positive prior precision
    floor = 1e-10 * eig.abs().max()
    prior_diag = 2 * (1 - theta**2) / (1 + theta**2) ** 2
    fill = torch.maximum(floor, prior_diag[prior_diag > 0].min())
    clipped = torch.where(eig < floor, fill, eig)
    out = x @ (weight + residual).T + bias
    log_joint = (
        torch.distributions.Normal(out, sigma).log_prob(y).sum() + cauchy.log_prob(theta).sum()
    )
    expected = log_joint + 3 * math.log(2 * math.pi) - 0.5 * clipped.log().sum()
    assert post.info["log_evidence"] == pytest.approx(float(expected), rel=1e-9)
    vectors = torch.linalg.eigh(hess)[1]
    expected_cov = vectors @ torch.diag(1 / clipped) @ vectors.T
    assert torch.allclose(
        post.covariance(), expected_cov, rtol=1e-6, atol=1e-9 * float(expected_cov.abs().max())
    )


def test_omega_prime_posterior_shrinks_on_equivariant_data_and_moves_on_broken_data():
    summaries = {}
    for broken in (False, True):
        model = _nonstationary(lam=1.0, sigma=0.05)
        x, y = _image_data(broken)
        post = Laplace(num_epochs=60, lr=0.08, progress=False).fit(model, (x, y))
        assert post.info["curvature.omega_prime"] == "hessian"
        mean = post.mean()["omega_prime"]
        sd = post.covariance().diagonal().sqrt()
        summaries[broken] = (mean, sd)
    mean, sd = summaries[False]
    assert bool((mean.abs() < 2 * sd).all()), summaries  # indistinguishable from strict
    assert float(mean.norm()) < 0.05
    mean, sd = summaries[True]
    # the gain varies along x: omega_prime's x-frequency leaves 0 by many posterior sds
    assert float(mean[0].abs()) > 10 * float(sd[0]), summaries
    assert float(mean.norm()) > 3 * float(summaries[False][0].norm())


def test_positive_sites_get_a_gaussian_at_the_mode_of_the_unconstrained_density():
    torch.manual_seed(0)
    layer = RPPLinear(V(SO2()), V(SO2())).double()
    model = SymmetryModel(layer, Gaussian(0.3), priors={"*": ResidualPrior(dist.Gamma(8.0, 40.0))})
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(15, 2, generator=gen, dtype=F64)
    y = x @ torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64).T + torch.tensor([0.2, -0.1])
    y = y + 0.3 * torch.randn(y.shape, generator=gen, dtype=F64)
    post = Laplace(num_epochs=300, lr=0.05, progress=False).fit(model, (x, y))
    assert post.site_names == ["residual_scale", "residual", "bias_residual"]
    assert post.info["curvature.residual_scale"] == "hessian"

    def objective(u):  # -log p(D, u) with the scale in log space (log-Jacobian = u_0)
        values = {
            "residual_scale": u[0].exp(),
            "residual": u[1:5].reshape(2, 2),
            "bias_residual": u[5:],
        }
        tr = pyro.poutine.trace(pyro.poutine.condition(model, data=values)).get_trace(x, y)
        return -tr.log_prob_sum() - u[0]

    u = post.loc().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(u), u)
    assert float(grad.abs().max()) < 1e-7
    hess = torch.autograd.functional.hessian(objective, post.loc())
    assert torch.allclose(post.covariance(), torch.linalg.inv(hess), rtol=1e-6)


# ----------------------------------------------------------------------------------- errors
def test_user_errors_name_the_argument():
    model, x, y = make()
    with pytest.raises(ValueError, match="subset"):
        Laplace("weights")
    with pytest.raises(ValueError, match="structure"):
        Laplace("all", "lowrank")
    with pytest.raises(TypeError, match="learn_hyperparameters"):
        Laplace(learn_hyperparameters="residual_scale")
    with pytest.raises(ValueError, match="newton_steps"):
        Laplace("all", "diag", newton_steps=2)
    with pytest.raises(ValueError, match="curvature_batch_size"):
        Laplace(curvature_batch_size=0)
    with pytest.raises(ValueError, match="learn_hyperparameters names"):
        Laplace("all", learn_hyperparameters=["lam"], num_epochs=5, hyper_every=1).fit(
            model, (x, y)
        )
    with pytest.raises(ValueError, match="params has 'nope'"):
        Laplace("all").log_evidence(model, (x, y), {"nope": torch.zeros(1)})
    no_weight_prior = SymmetryModel(RPPLinear(V(SO2()), V(SO2())).double(), Gaussian(0.1))
    with pytest.raises(ValueError, match="weight_prior"):
        Laplace("all").fit(no_weight_prior, (x, y))
    two = SymmetryModel(
        RPPLinear(V(SO2()), V(SO2())).double(),
        [Gaussian(0.1), SymmetryLikelihood(SO2(), V(SO2()), V(SO2()))],
    )
    with pytest.raises(ValueError, match="single Gaussian or Categorical"):
        Laplace("relaxation", "diag").fit(two, (x, y))
    with pytest.raises(ValueError, match="targets"):
        Laplace(num_epochs=1, progress=False).fit(no_weight_prior, x)


class _TrainingDoubles(nn.Module):
    """Doubles its input in training mode and passes it through in eval mode (like a layer
    whose training behaviour differs: dropout, batch norm, a random rotation grid)."""

    def forward(self, x):
        return 2 * x if self.training else x


def test_curvature_evidence_and_predictions_use_the_eval_mode_function():
    """MAP trains in the network's own mode, but the curvature, the evidence, the linearised
    predictive and the diagnostics describe the eval-mode function that predictions use: they
    equal those of the same weights without the mode-dependent layer. The mode is restored."""
    from symprior.diagnostics import posterior_equivariance_errors, to_arviz

    model, x, y = make()
    model = SymmetryModel(
        nn.Sequential(model.network, _TrainingDoubles()),
        Gaussian(SIGMA),
        priors={"*": ResidualPrior(S_RES)},
        weight_prior=EquivariantPrior(S_EQ),
    )
    post = Laplace("all", "full", num_epochs=20, lr=0.05, progress=False).fit(model, (x, y))
    assert model.network.training
    plain_net = nn.Sequential(model.network[0], nn.Identity())
    plain = SymmetryModel(
        plain_net,
        Gaussian(SIGMA),
        priors={"*": ResidualPrior(S_RES)},
        weight_prior=EquivariantPrior(S_EQ),
    )
    evidence = Laplace("all", "full").log_evidence(plain, (x, y))
    assert post.info["log_evidence"] == pytest.approx(float(evidence.detach()), rel=1e-10)
    plain_post = Posterior(post.sites, post.blocks, post.point, engine="laplace", model=plain)
    for a, b in zip(linearized_predict(post, x), linearized_predict(plain_post, x), strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    kwargs = {"data": (x, y), "num_samples": 20}
    ll = to_arviz(post, generator=torch.Generator().manual_seed(0), **kwargs).log_likelihood["obs"]
    ref = to_arviz(plain_post, generator=torch.Generator().manual_seed(0), **kwargs)
    assert np.allclose(ll, ref.log_likelihood["obs"], rtol=1e-12)
    errors = [
        posterior_equivariance_errors(
            p,
            x,
            SO2(),
            V(SO2()),
            V(SO2()),
            num_samples=5,
            generator=torch.Generator().manual_seed(0),
        )["E"]
        for p in (post, plain_post)
    ]
    assert torch.allclose(errors[0], errors[1], rtol=1e-12, atol=1e-15)
    assert model.network.training and model.network[1].training


def test_evidence_reuses_the_hessian_of_a_newton_polish_that_stops_in_place(monkeypatch):
    # At the exact mode the first Newton step finds nothing to do: its Hessian is taken at the
    # final point, and the evidence must use it instead of a second pass over the data. The
    # result is the closed form either way.
    import symprior.inference._laplace as laplace_module

    model, x, y = make()
    _, mean, cov, evidence, *_ = closed_form(model, x, y)
    calls = {"n": 0}
    original = laplace_module.hessian

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(laplace_module, "hessian", counting)
    post = Laplace("all", "full", newton_steps=3, **exact_map()).fit(model, (x, y))
    assert calls["n"] == 1  # one batch, one Hessian: the polish's, reused by the evidence
    assert post.info["log_evidence"] == pytest.approx(evidence, rel=1e-9)
    assert torch.allclose(post.covariance(), cov, rtol=1e-8, atol=1e-12)
    assert torch.allclose(post.loc(), mean, rtol=1e-6, atol=1e-9)

    # Without the kept Hessian the evidence takes its own pass (what the count above saves).
    held = []
    monkeypatch.setattr(laplace_module._Problem, "hold_hessian", lambda self, *a: held.append(a))
    calls["n"] = 0
    Laplace("all", "full", newton_steps=3, **exact_map()).fit(model, (x, y))
    assert calls["n"] == 2 and len(held) == 1
