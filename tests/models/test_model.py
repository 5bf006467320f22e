import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn

from symprior.diagnostics import equivariance_error
from symprior.groups import SO2, Scalar, V
from symprior.models import (
    Categorical,
    Gaussian,
    SymmetryLikelihood,
    SymmetryModel,
    prior_predictive_symmetry,
)
from symprior.nn import relaxation_parameters
from symprior.nn.rpp import RPPMLP, EquivariantLinear, RPPLinear
from symprior.priors import EquivariantPrior, FrequencyPrior, ResidualPrior
from tests.conftest import DEVICES

G = SO2()


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _data(n=12, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen, dtype=dtype)
    y = torch.randn(n, 1, generator=gen, dtype=dtype)  # the scalar output of _mlp
    return x, y


def _mlp(seed=0):
    torch.manual_seed(seed)
    return RPPMLP(V(G), Scalar(G), 3 * V(G) + 2 * Scalar(G), 1).double()


def _latent(trace):
    return [
        n
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and n not in ("data", "obs")
    ]


def _params(trace):
    return [n for n, s in trace.nodes.items() if s["type"] == "param"]


def test_one_latent_site_per_relaxation_parameter_and_point_weights_otherwise():
    net = _mlp()
    model = SymmetryModel(net, Gaussian(0.5))
    x, _ = _data()
    trace = pyro.poutine.trace(model).get_trace(x)
    relax = [name for name, _, _ in relaxation_parameters(net)]
    assert _latent(trace) == relax
    point = [n for n, _ in net.named_parameters() if n not in relax]
    assert _params(trace) == point
    # with a weight prior every weight becomes a sample site too, and no param site remains
    model = SymmetryModel(net, Gaussian(0.5), weight_prior=dist.Normal(0.0, 1.0))
    trace = pyro.poutine.trace(model).get_trace(x)
    assert sorted(_latent(trace)) == sorted(relax + point)
    assert _params(trace) == []


def test_hyperparameter_sites_shared_or_per_layer():
    net, (x, _) = _mlp(), _data()
    shared = SymmetryModel(net, Gaussian(0.5), priors={"*": ResidualPrior(dist.HalfNormal(0.1))})
    trace = pyro.poutine.trace(shared).get_trace(x)
    assert _latent(trace).count("residual_scale") == 1
    assert shared.site_names()["hyperparameters"] == ["residual_scale"]
    per = SymmetryModel(
        net, Gaussian(0.5), priors={"*.residual": ResidualPrior(dist.HalfNormal(0.1), shared=False)}
    )
    trace = pyro.poutine.trace(per).get_trace(x)
    hyper = [n for n in _latent(trace) if n.endswith("residual_scale")]
    assert hyper == [f"layers.{i}.residual:residual_scale" for i in range(2)]


def test_rpp_negative_log_joint_is_scaled_squared_error_plus_two_weight_penalties():
    torch.manual_seed(1)
    layer = RPPLinear(2 * V(G), V(G)).double()
    with torch.no_grad():
        layer.residual.normal_(0, 0.3)
        layer.bias_residual.normal_(0, 0.3)
    sigma, s_eq, s_res = 0.7, 5.0, 0.1
    model = SymmetryModel(
        layer,
        Gaussian(sigma),
        priors={"*": ResidualPrior(s_res)},
        weight_prior=EquivariantPrior(s_eq),
    )
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(9, 2, generator=gen, dtype=torch.float64)
    values = {n: p.detach() for n, p in layer.named_parameters()}
    trace = pyro.poutine.trace(pyro.poutine.condition(model, data=values)).get_trace(x, y)
    nlj = -float(trace.log_prob_sum().detach())
    with torch.no_grad():
        resid = y - layer(x)
    a = torch.cat([layer.coeffs.detach(), layer.bias_coeffs.detach()])
    b = torch.cat([layer.residual.detach().reshape(-1), layer.bias_residual.detach()])
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    expected = (
        float((resid**2).sum()) / (2 * sigma**2)
        + resid.numel() * (math.log(sigma) + half_log_2pi)
        + float((a**2).sum()) / (2 * s_eq**2)
        + a.numel() * (math.log(s_eq) + half_log_2pi)
        + float((b**2).sum()) / (2 * s_res**2)
        + b.numel() * (math.log(s_res) + half_log_2pi)
    )
    assert nlj == pytest.approx(expected, rel=1e-12)


