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
from symprior.priors._base import _on
from tests.conftest import DEVICES

W = torch.tensor([[0.3, -1.2, 0.5], [2.0, 0.0, -0.7]], dtype=torch.float64)


@pytest.fixture(autouse=True)
def _clean_param_store():
    """Models built here keep their point weights in Pyro's global param store, where a later
    model with parameters of the same names would read them (a float64 model's weights in a
    float32 model: SymmetryModel's doctest). Every test starts and ends with an empty store."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


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
        "a.residual:residual_scale",
        "a.residual",
        "b.residual:residual_scale",
        "b.residual",
    ]


def test_legacy_per_parameter_site_names_map_to_the_current_ones():
    """Sites saved as "<parameter>.<site_name>" (before the ":" separator) are recognised: the
    parameter is a saved site too and the hyperparameter is scalar. Other dotted names (network
    parameters of submodules, a parameter under a module named like a shared site but not scalar)
    are left alone, and a file with current names needs no renames."""
    from symprior.priors._base import legacy_site_renames

    prior = ResidualPrior(dist.HalfNormal(1.0), shared=False)
    (hyper,) = prior.hyperparameters()
    params = {"layers.0.residual": [4, 4], "layers.1.residual": [2, 4], "bias": [2]}
    current = {hyper.site(n): [] for n in ("layers.0.residual", "layers.1.residual")}
    assert current == {
        "layers.0.residual:residual_scale": [],
        "layers.1.residual:residual_scale": [],
    }
    old = {n.replace(":", "."): shape for n, shape in current.items()}
    assert legacy_site_renames({**params, **old}) == {n.replace(":", "."): n for n in current}
    assert legacy_site_renames({**params, **current}) == {}
    # "lam" a shared site and "lam.omega" a vector parameter of a module named "lam"
    assert legacy_site_renames({"lam": [], "lam.omega": [3], "noise_scale": []}) == {}


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
CPU = torch.device("cpu")


def _mvn(param):
    """A float32 MultivariateNormal given by one of its three parametrisations, and the float64
    covariance it stands for (computed from the float32 numbers it was given)."""
    matrix = {
        "covariance_matrix": COV,
        "precision_matrix": torch.linalg.inv(COV),
        "scale_tril": torch.linalg.cholesky(COV),
    }[param]
    m = matrix.double()
    cov = {"covariance_matrix": m, "precision_matrix": torch.linalg.inv(m), "scale_tril": m @ m.T}
    loc = torch.tensor([0.5, -0.2])
    return dist.MultivariateNormal(loc, **{param: matrix}), loc.double(), cov[param]


def _snapshot(obj, path="d", seen=None):
    """Every attribute of a distribution and of the distributions, transforms and lists inside
    it, by identity: what _on must leave as it found it."""
    seen = set() if seen is None else seen
    if id(obj) in seen:  # a transform and its inverse refer to each other
        return {}
    seen.add(id(obj))
    out = {}
    if isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            out.update(_snapshot(item, f"{path}[{i}]", seen))
    elif isinstance(obj, torch.distributions.Distribution | torch.distributions.Transform):
        for key, value in vars(obj).items():
            out[f"{path}.{key}"] = id(value)
            out.update(_snapshot(value, f"{path}.{key}", seen))
    return out


MVN_PARAMS = ["covariance_matrix", "precision_matrix", "scale_tril"]


@pytest.mark.parametrize("param", MVN_PARAMS)
def test_on_moves_a_multivariate_normal_in_the_parametrisation_it_was_given(param):
    d, loc, cov = _mvn(param)
    before = _snapshot(d)
    moved = _on(d, torch.float64, CPU)
    assert _snapshot(d) == before and d.loc.dtype == torch.float32
    assert type(moved) is dist.MultivariateNormal and moved is not d
    # the constructor took one parametrisation; the copy holds that one (the others are derived)
    given = {p for p in MVN_PARAMS if p in vars(moved)}
    assert given == {param}
    value = torch.tensor([0.7, -1.1], dtype=torch.float64)
    expected = stats.multivariate_normal(loc.numpy(), cov.numpy()).logpdf(value.numpy())
    log_prob = moved.log_prob(value)
    assert log_prob.dtype == torch.float64
    assert float(log_prob) == pytest.approx(expected, rel=1e-12)
    assert moved.sample().dtype == torch.float64
    # a distribution already in place is returned as it is
    assert _on(moved, torch.float64, CPU) is moved
    assert _on(d, torch.float32, CPU) is d


def _affine(loc, scale):
    return dist.transforms.AffineTransform(torch.tensor(loc), torch.tensor(scale))


@pytest.mark.parametrize(
    ("make", "reference"),
    [
        (lambda: dist.LogNormal(-1.0, 0.5), stats.lognorm(s=0.5, scale=math.exp(-1.0))),
        # exp(1 + 2 N(0, 0.5^2)) is LogNormal(1, 1)
        (
            lambda: dist.TransformedDistribution(
                dist.Normal(0.0, 0.5), [_affine(1.0, 2.0), dist.transforms.ExpTransform()]
            ),
            stats.lognorm(s=1.0, scale=math.e),
        ),
        (
            lambda: dist.TransformedDistribution(
                dist.Normal(0.0, 0.5),
                dist.transforms.ComposeTransform(
                    [_affine(1.0, 2.0), dist.transforms.ExpTransform()]
                ),
            ),
            stats.lognorm(s=1.0, scale=math.e),
        ),
        # the inverse of x -> 1 + 2x takes N(1, 2^2) to N(0, 1): the inverse's own transform
        (
            lambda: dist.TransformedDistribution(dist.Normal(1.0, 2.0), _affine(1.0, 2.0).inv),
            stats.norm(0.0, 1.0),
        ),
        (lambda: dist.Gamma(2.0, 4.0), stats.gamma(a=2.0, scale=0.25)),
    ],
    ids=["lognormal", "affine-exp", "composed", "inverse-affine", "gamma"],
)
def test_on_moves_transformed_distributions_whole(make, reference):
    """Base distribution and transform parameters are converted: the float64 density equals
    scipy's to float64 precision (a float32 part would leave errors near 1e-7)."""
    d = make()
    d.log_prob(torch.tensor(1.0))  # a transform that has made its inverse refers to it
    before = _snapshot(d)
    value = torch.tensor([0.3, 1.7, 4.0], dtype=torch.float64)
    moved = _on(d, torch.float64, CPU)
    assert _snapshot(d) == before
    assert type(moved) is type(d)
    log_prob = moved.log_prob(value)
    assert log_prob.dtype == torch.float64 and moved.sample().dtype == torch.float64
    assert torch.allclose(log_prob, torch.from_numpy(reference.logpdf(value.numpy())), rtol=1e-12)
    # the input still computes in float32
    assert d.log_prob(value.float()).dtype == torch.float32
    # a converted transform's inverse is the inverse of the copy, not of the original
    for t in getattr(moved, "transforms", []):
        assert t.inv.inv is t


