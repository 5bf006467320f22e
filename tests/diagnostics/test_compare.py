r"""compare: the true symmetry hypothesis ranks first, by Laplace evidence and by PSIS-LOO.

Inputs are 4 copies of the SO(2) vector rep, outputs one copy. The invariant target is an
SO(2)-equivariant linear map (sum_k a_k x_k + b_k J x_k); the breaking target adds
diag(1, -1) x_1, which no equivariant map can fit. Hypotheses: RPP with the residual pinned near
zero by a tiny ResidualPrior scale ("strict") or free (scale 1, "relaxed": 18 more parameters
than the 16 x 2 observations can pin down).
"""

import math
import warnings

import arviz as az
import numpy as np
import pytest
import torch

from symprior.diagnostics import compare, to_arviz
from symprior.diagnostics._compare import COMPARE_COLUMNS
from symprior.groups import SO2, V
from symprior.inference import DeltaBlock, Posterior
from symprior.inference._laplace import Laplace
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPLinear
from symprior.priors import ResidualPrior

J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
COEFFS = torch.tensor([[1.0, 0.5], [-0.7, 0.3], [0.4, -1.2], [0.9, 0.8]], dtype=torch.float64)
HYPOTHESES = {"strict": 1e-3, "relaxed": 1.0}
NUM = 200


