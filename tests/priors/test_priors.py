import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from symprior.nn import Relaxation
from symprior.priors import (
    DistributionPrior,
    EquivariantPrior,
    FrequencyPrior,
    MagnitudePrior,
    PrecisionPrior,
    ResidualNetworkPrior,
    ResidualPrior,
    WidthPrior,
    as_prior,
    default_prior,
    scale_from_weight_decay,
)

W = torch.tensor([[0.3, -1.2, 0.5], [2.0, 0.0, -0.7]], dtype=torch.float64)


def _logpdf(prior, value, relaxation=None):
    return float(prior.distribution("p", value, relaxation).log_prob(value))


@pytest.mark.parametrize("lam", [0.01, 0.1, 2.0])
def test_frequency_prior_is_lam_squared_norm_plus_constant(lam):
    # 004 app. B.2: -log N(w | 0, 1/(2 lam)) = lam ||w||^2 + (k/2) log(pi / lam)
    k = W.numel()
    expected = lam * float((W**2).sum()) + 0.5 * k * math.log(math.pi / lam)
    assert -_logpdf(FrequencyPrior(lam), W) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("prior", "loc", "scale"),
    [
        (ResidualPrior(0.2), 0.0, 0.2),
        (EquivariantPrior(3.0), 0.0, 3.0),
        (ResidualNetworkPrior(0.05), 0.0, 0.05),
        (MagnitudePrior(loc=1.0, scale=0.3), 1.0, 0.3),
    ],
    ids=["residual", "equivariant", "residual-network", "magnitude"],
)
def test_gaussian_priors_match_scipy(prior, loc, scale):
    expected = stats.norm(loc, scale).logpdf(W.numpy()).sum()
    assert _logpdf(prior, W) == pytest.approx(expected, rel=1e-12)


def test_priors_centre_on_the_strict_value():
    strict = torch.tensor([math.pi, 2.0], dtype=torch.float64)
    rel = Relaxation("lie_algebra", "width", strict)
    w = torch.tensor([3.0, 1.5], dtype=torch.float64)
    expected = stats.norm(strict.numpy(), 0.3).logpdf(w.numpy()).sum()
    assert _logpdf(WidthPrior(0.3), w, rel) == pytest.approx(expected, rel=1e-12)
    rel = Relaxation("power", "magnitude", 1.0)
    expected = stats.norm(1.0, 0.1).logpdf(w.numpy()).sum()
    assert _logpdf(MagnitudePrior(), w, rel) == pytest.approx(expected, rel=1e-12)


def test_precision_prior_is_gamma():
    beta = torch.tensor(3.5, dtype=torch.float64)
    expected = stats.gamma(a=2.0, scale=1 / 0.5).logpdf(3.5)
    assert _logpdf(PrecisionPrior(2.0, 0.5), beta) == pytest.approx(expected, rel=1e-12)


def test_weight_decay_reading_of_the_rpp_defaults():
    # wd ||w||^2 is the negative log density of N(0, 1/(2 wd)) up to a constant
    for wd in (1e-3, 1e2):
        s = scale_from_weight_decay(wd)
        d = ResidualPrior(s).distribution("w", W)
        diff = -(d.log_prob(W) - d.log_prob(torch.zeros_like(W)))
        assert float(diff) == pytest.approx(wd * float((W**2).sum()), rel=1e-12)
    assert ResidualPrior().scale.value == pytest.approx(1 / math.sqrt(200))


def test_hierarchical_lam_gets_a_site_and_changes_the_density():
    prior = FrequencyPrior(lam=dist.Gamma(2.0, 4.0))

    def model():
        lam_cache: dict = {}
        return pyro.sample("w", prior.distribution("w", W, None, lam_cache))

    for lam in (0.05, 1.5):
        conditioned = pyro.poutine.condition(
            model, data={"lam": torch.tensor(lam, dtype=torch.float64), "w": W}
        )
        trace = pyro.poutine.trace(conditioned).get_trace()
        assert set(n for n, s in trace.nodes.items() if s["type"] == "sample") == {"lam", "w"}
        trace.compute_log_prob()
        k = W.numel()
        expected_w = -(lam * float((W**2).sum()) + 0.5 * k * math.log(math.pi / lam))
        assert float(trace.nodes["w"]["log_prob_sum"].detach()) == pytest.approx(
            expected_w, rel=1e-10
        )
        expected_lam = stats.gamma(a=2.0, scale=1 / 4.0).logpdf(lam)
        assert float(trace.nodes["lam"]["log_prob_sum"].detach()) == pytest.approx(
            expected_lam, rel=1e-10
        )


def test_per_parameter_hyperparameter_sites():
    prior = ResidualPrior(dist.HalfNormal(1.0), shared=False)
    trace = pyro.poutine.trace(
        lambda: [
            pyro.sample(n, prior.distribution(n, W, None, {})) for n in ("a.residual", "b.residual")
        ]
    ).get_trace()
    names = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert names == [
        "a.residual.residual_scale",
        "a.residual",
        "b.residual.residual_scale",
        "b.residual",
    ]


