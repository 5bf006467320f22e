"""Posterior.predict: the linearised (GLM) predictive of Laplace posteriors against closed forms
and brute-force Monte Carlo, the Monte-Carlo default of the other engines, and the checks."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.func import jacrev

import symprior.inference._laplace as laplace_module
from symprior.inference import MAP, SVI, Laplace, Posterior, linearized_predict
from symprior.models import Categorical, SymmetryModel
from tests.inference.linear_gaussian import (
    closed_form,
    exact_map,
    make,
    network_at,
    site_order,
)

F64 = torch.float64


def _new_inputs(n=5, seed=9):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _features(model, x_new):
    """The linear model's output is ``phi @ theta`` (no offset: the bias is latent too)."""
    return closed_form(model, x_new, torch.zeros(x_new.shape[0], 2, dtype=F64))[4]


# ----------------------------------------------------------------- linear-Gaussian model
@pytest.fixture(scope="module")
def linear_laplace():
    pyro.clear_param_store()
    model, x, y = make()
    _, mean, cov, *_ = closed_form(model, x, y)
    post = Laplace("all", "full", **exact_map()).fit(model, (x, y))
    return model, x, post, mean, cov


def test_default_laplace_prediction_is_the_closed_form_predictive_mean(linear_laplace):
    model, _, post, mean, cov = linear_laplace
    x_new = _new_inputs()
    phi = _features(model, x_new)
    exact = (phi @ mean).reshape(5, 2)
    assert post.engine == "laplace"
    assert torch.allclose(post.predict(x_new), exact, rtol=1e-6, atol=1e-9)
    assert torch.equal(post.predict(x_new), post.predict(x_new, method="linearized"))
    # Weight-space Monte Carlo approaches it within its standard error (the model is linear,
    # so the Laplace posterior is exact and both predictives have this mean).
    num = 4000
    mc = post.predict(x_new, num, torch.Generator().manual_seed(0), method="montecarlo")
    sd = torch.einsum("ki,ij,kj->k", phi, cov, phi).sqrt().reshape(5, 2)
    assert bool(((mc - exact).abs() < 4 * sd / num**0.5).all())
    assert not torch.allclose(mc, exact, atol=1e-6)  # it is a different, sampled estimate


def test_linearized_moments_over_a_partial_laplace_with_point_weights():
    """Laplace over the residuals only: the equivariant coefficients are a point (delta) block
    at the joint mode; the predictive variance is that of the conditional Gaussian."""
    model, x, y = make()
    names, mean, cov, *_ = closed_form(model, x, y)
    post = Laplace("relaxation", "full", **exact_map()).fit(model, (x, y))
    assert post.site_names == names and [b.kind for b in post.blocks] == ["full", "delta"]
    x_new = _new_inputs()
    phi = _features(model, x_new)
    conditional = torch.linalg.inv(torch.linalg.inv(cov)[:6, :6])  # residual | coefficients
    expected_var = torch.einsum("ki,ij,kj->k", phi[:, :6], conditional, phi[:, :6])
    pred_mean, pred_var = linearized_predict(post, x_new)
    assert torch.allclose(pred_mean.reshape(-1), phi @ mean, rtol=1e-6, atol=1e-9)
    assert torch.allclose(pred_var.reshape(-1), expected_var, rtol=1e-6)
    assert torch.allclose(post.predict(x_new).reshape(-1), phi @ mean, rtol=1e-6, atol=1e-9)


def test_a_saved_and_loaded_laplace_posterior_keeps_the_linearized_default(
    linear_laplace, tmp_path
):
    model, _, post, mean, _ = linear_laplace
    path = tmp_path / "laplace.pt"
    post.save(path)
    loaded = Posterior.load(path, model=model)
    assert loaded.engine == "laplace"
    x_new = _new_inputs()
    exact = (_features(model, x_new) @ mean).reshape(5, 2)
    for p in (loaded, loaded.to("cpu")):
        prediction = p.predict(x_new, 3, torch.Generator().manual_seed(0))
        assert torch.allclose(prediction, exact, rtol=1e-6, atol=1e-9)
        assert torch.equal(prediction, post.predict(x_new, method="linearized"))


@pytest.mark.parametrize("engine", ["map", "svi"])
def test_the_default_of_other_engines_is_montecarlo(engine):
    model, x, y = make()
    if engine == "map":
        post = MAP(**exact_map()).fit(model, (x, y))
    else:
        post = SVI("fullrank", num_epochs=20, progress=False).fit(model, (x, y))
    assert post.site_names == site_order(model)  # the columns of the features
    x_new = _new_inputs()
    phi = _features(model, x_new)
    draws = post.sample(6, torch.Generator().manual_seed(3))
    theta = torch.cat([draws[n].reshape(6, -1) for n in post.site_names], -1)
    reference = (theta @ phi.T).mean(0).reshape(5, 2)  # naive average over the same draws
    prediction = post.predict(x_new, 6, torch.Generator().manual_seed(3))
    assert torch.allclose(prediction, reference, rtol=1e-10, atol=1e-12)
    explicit = post.predict(x_new, 6, torch.Generator().manual_seed(3), method="montecarlo")
    assert torch.equal(prediction, explicit)
    if engine == "svi":
        linearized = post.predict(x_new, method="linearized")
        assert torch.allclose(linearized.reshape(-1), phi @ post.loc(), rtol=1e-10)
        assert not torch.allclose(prediction, linearized, atol=1e-6)