def test_nonstationary_negative_log_joint_is_004_map_objective():
    from symprior.nn.nonstationary import NonStationaryConv2d

    torch.manual_seed(3)
    conv = NonStationaryConv2d(1, 3, radius=1.5, soft="translation").double()
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    lam = 0.5
    model = SymmetryModel(net, Categorical(), priors={"*omega_prime": FrequencyPrior(lam)})
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 1, 7, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    for scale in (0.0, 0.3, 1.0):
        omega_prime = scale * torch.ones_like(conv.omega_prime)
        trace = pyro.poutine.trace(
            pyro.poutine.condition(model, data={"0.omega_prime": omega_prime})
        ).get_trace(x, y)
        with torch.no_grad():
            conv.omega_prime.copy_(omega_prime)
            ce = nn.functional.cross_entropy(net(x), y, reduction="sum")
        k = omega_prime.numel()
        # 004 app. B.2: L_MAP = CE + lam ||omega'||^2, plus the prior's constant (k/2) log(pi/lam)
        l_map = float(ce) + lam * float((omega_prime**2).sum())
        nlj = -float(trace.log_prob_sum().detach())
        assert nlj == pytest.approx(l_map + 0.5 * k * math.log(math.pi / lam), rel=1e-10)


def test_minibatch_scaling_averages_to_the_full_data_log_likelihood():
    net, (x, y) = _mlp(), _data(n=12)
    model = SymmetryModel(net, Gaussian(0.5))
    fixed = {name: p.detach() for name, p, _ in relaxation_parameters(net)}
    full = pyro.poutine.trace(pyro.poutine.condition(model, data=fixed)).get_trace(x, y)
    full.compute_log_prob()
    full_ll = float(full.nodes["obs"]["log_prob_sum"].detach())
    batch_lls = []
    for idx in torch.arange(12).split(4):
        tr = pyro.poutine.trace(pyro.poutine.condition(model, data=fixed)).get_trace(
            x[idx], y[idx], num_data=12
        )
        tr.compute_log_prob()
        assert tr.nodes["obs"]["scale"] == pytest.approx(3.0)
        batch_lls.append(
            float(tr.nodes["obs"]["log_prob_sum"].detach())
        )  # already scaled by N / batch
    assert sum(batch_lls) / len(batch_lls) == pytest.approx(full_ll, rel=1e-12)
    # the plate's own subsampling scales by N / subsample_size
    tr = pyro.poutine.trace(pyro.poutine.condition(model, data=fixed)).get_trace(
        x, y, subsample_size=3
    )
    assert tr.nodes["obs"]["scale"] == pytest.approx(4.0)
    assert tr.nodes["obs"]["value"].shape[0] == 3


