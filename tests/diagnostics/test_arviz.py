r"""to_arviz: groups, variables, dims and coords for every engine, values against references."""

import math

import arviz as az
import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from symprior.diagnostics import to_arviz
from symprior.diagnostics._arviz import site_dims
from symprior.groups import SO2, V
from symprior.inference import MAP, SVI, Posterior, SiteInfo
from symprior.inference._laplace import Laplace
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPLinear
from symprior.nn.power import PowerLayer, image_generators
from symprior.priors import ResidualPrior

NUM = 40
LAYERS = ["branches.0", "branches.1"]
BREAK = torch.tensor([[1.5, 0.4], [0.0, -0.5]], dtype=torch.float64)


def _data(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x, x @ BREAK.T + 0.3 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


class _Parallel(nn.Module):
    r"""Two RPP layers side by side, ``f(x) = L_0(x) + L_1(|x| x)``: affine in every parameter.

    Not stacked, and not both on ``x``: either gives the unpriored coefficients a flat direction
    (the scale symmetry ``(c W_1, W_2 / c)``, or ``a_0 - a_1``), and Laplace then warns.
    """

    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList([RPPLinear(V(SO2()), V(SO2())) for _ in range(2)])

    def forward(self, x):
        return self.branches[0](x) + self.branches[1](_lift(x))


def _lift(x):
    return x.norm(dim=-1, keepdim=True) * x


def _net(seed=0):
    torch.manual_seed(seed)
    return _Parallel().double()


def _fit(engine):
    x, y = _data()
    one = torch.tensor(1.0, dtype=torch.float64)
    if engine == "map":
        # learned point noise and a hierarchical residual scale (a hyperparameter site)
        prior = ResidualPrior(dist.LogNormal(-one, 0.5 * one))
        model = SymmetryModel(_net(), Gaussian(None), priors={"*": prior})
        fitter = MAP(num_epochs=5, optimizer="lbfgs", lr=1.0, progress=False)
    elif engine == "svi":
        # a random noise scale (a likelihood site)
        model = SymmetryModel(
            _net(), Gaussian(dist.HalfNormal(one)), priors={"*": ResidualPrior(0.5)}
        )
        fitter = SVI("fullrank", num_epochs=40, lr=0.02, progress=False)
    else:
        model = SymmetryModel(_net(), Gaussian(0.3), priors={"*": ResidualPrior(0.5)})
        fitter = Laplace(num_epochs=5, optimizer="lbfgs", lr=1.0, progress=False)
    return fitter.fit(model, (x, y))


ENGINES = ["map", "svi", "laplace"]
RELAXATIONS = [f"{n}.{p}" for n in LAYERS for p in ("residual", "bias_residual")]
EXPECTED_VARS = {
    "map": {"residual_scale", *RELAXATIONS, "equivariance_level"},
    "svi": {"noise_scale", *RELAXATIONS, "equivariance_level"},
    "laplace": {*RELAXATIONS, "equivariance_level"},
}


@pytest.fixture(scope="module", params=ENGINES)
def fitted(request):
    post = _fit(request.param)
    x, y = _data()
    idata = to_arviz(
        post,
        data=(x, y),
        num_samples=NUM,
        generator=torch.Generator().manual_seed(7),
        posterior_predictive=True,
    )
    return request.param, post, idata


def _noise(engine, post, idata):
    if engine == "map":
        return post.point["noise_scale"].reshape(1).expand(1)
    if engine == "svi":
        return torch.from_numpy(idata.posterior["noise_scale"].values[0])
    return torch.full((NUM,), 0.3, dtype=torch.float64)


def _means(post, idata):
    r"""Network outputs per draw by hand: W_0 x + b_0 + W_1 |x| x + b_1, W = unvec(Q a) + B."""
    x = torch.from_numpy(idata.constant_data["x"].values)
    out = 0
    for name, layer, inputs in zip(LAYERS, post.model.network.branches, (x, _lift(x)), strict=True):
        w_eq = layer.basis.weight(post.point[f"{name}.coeffs"])
        residual = torch.from_numpy(idata.posterior[f"{name}.residual"].values[0])
        bias = torch.from_numpy(idata.posterior[f"{name}.bias_residual"].values[0])
        out = out + inputs[None] @ (w_eq + residual).transpose(-1, -2) + bias[:, None, :]
    return out


def test_groups_variables_dims_and_coords(fitted):
    engine, _, idata = fitted
    num = 1 if engine == "map" else NUM
    assert set(idata.groups()) == {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "constant_data",
    }
    p = idata.posterior
    assert set(p.data_vars) == EXPECTED_VARS[engine]
    assert (p.sizes["chain"], p.sizes["draw"]) == (1, num)
    assert p["equivariance_level"].dims == ("chain", "draw", "layer")
    assert list(p.coords["layer"].values) == LAYERS
    for name in LAYERS:
        assert p[f"{name}.residual"].dims == (
            "chain",
            "draw",
            f"{name}.residual_out",
            f"{name}.residual_in",
        )
        assert p[f"{name}.bias_residual"].dims == ("chain", "draw", f"{name}.bias_residual_out")
        attrs = p[f"{name}.residual"].attrs
        assert attrs == {"kind": "relaxation", "family": "rpp", "role": "residual", "layer": name}
    hyper = {"map": "residual_scale", "svi": "noise_scale"}.get(engine)
    if hyper is not None:
        assert p[hyper].dims == ("chain", "draw")
        assert p[hyper].attrs["kind"] == {"map": "hyperparameter", "svi": "likelihood"}[engine]
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "obs_id")
    assert idata.log_likelihood["obs"].shape == (1, num, 12)
    assert idata.observed_data["obs"].dims == ("obs_id", "obs_dim_0")
    assert idata.posterior_predictive["obs"].shape == (1, num, 12, 2)
    assert list(idata.observed_data.coords["obs_id"].values) == list(range(12))
    assert idata.attrs["engine"] == engine
    assert idata.attrs["num_draws"] == num