def test_on_keeps_what_is_not_a_parameter():
    """Constructor arguments that are not parameters survive (Delta's event_dim, a mask), boolean
    tensors keep their dtype, and a tensor held twice stays one tensor."""
    delta = _on(dist.Delta(torch.tensor([0.4, 1.3]), event_dim=1), torch.float64, CPU)
    assert delta.event_shape == (2,) and delta.v.dtype == torch.float64
    mask = torch.tensor([True, False])
    masked = dist.Normal(torch.zeros(2), 2.0).mask(mask).to_event(1)
    moved = _on(masked, torch.float64, CPU)
    v = torch.tensor([0.4, 1.3], dtype=torch.float64)
    assert moved.event_shape == (2,)
    assert float(moved.log_prob(v)) == pytest.approx(stats.norm(0, 2).logpdf(0.4), rel=1e-12)
    assert moved.base_dist._mask.dtype == torch.bool
    categorical = _on(dist.Categorical(logits=torch.tensor([0.1, 0.5, -1.0])), torch.float64, CPU)
    assert categorical._param is categorical.logits and categorical.logits.dtype == torch.float64


@pytest.mark.parametrize(
    "hyperprior",
    [
        lambda t: dist.LogNormal(t(-1.0), t(0.5)),
        lambda t: dist.TransformedDistribution(
            dist.Normal(t(0.0), t(0.5)),
            [dist.transforms.AffineTransform(t(-1.0), t(1.0)), dist.transforms.ExpTransform()],
        ),
    ],
    ids=["lognormal", "affine-exp"],
)
@pytest.mark.parametrize(
    ("given", "dtype"),
    [(torch.float32, torch.float64), (torch.float64, torch.float32)],
    ids=["float32-in-float64", "float64-in-float32"],
)
def test_hyperpriors_compute_in_the_parameters_dtype(hyperprior, given, dtype):
    """A hyperprior given in one dtype is sampled and evaluated in the parameter's: the site's
    value and density have its dtype, and the density is scipy's LogNormal(-1, 0.5)."""
    d = hyperprior(lambda v: torch.tensor(v, dtype=given))
    assert d.sample().dtype == given
    prior = ResidualPrior(d, shared=False)
    w = W.to(dtype)
    trace = pyro.poutine.trace(
        lambda: pyro.sample("w", prior.distribution("w", w, None, {}))
    ).get_trace()
    site = trace.nodes["w:residual_scale"]
    assert site["value"].dtype == dtype and trace.nodes["w"]["value"].dtype == dtype
    scale = 0.37
    log_prob = site["fn"].log_prob(torch.tensor(scale, dtype=dtype))
    assert log_prob.dtype == dtype
    expected = stats.lognorm(s=0.5, scale=math.exp(-1.0)).logpdf(scale)
    assert float(log_prob) == pytest.approx(expected, rel=1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("param", MVN_PARAMS)
def test_multivariate_normal_prior_in_a_model(param):
    """A MultivariateNormal prior spec, given in float32 by any of its parametrisations, is the
    prior of a float64 model's parameter: the traced prior term and the model's direct log prior
    equal scipy's densities."""
    from symprior.groups import SO2, V
    from symprior.models import Gaussian, SymmetryModel
    from symprior.nn import RPPLinear

    d, loc, cov = _mvn(param)
    torch.manual_seed(0)
    net = RPPLinear(V(SO2()), V(SO2())).double()
    model = SymmetryModel(
        net, Gaussian(0.1), priors={"bias_residual": d, "residual": ResidualPrior(0.3)}
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    bias = torch.tensor([0.7, -1.1], dtype=torch.float64)
    residual = torch.tensor([[0.1, -0.2], [0.3, 0.05]], dtype=torch.float64)
    latent = {"residual": residual, "bias_residual": bias}
    trace = pyro.poutine.trace(pyro.poutine.condition(model, data=latent)).get_trace(x, y)
    trace.compute_log_prob()
    expected = stats.multivariate_normal(loc.numpy(), cov.numpy()).logpdf(bias.numpy())
    got = trace.nodes["bias_residual"]["log_prob_sum"].detach()
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-12)
    expected += stats.norm(0.0, 0.3).logpdf(residual.numpy()).sum()
    assert float(model.log_prior(latent)) == pytest.approx(expected, rel=1e-12)


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


@pytest.mark.parametrize("device", DEVICES)
def test_on_moves_every_tensor_to_the_device(device):
    """Base distribution, transform and multivariate parameters land on the device, with the
    densities of the CPU float64 copies."""
    device = torch.device(device)
    log_normal = dist.TransformedDistribution(
        dist.Normal(0.0, 0.5), [_affine(1.0, 2.0), dist.transforms.ExpTransform()]
    )
    mvn, _, _ = _mvn("precision_matrix")
    values = {"lognormal": torch.tensor([0.3, 1.7]), "mvn": torch.tensor([0.7, -1.1])}
    for name, d in (("lognormal", log_normal), ("mvn", mvn)):
        moved = _on(d, torch.float64, device)
        reference = _on(d, torch.float64, CPU)
        got = moved.log_prob(values[name].double().to(device))
        assert got.device.type == device.type and moved.sample().device.type == device.type
        expected = reference.log_prob(values[name].double())
        assert torch.allclose(got.cpu(), expected, rtol=1e-12)