def test_return_samples_and_bad_methods(linear_laplace):
    model, _, post, _, _ = linear_laplace
    x_new = _new_inputs()
    # Per-draw predictions are Monte Carlo's: None then means "montecarlo" for Laplace too.
    samples = post.predict(x_new, 4, torch.Generator().manual_seed(1), return_samples=True)
    expected = post.predict(
        x_new, 4, torch.Generator().manual_seed(1), return_samples=True, method="montecarlo"
    )
    assert samples.shape == (4, 5, 2) and torch.equal(samples, expected)
    draws = post.sample(4, torch.Generator().manual_seed(1))
    theta = torch.cat([draws[n].reshape(4, -1) for n in post.site_names], -1)
    reference = (theta @ _features(model, x_new).T).reshape(4, 5, 2)
    assert torch.allclose(samples, reference, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"return_samples=True needs method='montecarlo'"):
        post.predict(x_new, return_samples=True, method="linearized")
    for bad in ("mc", "Linearized", 1):
        with pytest.raises(
            ValueError, match=r"method must be None, 'linearized' or 'montecarlo', got"
        ):
            post.predict(x_new, method=bad)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"num_samples must be an int >= 1, got"):
            post.predict(x_new, bad)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        post.predict(x_new, 3, 5)


def test_default_jacobian_batches_do_not_change_the_moments(linear_laplace, monkeypatch):
    _, x, post, _, _ = linear_laplace
    whole = linearized_predict(post, x, batch_size=len(x))
    by_row = linearized_predict(post, x, batch_size=1)
    monkeypatch.setattr(laplace_module, "JACOBIAN_OUTPUTS", 6)  # 3 rows of 2 outputs per Jacobian
    default = linearized_predict(post, x)
    for a, b, c in zip(whole, by_row, default, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
        assert torch.allclose(a, c, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------- Categorical
def _classifier(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    prior = dist.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(0.7, dtype=F64))
    model = SymmetryModel(net, Categorical(), weight_prior=prior)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(25, 2, generator=gen, dtype=F64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return model, x, y


@pytest.mark.parametrize("structure", ["full", "kron", "diag"])
def test_categorical_glm_predictive_equals_brute_force_monte_carlo(structure):
    """The class probabilities average the softmax over the Gaussian of the linearised logits;
    the reference draws weights from the dense posterior covariance and maps them through the
    (explicit) Jacobian, 200000 times."""
    model, x, y = _classifier()
    post = Laplace("all", structure, **exact_map()).fit(model, (x, y))
    x_new = 2 * torch.randn(10, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    logits = network_at(post, model.network, x_new)

    loc, cov = post.loc(), post.covariance()
    f0 = logits(loc)
    jac = jacrev(logits)(loc).reshape(10, 3, -1)
    output_cov = jac @ cov @ jac.mT
    mean, full = linearized_predict(post, x_new, full_covariance=True)
    assert torch.allclose(mean, f0, rtol=1e-12)
    assert torch.allclose(full, output_cov, rtol=1e-9, atol=1e-12)
    assert torch.allclose(linearized_predict(post, x_new)[1], output_cov.diagonal(0, -2, -1))

    z = torch.randn(200_000, loc.numel(), generator=torch.Generator().manual_seed(3), dtype=F64)
    weights = z @ torch.linalg.cholesky(cov).T
    reference = torch.softmax(f0 + torch.einsum("nkd,sd->snk", jac, weights), -1).mean(0)

    probabilities = post.predict(x_new, 20_000, torch.Generator().manual_seed(0))
    assert torch.allclose(probabilities.sum(-1), torch.ones(10, dtype=F64), rtol=1e-12)
    assert (probabilities - reference).abs().max() < 5e-3
    # the plain softmax of the mode's logits is far from it: the test tells them apart
    assert (torch.softmax(f0, -1) - reference).abs().max() > 0.05
    # reproducible with a seeded generator; the default 100 antithetic draws stay close
    again = post.predict(x_new, 20_000, torch.Generator().manual_seed(0))
    assert torch.equal(probabilities, again)
    assert (
        post.predict(x_new, generator=torch.Generator().manual_seed(1)) - reference
    ).abs().max() < 0.05
