"""The README's Python tour runs as written, and what its comments claim holds.

The block is read from ``README.md`` itself, so an API change that breaks the tour fails here.
"""

import math
import pathlib
import warnings

import pytest
import torch

import symprior
from symprior.inference._curvature import CurvatureWarning

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _tour_source():
    text = README.read_text(encoding="utf-8")
    _, _, after = text.partition("## A tour of the Python API")
    _, _, block = after.partition("```python\n")
    source, fence, _ = block.partition("```")
    assert source and fence, "README.md has no Python block after its tour heading"
    return source


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """The namespace the tour leaves behind, run in a fresh directory."""
    directory = tmp_path_factory.mktemp("tour")
    namespace = {"__name__": "readme_tour"}
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        patch.chdir(directory)
        warnings.simplefilter("always")
        torch.manual_seed(0)
        exec(compile(_tour_source(), str(README), "exec"), namespace)
    namespace["directory"] = directory
    namespace["warnings"] = caught
    return namespace


def test_the_only_warning_is_the_one_the_tour_announces(tour):
    # 40 L-BFGS epochs stop short of a mode: the full Hessian over the residuals still has
    # negative eigenvalues, and the tour's comment says the user will be told so.
    caught = [w for w in tour["warnings"] if "ArviZ is undergoing" not in str(w.message)]
    assert [w.category for w in caught] == [CurvatureWarning], [str(w.message) for w in caught]


def test_basis_is_spanned_by_the_dot_and_the_cross_product(tour):
    from symprior.groups import SO2, Scalar, V, equivariant_basis

    G = SO2()
    basis = equivariant_basis(V(G) * V(G), Scalar(G)).to(torch.float64)
    assert basis.shape == (4, 2)
    # x.y = x1 y1 + x2 y2 and x × y = x1 y2 - x2 y1, as vectors on the basis of V ⊗ V.
    closed_form = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
    projection = basis @ torch.linalg.pinv(basis)
    torch.testing.assert_close(projection @ closed_form.T, closed_form.T, atol=1e-12, rtol=0)


def _commented_target(x):
    """The tour's comment: y = sin|x|^2 + 0.3 x_1 (+ noise), written out independently."""
    x = x.double()
    return torch.sin((x**2).sum(-1, keepdim=True)) + 0.3 * x[:, :1]


def test_the_data_follow_the_commented_formula(tour):
    data = tour["data"]
    noise = data.y.double() - _commented_target(data.x)
    # 256 draws of N(0, 0.05^2): the sample sd is within 4 standard errors of 0.05.
    assert abs(noise.std().item() - 0.05) < 4 * 0.05 / math.sqrt(2 * 256)
    assert abs(noise.mean().item()) < 4 * 0.05 / math.sqrt(256)


def test_predictions_recover_the_noise_free_target(tour):
    data, post = tour["data"], tour["post"]
    clean = _commented_target(data.x)
    prediction = post.predict(data.x)
    assert prediction.shape == (256, 1)
    rmse = (prediction.double() - clean).pow(2).mean().sqrt().item()
    assert rmse < 0.05  # below the noise level: the fit is better than the data


def test_levels_evidence_and_arviz_are_what_the_comments_say(tour):
    post, idata = tour["post"], tour["idata"]
    levels = post.equivariance_levels(200)
    assert set(levels) == {"mlp.layers.0", "mlp.layers.1", "mlp.layers.2"}
    for draws in levels.values():
        assert draws.shape == (200,) and bool(torch.isfinite(draws).all())
        assert bool((draws > 0).all())  # the data break the symmetry (epsilon = 0.3)
    evidence = post.log_evidence()
    assert evidence.ndim == 0 and math.isfinite(evidence.item())
    assert {"posterior", "log_likelihood", "observed_data"} <= set(idata.groups())


def test_saved_posterior_loads_back_identically(tour):
    path = tour["directory"] / "posterior.pt"
    loaded = symprior.Posterior.load(path, tour["model"])
    x = tour["data"].x[:7]
    torch.testing.assert_close(loaded.predict(x), tour["post"].predict(x), atol=0, rtol=0)
    torch.testing.assert_close(loaded.log_evidence(), tour["post"].log_evidence(), atol=0, rtol=0)