def test_draws_are_the_posterior_samples(fitted):
    engine, post, idata = fitted
    x, y = _data()
    num = 1 if engine == "map" else NUM
    expected = post.sample(num, torch.Generator().manual_seed(7))
    for name, value in expected.items():
        assert torch.equal(torch.from_numpy(idata.posterior[name].values[0]), value), name
    assert torch.equal(torch.from_numpy(idata.observed_data["obs"].values), y)
    assert torch.equal(torch.from_numpy(idata.constant_data["x"].values), x)


def test_equivariance_levels_match_the_rpp_formula(fitted):
    _, post, idata = fitted
    for j, name in enumerate(LAYERS):
        layer = post.model.network.branches[j]
        w_eq = layer.basis.weight(post.point[f"{name}.coeffs"]).detach()
        residual = torch.from_numpy(idata.posterior[f"{name}.residual"].values[0])
        bias = torch.from_numpy(idata.posterior[f"{name}.bias_residual"].values[0])
        # SO(2) has no invariant vector in V: the equivariant bias is zero
        num = torch.cat([residual.flatten(1), bias], dim=1).norm(dim=1)
        expected = num / w_eq.norm()
        got = torch.from_numpy(idata.posterior["equivariance_level"].values[0, :, j])
        assert torch.allclose(got, expected, rtol=1e-12, atol=0), name


