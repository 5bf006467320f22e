r"""summary, the plots and posterior_equivariance_errors on hand-built posteriors (no fitting)."""

import arviz as az
import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from symprior.diagnostics import (
    equivariance_error,
    equivariance_error_pointwise,
    plot_equivariance_errors,
    plot_equivariance_levels,
    plot_relaxation_posteriors,
    posterior_equivariance_errors,
    summary,
    to_arviz,
)
from symprior.groups import SO2, V
from symprior.inference import DeltaBlock, DiagonalBlock, Posterior, SiteInfo
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPLinear

LAYERS = ["0", "1"]
RELAXATIONS = ["0.residual", "0.bias_residual", "1.residual", "1.bias_residual"]


def _posterior(scale=0.05, seed=0):
    r"""A posterior over the residuals of two RPP layers: N(loc, scale^2) or a point (scale 0)."""
    torch.manual_seed(seed)
    net = nn.Sequential(RPPLinear(V(SO2()), V(SO2())), RPPLinear(V(SO2()), V(SO2()))).double()
    model = SymmetryModel(net, Gaussian(0.3))
    sites = [SiteInfo(n, tuple(p.shape)) for n, (p, _) in model.relaxation_sites.items()]
    dim = sum(s.numel for s in sites)
    loc = 0.1 * torch.randn(
        dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    names = [s.name for s in sites]
    if scale == 0:
        block = DeltaBlock(names, loc)
        engine = "map"
    else:
        block = DiagonalBlock(names, loc, torch.full((dim,), scale, dtype=torch.float64))
        engine = "svi"
    point = {n: p.detach().clone() for n, p in net.named_parameters() if n in model.point_names}
    return Posterior(sites, [block], point, engine=engine, model=model)


@pytest.fixture(scope="module")
def relaxed():
    post = _posterior()
    idata = to_arviz(post, num_samples=200, generator=torch.Generator().manual_seed(3))
    return post, idata


# ------------------------------------------------------------------------------ summary
def test_summary_matches_the_draws(relaxed):
    post, idata = relaxed
    table = summary(post, num_samples=200, generator=torch.Generator().manual_seed(3))
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    levels = idata.posterior["equivariance_level"].values[0]
    rows = [f"equivariance_level[{n}]" for n in LAYERS]
    assert np.allclose(table.loc[rows, "mean"], levels.mean(0), rtol=1e-12)
    assert np.allclose(table.loc[rows, "sd"], levels.std(0, ddof=1), rtol=1e-12)
    hdi = az.hdi(idata, hdi_prob=0.94, var_names=["equivariance_level"])["equivariance_level"]
    assert np.allclose(table.loc[rows, "hdi_3%"], hdi.sel(hdi="lower").values, rtol=1e-12)
    assert np.allclose(table.loc[rows, "hdi_97%"], hdi.sel(hdi="higher").values, rtol=1e-12)
    residual = idata.posterior["0.residual"].values[0]
    assert table.loc["0.residual[1, 0]", "mean"] == pytest.approx(
        residual[:, 1, 0].mean(), rel=1e-12
    )
    assert len(table) == 2 + 4 + 2 + 4 + 2


def test_summary_of_levels_only_from_inference_data(relaxed):
    _, idata = relaxed
    table = summary(idata, relaxations=False, hdi_prob=0.5)
    assert list(table.index) == [f"equivariance_level[{n}]" for n in LAYERS]
    assert list(table.columns) == ["mean", "sd", "hdi_25%", "hdi_75%"]


def test_summary_of_a_point_posterior_has_zero_spread():
    post = _posterior(scale=0)
    table = summary(post, hdi_prob=0.9)
    levels = to_arviz(post).posterior["equivariance_level"].values[0, 0]
    rows = [f"equivariance_level[{n}]" for n in LAYERS]
    assert list(table.columns) == ["mean", "sd", "hdi_5%", "hdi_95%"]
    assert np.array_equal(table.loc[rows, "mean"].to_numpy(), levels)
    assert np.array_equal(table.loc[rows, "hdi_5%"].to_numpy(), levels)
    assert np.array_equal(table.loc[rows, "hdi_95%"].to_numpy(), levels)
    assert (table["sd"] == 0).all()


@pytest.mark.parametrize(
    ("shift", "converged"), [(0.0, True), (3.0, False)], ids=["mixed", "stuck"]
)
def test_summary_of_several_chains_has_ess_and_rhat(shift, converged):
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 300, 2)) + shift * np.arange(4)[:, None, None]
    idata = az.from_dict(
        posterior={"equivariance_level": np.abs(draws)},
        dims={"equivariance_level": ["layer"]},
        coords={"layer": ["a", "b"]},
    )
    idata.posterior["equivariance_level"].attrs["kind"] = "equivariance_level"
    table = summary(idata)
    for column in ("ess_bulk", "ess_tail", "r_hat", "mcse_mean"):
        assert column in table.columns
    assert np.allclose(table["mean"], np.abs(draws).mean((0, 1)), rtol=1e-12)
    rhat = table["r_hat"].to_numpy()
    assert (rhat < 1.02).all() if converged else (rhat > 1.5).all()


def test_summary_rejects_bad_arguments(relaxed):
    _, idata = relaxed
    with pytest.raises(ValueError, match="hdi_prob"):
        summary(idata, hdi_prob=1.5)
    with pytest.raises(ValueError, match="var_names"):
        summary(idata, var_names=["nope"])
    with pytest.raises(TypeError, match="posterior_or_idata"):
        summary({"a": 1})


# -------------------------------------------------------------------------------- plots
def _png_shape(path):
    return matplotlib.image.imread(str(path)).shape