def test_prior_specs():
    # a scalar distribution is expanded to the parameter's shape, all dims as event dims
    d = as_prior(dist.Normal(0.0, 2.0)).distribution("w", W)
    assert d.event_shape == W.shape and d.batch_shape == ()
    assert float(d.log_prob(W)) == pytest.approx(stats.norm(0, 2).logpdf(W.numpy()).sum(), rel=1e-6)
    # a callable (name, shape) -> Distribution
    seen = {}

    def spec(name, shape):
        seen[name] = tuple(shape)
        return dist.Laplace(torch.zeros(shape, dtype=torch.float64), 1.0)

    d = as_prior(spec).distribution("w", W)
    assert seen == {"w": (2, 3)}
    assert float(d.log_prob(W)) == pytest.approx(
        stats.laplace(0, 1).logpdf(W.numpy()).sum(), rel=1e-12
    )
    assert isinstance(as_prior(dist.Normal(0.0, 1.0)), DistributionPrior)
    assert isinstance(default_prior(Relaxation("nonstationary", "omega_prime")), FrequencyPrior)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="scale must be > 0"):
        ResidualPrior(0.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        ResidualPrior(-1.0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        FrequencyPrior(lam=0.0)
    with pytest.raises(TypeError, match="lam must be a positive number or a pyro distribution"):
        FrequencyPrior(lam="big")
    with pytest.raises(ValueError, match="positive support"):
        FrequencyPrior(lam=dist.Normal(0.0, 1.0))
    with pytest.raises(
        ValueError, match=r"prior for 'w' has shape \(3,\), but the parameter has shape \(2, 3\)"
    ):
        as_prior(dist.Normal(torch.zeros(3), 1.0)).distribution("w", W)
    with pytest.raises(TypeError, match="prior must be"):
        as_prior(3.0)
    with pytest.raises(ValueError, match="concentration must be > 0"):
        PrecisionPrior(concentration=-1.0)
    with pytest.raises(ValueError, match="no default prior"):
        default_prior(Relaxation("remul", "unknown"))


@pytest.mark.parametrize("zero_loc", [True, False])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_isotropic_normal_is_the_expanded_normal(zero_loc, batch):
    """The one-pass density equals Normal(loc, scale).expand(shape).to_event(...), values and
    gradients (scale), for a value with and without leading batch dims."""
    from symprior.priors._base import IsotropicNormal

    gen = torch.Generator().manual_seed(0)
    shape = torch.Size([4, 5])
    loc = torch.tensor(0.0 if zero_loc else 0.7, dtype=torch.float64)
    value = torch.randn(*batch, *shape, generator=gen, dtype=torch.float64)
    s1 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    s2 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    fast = IsotropicNormal(loc, s1, shape, zero_loc=zero_loc).log_prob(value)
    ref = dist.Normal(loc, s2).expand(shape).to_event(2).log_prob(value)
    assert fast.shape == ref.shape == torch.Size(batch)
    assert torch.allclose(fast, ref, rtol=1e-12)
    (g1,) = torch.autograd.grad(fast.sum(), s1)
    (g2,) = torch.autograd.grad(ref.sum(), s2)
    assert torch.allclose(g1, g2, rtol=1e-12)


# --------------------------------------------------------- multivariate priors and moving them
COV = torch.tensor([[2.0, 0.3], [0.3, 1.0]])


@pytest.mark.parametrize(
    "hyperprior",
    [
        dist.HalfNormal(1.0),
        dist.HalfCauchy(1.0),
        dist.Exponential(2.0),
        dist.Gamma(2.0, 4.0),
        dist.LogNormal(-1.0, 0.5),
        dist.InverseGamma(2.0, 3.0),
        dist.Uniform(0.1, 2.0),
        dist.Uniform(0.0, 2.0),
        dist.Beta(2.0, 2.0),
    ],
    ids=repr,
)
def test_hyperpriors_on_the_positive_reals_are_accepted(hyperprior):
    prior = ResidualPrior(hyperprior)
    cache: dict = {}
    trace = pyro.poutine.trace(
        lambda: pyro.sample("w", prior.distribution("w", W, None, cache))
    ).get_trace()
    scale = trace.nodes["residual_scale"]["value"]
    assert float(scale) > 0
    expected = stats.norm(0.0, float(scale)).logpdf(W.numpy()).sum()
    assert float(trace.nodes["w"]["fn"].log_prob(W)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    "hyperprior",
    [
        dist.Uniform(-0.5, 0.5),
        dist.Uniform(-2.0, -1.0),
        dist.Normal(0.0, 1.0),
        dist.Cauchy(0.0, 1.0),
        dist.Poisson(2.0),
        dist.Delta(torch.tensor(1.0)),
        dist.TransformedDistribution(
            dist.HalfNormal(1.0), dist.transforms.AffineTransform(-1.0, 1.0)
        ),
    ],
    ids=repr,
)
def test_hyperpriors_with_negative_support_are_rejected(hyperprior):
    with pytest.raises(ValueError, match=r"^scale: a hyperprior must have positive support"):
        ResidualPrior(hyperprior)
    with pytest.raises(ValueError, match=r"^lam: a hyperprior must have positive support"):
        FrequencyPrior(lam=hyperprior)