def test_pointwise_log_likelihood_is_the_gaussian_density(fitted):
    engine, post, idata = fitted
    _, y = _data()
    mean = _means(post, idata)
    sigma = _noise(engine, post, idata)[:, None, None]
    by_hand = (-0.5 * ((y - mean) / sigma) ** 2 - sigma.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    got = torch.from_numpy(idata.log_likelihood["obs"].values[0])
    assert torch.allclose(got, by_hand, rtol=1e-10, atol=1e-10)


def test_posterior_predictive_is_the_likelihood_around_each_draw(fitted):
    engine, post, idata = fitted
    mean = _means(post, idata)
    sigma = _noise(engine, post, idata)[:, None, None]
    z = (torch.from_numpy(idata.posterior_predictive["obs"].values[0]) - mean) / sigma
    # n standard normals: mean within 5/sqrt(n), sd within 5 sqrt(2/n) (CLT, two-sided 5 sigma)
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.std()) - 1) < 5 * math.sqrt(2 / n) + 1 / n


def test_az_summary_runs(fitted):
    engine, _, idata = fitted
    if engine == "map":
        # one draw: numpy warns about the sample sd, ArviZ still reports the point as mean/HDI
        with pytest.warns(RuntimeWarning):
            table = az.summary(idata, var_names=["equivariance_level"], kind="stats")
        levels = idata.posterior["equivariance_level"].values[0, 0]
        assert np.allclose(table["mean"].to_numpy(), levels, atol=1e-3)
        return
    table = az.summary(idata, round_to="none")
    levels = idata.posterior["equivariance_level"].values[0]
    rows = [f"equivariance_level[{name}]" for name in LAYERS]
    assert np.allclose(table.loc[rows, "mean"].to_numpy(), levels.mean(0), rtol=1e-12)
    assert np.allclose(table.loc[rows, "sd"].to_numpy(), levels.std(0, ddof=1), rtol=1e-12)


def test_netcdf_round_trip_keeps_every_value(fitted, tmp_path):
    engine, _, idata = fitted
    path = tmp_path / f"{engine}.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        a, b = idata[group], back[group]
        assert set(a.data_vars) == set(b.data_vars)
        for name, var in a.data_vars.items():
            assert b[name].dims == var.dims
            assert np.array_equal(b[name].values, var.values), (group, name)
            assert b[name].attrs == var.attrs
        for dim in a.dims:
            assert np.array_equal(a.coords[dim].values, b.coords[dim].values)
    assert back.attrs["engine"] == engine
    back.close()


def test_posterior_method_delegates_to_to_arviz(fitted):
    _, post, idata = fitted
    again = post.to_arviz(data=_data(), num_samples=NUM, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(
        again.posterior["equivariance_level"].values, idata.posterior["equivariance_level"].values
    )
    assert np.array_equal(again.log_likelihood["obs"].values, idata.log_likelihood["obs"].values)


def test_export_leaves_the_network_the_rng_and_the_param_store_alone(fitted):
    import pyro

    _, post, _ = fitted
    before = {k: v.detach().clone() for k, v in post.model.network.state_dict().items()}
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    store_before = set(pyro.get_param_store().keys())
    to_arviz(post, data=_data(), num_samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected_next)
    assert set(pyro.get_param_store().keys()) == store_before
    for k, v in post.model.network.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_weights_are_exported_only_on_request():
    torch.manual_seed(0)
    x, y = _data()
    net = RPPLinear(V(SO2()), V(SO2()), bias=False).double()
    model = SymmetryModel(
        net, Gaussian(0.3), priors={"*": ResidualPrior(0.5)}, weight_prior=dist.Normal(0.0, 10.0)
    )
    post = MAP(num_epochs=3, optimizer="lbfgs", lr=1.0, progress=False).fit(model, (x, y))
    plain = to_arviz(post)
    assert set(plain.posterior.data_vars) == {"residual", "equivariance_level"}
    assert list(plain.posterior.coords["layer"].values) == ["RPPLinear"]
    full = to_arviz(post, weights=True)
    assert set(full.posterior.data_vars) == {"coeffs", "residual", "equivariance_level"}
    assert full.posterior["coeffs"].dims == ("chain", "draw", "coeffs_dim_0")
    assert full.posterior["coeffs"].attrs == {"kind": "weight"}
    assert np.array_equal(
        full.posterior["coeffs"].values[0, 0], post.sample(1)["coeffs"][0].numpy()
    )
    assert set(plain.groups()) == {"posterior"}


def test_per_generator_sites_share_the_generator_dim():
    torch.manual_seed(0)
    gens = image_generators(4, 4, "translation")
    net = nn.Sequential(PowerLayer(gens, 1, 1, 2), PowerLayer(gens, 1, 2, 1))
    x = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, 1, dims=-1)
    post = MAP(num_epochs=2, lr=0.01, progress=False).fit(SymmetryModel(net, Gaussian(0.5)), (x, y))
    idata = to_arviz(post, data=(x, y))
    for name in ("0.magnitudes", "1.magnitudes"):
        assert idata.posterior[name].dims == ("chain", "draw", "generator")
        assert idata.posterior[name].attrs["role"] == "magnitude"
    assert list(idata.posterior.coords["generator"].values) == [0, 1]
    assert idata.observed_data["obs"].dims == ("obs_id", "obs_dim_0", "obs_dim_1", "obs_dim_2")


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        pytest.param((3, 3), ["generator", "generator"], id="equal-lengths-share"),
        pytest.param((3, 2), ["a_generator", "b_generator"], id="unequal-lengths-own"),
    ],
)
def test_generator_dim_naming_rule(lengths, expected):
    sites = [
        SiteInfo("a", (lengths[0],)),
        SiteInfo("b", (lengths[1],)),
        SiteInfo("w", (4, 3, 2)),
        SiteInfo("s", ()),
    ]
    dims, coords = site_dims(sites, {"a": "omega_prime", "b": "width", "w": "residual_network"})
    assert [dims["a"][0], dims["b"][0]] == expected
    assert dims["w"] == ["w_out", "w_in", "w_dim_2"]
    assert "s" not in dims
    assert coords == ({"generator": [0, 1, 2]} if expected[0] == "generator" else {})