def test_works_with_autoguides_predictive_and_handlers():
    net, (x, y) = _mlp(), _data()
    model = SymmetryModel(net, Gaussian(0.5))
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    before = net.layers[0].coeffs.detach().clone()
    losses = [svi.step(x, y) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert not torch.equal(before, net.layers[0].coeffs.detach())  # point weights are trained
    # Predictive at zero residuals returns the strict network's output
    relax = {name: p for name, p, _ in relaxation_parameters(net)}
    zeros = {name: torch.zeros(2, *p.shape, dtype=p.dtype) for name, p in relax.items()}
    pred = Predictive(model, posterior_samples=zeros, return_sites=["_RETURN"])(x)
    strict = _mlp()
    strict.load_state_dict(net.state_dict())
    from symprior.nn import set_strict

    set_strict(strict)
    with torch.no_grad():
        assert torch.allclose(pred["_RETURN"][0], strict(x), atol=1e-12)
    # block hides the relaxation sites from an outer trace
    blocked = pyro.poutine.trace(pyro.poutine.block(model, hide=list(relax))).get_trace(x)
    assert not set(relax) & set(_latent(blocked))


def test_symmetry_likelihood_matches_its_formula():
    torch.manual_seed(5)
    f = nn.Linear(2, 1, bias=False).double()  # not rotation invariant
    model = SymmetryModel(f, SymmetryLikelihood(G, V(G), Scalar(G), beta=4.0, num_samples=3))
    x, _ = _data(n=5)
    torch.manual_seed(11)
    trace = pyro.poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    torch.manual_seed(11)
    g = G.sample(15).reshape(3, 5, 2, 2)
    with torch.no_grad():
        lhs = f(torch.einsum("mbij,bj->mbi", g, x))
        rhs = f(x).expand(3, 5, 1)
    beta = 4.0
    expected = -beta / 2 * float(((lhs - rhs) ** 2).sum()) + 15 / 2 * math.log(beta / (2 * math.pi))
    assert float(trace.nodes["symmetry"]["log_prob_sum"].detach()) == pytest.approx(
        expected, rel=1e-10
    )


def test_symmetry_likelihood_precision_with_a_prior_is_a_site():
    f = nn.Linear(2, 1, bias=False).double()
    lik = SymmetryLikelihood(G, V(G), Scalar(G), beta=dist.Gamma(2.0, 1.0))
    trace = pyro.poutine.trace(SymmetryModel(f, lik)).get_trace(_data()[0])
    assert "symmetry_precision" in _latent(trace)
    assert trace.nodes["symmetry_precision"]["value"].shape == ()


def test_gaussian_learned_noise_is_a_positive_param():
    net, (x, y) = _mlp(), _data()
    trace = pyro.poutine.trace(SymmetryModel(net, Gaussian(None, init_scale=0.3))).get_trace(x, y)
    assert float(trace.nodes["noise_scale"]["value"].detach()) == pytest.approx(0.3)
    assert "noise_scale" in _params(trace)


def test_prior_predictive_symmetry_values_and_scaling():
    layer = RPPLinear(V(G), V(G)).double()
    x, _ = _data(n=8)
    medians = []
    for scale in (0.01, 0.1, 1.0):
        model = SymmetryModel(layer, Gaussian(0.5), priors={"*": ResidualPrior(scale)})
        result = prior_predictive_symmetry(
            model, x, G, V(G), V(G), num_draws=6, num_elements=20, seed=3
        )
        medians.append(float(result.errors.median()))
    assert medians[0] < medians[1] < medians[2]
    # the first draw's error recomputed by hand
    b0, bb0 = result.samples["residual"][0], result.samples["bias_residual"][0]
    w = layer.equivariant_weight().detach() + b0
    bias = layer.equivariant_bias().detach() + bb0
    gen = torch.Generator().manual_seed(3)
    e = equivariance_error(
        lambda z: z @ w.T + bias, x, G, V(G), V(G), num_samples=20, generator=gen
    )
    assert float(result.errors[0]) == pytest.approx(float(e), rel=1e-12)
    for bad in ("3", -1, 2.0):
        with pytest.raises(ValueError, match="seed must be a non-negative int"):
            prior_predictive_symmetry(model, x, G, V(G), V(G), num_draws=2, seed=bad)


@pytest.mark.parametrize("device", DEVICES)
def test_device_follows_the_net(device):
    net = _mlp().to(device)
    x, y = (t.to(device) for t in _data())
    trace = pyro.poutine.trace(SymmetryModel(net, Gaussian(0.5))).get_trace(x, y)
    assert all(
        s["value"].device.type == device for n, s in trace.nodes.items() if s["type"] == "sample"
    )


def test_bad_input_errors():
    net = _mlp()
    with pytest.raises(
        ValueError, match=r"pattern\(s\) \['conv\*'\] match no relaxation parameter"
    ):
        SymmetryModel(net, Gaussian(0.5), priors={"conv*": ResidualPrior(0.1)})
    with pytest.raises(ValueError, match=r"prior for 'layers\.0\.residual' has shape"):
        SymmetryModel(net, Gaussian(0.5), priors={"*": dist.Normal(torch.zeros(3), 1.0)})
    with pytest.raises(ValueError, match="scale must be > 0"):
        SymmetryModel(net, Gaussian(0.5), priors={"*": ResidualPrior(-0.1)})
    with pytest.raises(ValueError, match="scale must be > 0"):
        Gaussian(0.0)
    with pytest.raises(TypeError, match="likelihood must be"):
        SymmetryModel(net, "gaussian")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="net must be"):
        SymmetryModel("net", Gaussian(0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight_prior has no pattern for the weight"):
        SymmetryModel(net, Gaussian(0.5), weight_prior={"layers.0.*": dist.Normal(0.0, 1.0)})
    model = SymmetryModel(net, Gaussian(0.5))
    x, y = _data()
    with pytest.raises(ValueError, match="same leading size"):
        model(x, y[:3])
    with pytest.raises(ValueError, match="num_data must be"):
        model(x, y, num_data=3)
    # a layer not built from a prior family at all still gets a clear error
    assert EquivariantLinear(V(G), V(G)) is not None


def test_observations_of_the_wrong_shape_or_dtype_are_rejected_not_broadcast():
    """A y that would broadcast against the output (a missing or extra axis, another width)
    gives a silently wrong likelihood: both the traced model and the direct log joint refuse
    it, as they refuse float labels for a Categorical."""
    x, y = _data()
    model = SymmetryModel(_mlp(), Gaussian(0.5))
    latent = {k: p.detach() for k, p, _ in relaxation_parameters(model.network)}
    assert torch.isfinite(model.log_joint(latent, x, y))
    for bad in (y[:, 0], y.expand(-1, 3), y[..., None]):
        with pytest.raises(ValueError, match=r"y has shape .* output has shape \(12, 1\)"):
            model(x, bad)
        with pytest.raises(ValueError, match=r"y has shape .* output has shape \(12, 1\)"):
            model.log_joint(latent, x, bad)
    torch.manual_seed(0)
    net = RPPMLP(V(G), 3 * Scalar(G), 3 * V(G) + 2 * Scalar(G), 1).double()
    classifier = SymmetryModel(net, Categorical())
    # The regression model's weights of the same names are still in Pyro's param store.
    with pytest.raises(ValueError, match=r"param store holds 'layers.1.coeffs' with shape \(2,\)"):
        classifier(x)
    pyro.clear_param_store()
    latent = {k: p.detach() for k, p, _ in relaxation_parameters(net)}
    labels = torch.tensor([0, 1, 2] * 4)
    assert torch.isfinite(classifier.log_joint(latent, x, labels))
    with pytest.raises(ValueError, match=r"one label per row of logits, y of shape \(12,\)"):
        classifier(x, labels[:, None])
    with pytest.raises(TypeError, match="integer class labels"):
        classifier.log_joint(latent, x, labels.double())


def _traced_log_joint(model, latent, x, y, num_data=None, sites=None):
    conditioned = pyro.poutine.condition(model, data=latent)
    trace = pyro.poutine.trace(conditioned).get_trace(x, y, num_data=num_data)
    if sites is None:
        return float(trace.log_prob_sum().detach())
    return float(trace.log_prob_sum(lambda name, site: name in sites).detach())


@pytest.mark.parametrize(
    "case",
    [
        "fixed-noise",
        "hierarchical-prior",
        "weight-prior-random-noise",
        "categorical",
        "off-centre-and-tensor-scales",
    ],
)
def test_direct_log_joint_equals_the_traced_model(case):
    torch.manual_seed(3)
    x, y = _data(n=10)
    net = _mlp()
    kwargs: dict = {}
    likelihood = Gaussian(0.4)
    if case == "hierarchical-prior":
        kwargs["priors"] = {"*residual": ResidualPrior(dist.HalfNormal(0.5), shared=False)}
    if case == "weight-prior-random-noise":
        kwargs["weight_prior"] = dist.Normal(0.0, 2.0)
        likelihood = Gaussian(dist.LogNormal(0.0, 1.0))
    if case == "off-centre-and-tensor-scales":
        from symprior.priors import NormalPrior
        from symprior.priors._base import Hyperparameter

        kwargs["priors"] = {
            "layers.0.residual": NormalPrior(Hyperparameter(0.3, "scale"), loc=0.2),
            "*": ResidualPrior(torch.tensor(0.4, dtype=torch.float64)),
        }
    if case == "categorical":
        net = RPPMLP(V(G), 3 * Scalar(G), 2 * V(G) + Scalar(G), 1).double()
        likelihood = Categorical()
        y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(0))
    model = SymmetryModel(net, likelihood, **kwargs)
    assert model.fast_log_joint_supported()
    trace = pyro.poutine.trace(model).get_trace(x, y)
    latent = {
        n: s["value"].detach()
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and n != "data"
    }
    for num_data in (None, 40):
        fast = float(model.log_joint(latent, x, y, num_data=num_data).detach())
        assert fast == pytest.approx(_traced_log_joint(model, latent, x, y, num_data), rel=1e-12)
        # prior=False: the (scaled) likelihood term alone
        lik = float(model.log_joint(latent, x, y, num_data=num_data, prior=False).detach())
        ref = _traced_log_joint(model, latent, x, y, num_data, sites={"obs"})
        assert lik == pytest.approx(ref, rel=1e-12)
        assert abs(lik - fast) > 1e-3
    assert not SymmetryModel(net, Gaussian(None)).fast_log_joint_supported()