def _data(breaking, n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    xs = x.reshape(n, 4, 2)
    y = (COEFFS[:, 0, None] * xs + COEFFS[:, 1, None] * (xs @ J.T)).sum(1)
    if breaking:
        y = y + xs[:, 0] * torch.tensor([1.0, -1.0], dtype=torch.float64)
    return x, y + 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def _fit(scale, data):
    torch.manual_seed(0)
    net = RPPLinear(4 * V(SO2()), V(SO2())).double()
    model = SymmetryModel(net, Gaussian(0.1), priors={"*": ResidualPrior(scale)})
    return Laplace(num_epochs=5, optimizer="lbfgs", lr=1.0, progress=False).fit(model, data)


@pytest.fixture(scope="module", params=[False, True], ids=["invariant-truth", "breaking-truth"])
def case(request):
    data = _data(request.param)
    posts = {name: _fit(scale, data) for name, scale in HYPOTHESES.items()}
    table = compare(posts, data, num_samples=NUM, generator=torch.Generator().manual_seed(0))
    truth = "relaxed" if request.param else "strict"
    return truth, posts, data, table


def test_the_true_hypothesis_ranks_first_by_evidence_and_by_loo(case):
    truth, _, _, table = case
    other = next(h for h in HYPOTHESES if h != truth)
    assert table.attrs["sorted_by"] == "log_evidence"
    assert list(table.index) == [truth, other]
    assert list(table["rank"]) == [0, 1]
    assert table.loc[truth, "log_evidence"] > table.loc[other, "log_evidence"] + 10
    assert table.loc[truth, "evidence_weight"] > 0.999
    # LOO agrees, by more than twice the standard error of the paired difference
    assert table.loc[truth, "elpd_loo"] > table.loc[other, "elpd_loo"]
    assert table.loc[other, "elpd_diff"] > 2 * table.loc[other, "dse"]
    assert table.loc[truth, "elpd_diff"] == 0


def test_columns_equal_their_references(case):
    _, posts, data, table = case
    assert list(table.columns) == list(COMPARE_COLUMNS)
    evidence = {h: float(p.log_evidence()) for h, p in posts.items()}
    for h in HYPOTHESES:
        assert table.loc[h, "log_evidence"] == evidence[h]
        assert table.loc[h, "engine"] == "laplace"
    best = max(evidence.values())
    weights = {h: math.exp(e - best) for h, e in evidence.items()}
    for h in HYPOTHESES:
        assert table.loc[h, "evidence_weight"] == pytest.approx(
            weights[h] / sum(weights.values()), rel=1e-12
        )
        assert table.loc[h, "d_log_evidence"] == pytest.approx(best - evidence[h], rel=1e-12)
    # PSIS-LOO from ArviZ on the same draws (the generator is used by each hypothesis in turn)
    gen = torch.Generator().manual_seed(0)
    idatas = {h: to_arviz(p, data=data, num_samples=NUM, generator=gen) for h, p in posts.items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        # arviz 0.23's compare sorts in place, which pandas >= 3.1 deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword")
        loos = {
            h: az.loo(idata, var_name="obs", pointwise=True, reff=1.0)
            for h, idata in idatas.items()
        }
        reference = az.compare(idatas, ic="loo", var_name="obs")
    for h, loo in loos.items():
        assert table.loc[h, "elpd_loo"] == pytest.approx(float(loo.elpd_loo), rel=1e-12)
        assert table.loc[h, "se"] == pytest.approx(float(loo.se), rel=1e-12)
        assert table.loc[h, "p_loo"] == pytest.approx(float(loo.p_loo), rel=1e-12)
        assert table.loc[h, "pareto_k_max"] == pytest.approx(float(np.max(loo.pareto_k)))
        assert table.loc[h, "loo_warning"] == bool(loo.warning)
        assert table.loc[h, "elpd_diff"] == pytest.approx(
            float(reference.loc[h, "elpd_diff"]), rel=1e-10, abs=1e-10
        )
        assert table.loc[h, "dse"] == pytest.approx(float(reference.loc[h, "dse"]), abs=1e-10)


def test_without_evidence_rows_are_sorted_by_loo_and_points_have_none(case):
    truth, posts, data, _ = case
    # the same Gaussian posteriors as engines without evidence, plus a point posterior
    as_svi = {
        h: Posterior(p.sites, p.blocks, p.point, engine="svi", model=p.model)
        for h, p in posts.items()
    }
    relaxed = posts["relaxed"]
    point = Posterior(
        relaxed.sites,
        [DeltaBlock(relaxed.site_names, relaxed.loc())],
        relaxed.point,
        engine="map",
        model=relaxed.model,
    )
    table = compare(
        {"point": point, **as_svi},
        data,
        num_samples=NUM,
        generator=torch.Generator().manual_seed(0),
    )
    assert table.attrs["sorted_by"] == "elpd_loo"
    assert list(table.index) == [truth, next(h for h in HYPOTHESES if h != truth), "point"]
    assert table["log_evidence"].isna().all()
    assert table["evidence_weight"].isna().all()
    assert table.loc[["point"], ["elpd_loo", "se", "p_loo", "elpd_diff"]].isna().all(axis=None)
    assert list(table["rank"]) == [0, 1, 2]


def test_compare_rejects_bad_arguments(case):
    _, posts, (x, y), _ = case
    with pytest.raises(TypeError, match="posteriors"):
        compare({}, (x, y))
    with pytest.raises(TypeError, match="posteriors"):
        compare({"a": object()}, (x, y))
    with pytest.raises(ValueError, match="data"):
        compare(posts, (x, y[:3]))
    detached = Posterior.from_state(posts["strict"].state())
    with pytest.raises(ValueError, match="attach"):
        compare({"strict": detached}, (x, y))


def test_a_model_without_relaxed_layers_exports_its_log_likelihood_and_compares(case):
    """A network with no relaxation parameters (the strict hypothesis of an EMLP, a plain MLP)
    has nothing in the posterior group unless its weights are asked for: its InferenceData has
    the log-likelihood alone, the same draws as with weights, and compare gives it a LOO row."""
    import pyro.distributions as dist
    from torch import nn

    _, posts, data, _ = case
    torch.manual_seed(0)
    model = SymmetryModel(
        nn.Linear(8, 2).double(), Gaussian(0.1), weight_prior=dist.Normal(0.0, 1.0)
    )
    post = Laplace("all", num_epochs=5, optimizer="lbfgs", lr=1.0, progress=False).fit(model, data)
    bare = to_arviz(post, data=data, num_samples=50, generator=torch.Generator().manual_seed(1))
    assert "posterior" not in bare.groups() and "log_likelihood" in bare.groups()
    full = to_arviz(
        post, data=data, num_samples=50, generator=torch.Generator().manual_seed(1), weights=True
    )
    np.testing.assert_allclose(bare.log_likelihood["obs"], full.log_likelihood["obs"], rtol=1e-12)
    table = compare(
        {"linear": post, "relaxed": posts["relaxed"]},
        data,
        num_samples=50,
        generator=torch.Generator().manual_seed(0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = az.loo(bare, var_name="obs", reff=1.0)
    # compare draws its own samples (seed 0), so the LOO value is checked finite and close
    assert math.isfinite(table.loc["linear", "elpd_loo"])
    assert table.loc["linear", "elpd_loo"] == pytest.approx(float(expected.elpd_loo), rel=0.05)