def test_forest_plot_has_one_row_per_layer(relaxed, tmp_path):
    post, idata = relaxed
    path = tmp_path / "levels.png"
    fig = plot_equivariance_levels(idata, path, hdi_prob=0.9)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == LAYERS
    assert ax.get_xlabel() == "equivariance level"
    levels = idata.posterior["equivariance_level"].values[0]
    (means,) = [line for line in ax.lines if line.get_marker() == "o"]
    assert np.allclose(means.get_xdata(), levels.mean(0), rtol=1e-12)
    assert np.array_equal(means.get_ydata(), [0, 1])
    # the HDI segments contain 90% of the draws of their row
    (segments,) = ax.collections
    for row, seg in enumerate(segments.get_segments()):
        lo, hi = sorted(seg[:, 0])
        inside = ((levels[:, row] >= lo) & (levels[:, row] <= hi)).mean()
        assert 0.9 <= inside <= 0.9 + 1 / len(levels)
    width, height = fig.get_size_inches() * 100
    assert _png_shape(path)[:2] == (round(height), round(width))
    # the same figure from the posterior (same draws)
    again = plot_equivariance_levels(
        post, num_samples=200, generator=torch.Generator().manual_seed(3)
    )
    (means_again,) = [line for line in again.axes[0].lines if line.get_marker() == "o"]
    assert np.array_equal(means_again.get_xdata(), means.get_xdata())


def test_relaxation_posteriors_one_panel_per_site(relaxed, tmp_path):
    _, idata = relaxed
    fig = plot_relaxation_posteriors(idata, tmp_path / "relax.png", bins=10)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == RELAXATIONS
    assert all(ax.get_ylabel() == "density" for ax in visible)
    residual_ax = visible[0]
    legend = [t.get_text() for t in residual_ax.get_legend().get_texts()]
    assert legend == ["0, 0", "0, 1", "1, 0", "1, 1"]
    assert (tmp_path / "relax.png").stat().st_size > 0


def test_large_sites_are_summarised_by_their_norm(relaxed):
    _, idata = relaxed
    fig = plot_relaxation_posteriors(idata, var_names=["1.residual"], bins=12, max_components=2)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_xlabel() == "‖1.residual‖₂"
    norms = np.linalg.norm(idata.posterior["1.residual"].values[0].reshape(200, -1), axis=1)
    expected, _ = np.histogram(norms, bins=12, density=True)
    assert np.allclose([p.get_height() for p in ax.patches], expected, rtol=1e-12)


def test_point_posteriors_are_drawn_as_lines():
    idata = to_arviz(_posterior(scale=0))
    fig = plot_relaxation_posteriors(idata, var_names=["0.bias_residual"])
    (ax,) = [a for a in fig.axes if a.get_visible()]
    xs = sorted(line.get_xdata()[0] for line in ax.lines)
    assert np.allclose(xs, sorted(idata.posterior["0.bias_residual"].values[0, 0]), rtol=0)


def test_error_plot_has_one_box_per_model(tmp_path):
    gen = torch.Generator().manual_seed(0)
    relaxed = 0.1 + 0.02 * torch.rand(30, generator=gen, dtype=torch.float64)
    free = 0.5 + 0.1 * torch.rand(30, generator=gen, dtype=torch.float64)
    errors = {"strict": torch.tensor(0.0), "relaxed": relaxed, "unconstrained": free}
    fig = plot_equivariance_errors(errors, tmp_path / "errors.png")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(errors)
    assert ax.get_ylabel() == "E"
    dots = [line for line in ax.lines if line.get_marker() == "."]
    assert [len(d.get_ydata()) for d in dots] == [1, 30, 30]
    assert np.allclose(dots[1].get_ydata(), relaxed.numpy())
    both = {name: {"E": v, "E'": 2 * v} for name, v in errors.items()}
    fig = plot_equivariance_errors(both)
    assert [ax.get_ylabel() for ax in fig.axes] == ["E", "E'"]
    with pytest.raises(ValueError, match="errors"):
        plot_equivariance_errors({"bad": torch.tensor([float("nan")])})
    with pytest.raises(TypeError, match="errors"):
        plot_equivariance_errors({"a": torch.zeros(2), "b": {"E": torch.zeros(2)}})


# ------------------------------------------------------------------- posterior E and E'
def test_posterior_errors_score_each_draw():
    post = _posterior()
    so2 = SO2()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = posterior_equivariance_errors(
        post,
        x,
        so2,
        V(so2),
        V(so2),
        num_samples=6,
        num_elements=16,
        generator=torch.Generator().manual_seed(9),
    )
    gen = torch.Generator().manual_seed(9)
    elements = so2.sample(16, gen)
    draws = post.sample(6, gen)
    for i in range(6):
        values = dict(post.point)
        values.update({k: v[i] for k, v in draws.items()})

        def f(z, values=values):
            return post.model.run(values, z)

        e = equivariance_error(f, x, so2, V(so2), V(so2), elements=elements)
        e_point = equivariance_error_pointwise(f, x, so2, V(so2), V(so2), elements=elements)
        assert float(out["E"][i]) == pytest.approx(float(e), rel=1e-12)
        assert float(out["E'"][i]) == pytest.approx(float(e_point), rel=1e-12)
    assert bool((out["E"] > 0).all())


def test_posterior_errors_vanish_at_the_strict_point():
    post = _posterior(scale=0)
    post.blocks[0].loc.zero_()
    so2 = SO2()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = posterior_equivariance_errors(
        post, x, so2, V(so2), V(so2), generator=torch.Generator().manual_seed(0)
    )
    assert out["E"].shape == (1,)
    assert float(out["E"][0]) <= 1e-10
    assert float(out["E'"][0]) <= 1e-10