def test_bad_arguments_raise_clear_errors():
    post = _fit("laplace")
    x, y = _data()
    with pytest.raises(TypeError, match="posterior"):
        to_arviz(object())
    with pytest.raises(ValueError, match="num_samples"):
        to_arviz(post, num_samples=0)
    with pytest.raises(ValueError, match="data"):
        to_arviz(post, data=(x, y[:3]))
    with pytest.raises(TypeError, match="data"):
        to_arviz(post, data=x)
    with pytest.raises(ValueError, match="posterior_predictive"):
        to_arviz(post, posterior_predictive=True)
    with pytest.raises(TypeError, match="generator"):
        to_arviz(post, generator=0)
    detached = Posterior.from_state(post.state())
    with pytest.raises(ValueError, match="attach"):
        to_arviz(detached)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_export_matches_cpu():
    post = _fit("laplace")
    data = _data()
    cpu = to_arviz(post, data=data, num_samples=10, generator=torch.Generator().manual_seed(0))
    post.model.to("cuda")
    gpu = to_arviz(
        post.to("cuda"), data=data, num_samples=10, generator=torch.Generator().manual_seed(0)
    )
    for group, name in [
        ("posterior", "branches.0.residual"),
        ("posterior", "equivariance_level"),
        ("log_likelihood", "obs"),
    ]:
        np.testing.assert_allclose(gpu[group][name].values, cpu[group][name].values, rtol=1e-10)


def test_a_network_without_relaxed_layers_exports_without_levels():
    from symprior.inference import MAP
    from symprior.models import Gaussian, SymmetryModel

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    model = SymmetryModel(net, Gaussian(0.3), weight_prior=dist.Normal(0.0, 1.0))
    x = torch.randn(8, 2, dtype=torch.float64)
    y = x[:, :1] ** 2
    post = MAP(num_epochs=3, progress=False).fit(model, (x, y))
    idata = to_arviz(post, data=(x, y), weights=True)
    assert "equivariance_level" not in idata.posterior
    assert "0.weight" in idata.posterior
    assert idata.log_likelihood["obs"].shape[-1] == 8
