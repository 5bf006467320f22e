import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from symprior.groups import (
    O2,
    O3,
    SL2,
    SO2,
    SO3,
    Dihedral,
    Permutation,
    Scalar,
    Scaling,
    V,
    equivariant_basis,
)
from symprior.nn import equivariance_levels, relaxation_parameters, set_strict
from symprior.nn.rpp import (
    RPPMLP,
    EquivariantLinear,
    GatedNonlinearity,
    RPPLinear,
    hidden_rep,
)
from symprior.testing import assert_equivariant, equivariance_errors
from tests.conftest import ALL_GROUPS, DEVICES, GROUP_IDS

#: Pairs (rep_in, rep_out) for the linear layers, built for any group.
LINEAR_REPS = {
    "2V+S->V+2S": lambda G: (2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G)),
    "V*V+V->V+S": lambda G: (V(G) * V(G) + V(G), V(G) + Scalar(G)),
}

#: Groups of the MLP tests (vector inputs); the linear tests run over every shipped group.
MLP_GROUPS = [SO2(), O2(), SO3(), O3(), Permutation(4), Dihedral(4)]
MLP_IDS = [repr(g) for g in MLP_GROUPS]

#: A subset for the more expensive value tests, with compact, finite and non-compact groups.
VALUE_GROUPS = [SO2(), SO3(), O3(), Permutation(4), Dihedral(4), SL2(), Scaling(2)]
VALUE_IDS = [repr(g) for g in VALUE_GROUPS]


def _mlp(G, depth=2, seed=0):
    torch.manual_seed(seed)
    rep_in = V(G) * V(G) + V(G)
    rep_out = V(G) + Scalar(G)
    net = RPPMLP(rep_in, rep_out, hidden=2 * V(G) + 2 * Scalar(G), depth=depth)
    return net, rep_in, rep_out


def _randomise(module, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


# --------------------------------------------------------------------------- strict equivariance
#: Every shipped group with the first pair; tensor-product inputs for a compact, a finite and a
#: non-compact group.
LINEAR_CASES = [(G, "2V+S->V+2S") for G in ALL_GROUPS]
LINEAR_CASES += [(G, "V*V+V->V+S") for G in (SO3(), Permutation(4), SL2())]


@pytest.mark.parametrize(
    ("G", "reps"), LINEAR_CASES, ids=[f"{G!r}-{reps}" for G, reps in LINEAR_CASES]
)
def test_equivariant_linear_is_equivariant(G, reps):
    rep_in, rep_out = LINEAR_REPS[reps](G)
    torch.manual_seed(0)
    layer = EquivariantLinear(rep_in, rep_out)
    x = torch.randn(6, rep_in.size, generator=torch.Generator().manual_seed(1))
    assert layer.coeffs.numel() > 0
    assert_equivariant(layer, G, x, rep_in=rep_in, rep_out=rep_out)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=GROUP_IDS)
def test_strict_rpp_linear_is_equivariant(G):
    rep_in, rep_out = LINEAR_REPS["2V+S->V+2S"](G)
    torch.manual_seed(0)
    layer = RPPLinear(rep_in, rep_out, residual_scale=1.0)
    x = torch.randn(6, rep_in.size, generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(layer, G, x, rep_in=rep_in, rep_out=rep_out, dtypes=(torch.float64,))
    layer.set_strict()
    assert_equivariant(layer, G, x, rep_in=rep_in, rep_out=rep_out)


MLP_CASES = [(G, "rep") for G in MLP_GROUPS] + [(SO2(), "int"), (O3(), "int")]


@pytest.mark.parametrize(("G", "hidden"), MLP_CASES, ids=[f"{G!r}-{h}" for G, h in MLP_CASES])
def test_strict_rpp_mlp_is_equivariant(G, hidden):
    torch.manual_seed(0)
    rep_in, rep_out = V(G) * V(G) + V(G), V(G) + Scalar(G)
    h = 2 * V(G) + 2 * Scalar(G) if hidden == "rep" else 4 * G.n + 3
    net = RPPMLP(rep_in, rep_out, hidden=h, depth=2, residual_scale=1.0)
    x = torch.randn(6, rep_in.size, generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(net, G, x, rep_in=rep_in, rep_out=rep_out, dtypes=(torch.float64,))
    assert set_strict(net) is net
    assert_equivariant(net, G, x, rep_in=rep_in, rep_out=rep_out)


@pytest.mark.parametrize("fn", [set_strict, equivariance_levels, relaxation_parameters])
def test_registry_functions_reject_what_is_not_a_module(fn):
    with pytest.raises(TypeError, match=r"net must be a torch\.nn\.Module, got str"):
        result = fn("net")
        list(result)  # relaxation_parameters is a generator: checked when iterated


def test_casting_to_float32_and_back_keeps_the_float64_basis():
    G = SO3()
    net, rep_in, rep_out = _mlp(G)
    set_strict(net)
    net = net.to(torch.float32).to(torch.float64)
    x = torch.randn(5, rep_in.size, generator=torch.Generator().manual_seed(0))
    assert_equivariant(net, G, x, rep_in=rep_in, rep_out=rep_out, dtypes=(torch.float64,))


# ------------------------------------------------------------------------ references for values
@pytest.mark.parametrize("G", VALUE_GROUPS, ids=VALUE_IDS)
def test_block_weight_matches_dense_basis_and_naive_loop(G):
    rep_in, rep_out = 2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G)
    torch.manual_seed(0)
    layer = EquivariantLinear(rep_in, rep_out).double()
    _randomise(layer, seed=1)
    q = equivariant_basis(rep_in, rep_out)
    w_ref = (q @ layer.coeffs.detach()).reshape(rep_out.size, rep_in.size)
    q_b = equivariant_basis(Scalar(G), rep_out)
    b_ref = q_b @ layer.bias_coeffs.detach()
    w = layer.equivariant_weight().detach()
    torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.equivariant_bias().detach(), b_ref, rtol=0, atol=1e-12)
    # The layer's W really is equivariant (independently of the basis solver).
    els = G.testing_elements()
    lhs = rep_out.rho(els) @ w
    torch.testing.assert_close(lhs, w @ rep_in.rho(els), rtol=0, atol=1e-10)
    x = torch.randn(3, rep_in.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y_ref = torch.zeros(3, rep_out.size, dtype=torch.float64)
    for n, i in itertools.product(range(3), range(rep_out.size)):
        y_ref[n, i] = b_ref[i] + sum(w_ref[i, j] * x[n, j] for j in range(rep_in.size))
    torch.testing.assert_close(layer(x).detach(), y_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("G", VALUE_GROUPS, ids=VALUE_IDS)
def test_basis_dimension_matches_a_naive_nullspace(G):
    rep_in, rep_out = 2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G)
    layer = EquivariantLinear(rep_in, rep_out)
    eye_in = torch.eye(rep_in.size, dtype=torch.float64)
    eye_out = torch.eye(rep_out.size, dtype=torch.float64)
    # vec(M W - W N) = (M kron I - I kron N^T) vec(W) for row-major vec.
    pairs = [(rep_out.drho(a), rep_in.drho(a)) for a in G.lie_algebra]
    pairs += [(rep_out.rho(h), rep_in.rho(h)) for h in G.discrete_generators]
    rows = [torch.kron(m, eye_in) - torch.kron(eye_out, n.T.contiguous()) for m, n in pairs]
    constraint = torch.cat(rows)
    rank = int(torch.linalg.matrix_rank(constraint, atol=1e-8))
    assert layer.coeffs.numel() == rep_in.size * rep_out.size - rank


@pytest.mark.parametrize("G", VALUE_GROUPS, ids=VALUE_IDS)
def test_zero_residual_equals_equivariant_linear(G):
    rep_in, rep_out = 2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G)
    torch.manual_seed(0)
    strict = EquivariantLinear(rep_in, rep_out)
    relaxed = RPPLinear(rep_in, rep_out)
    with torch.no_grad():
        relaxed.coeffs.copy_(strict.coeffs)
        relaxed.bias_coeffs.copy_(strict.bias_coeffs)
    relaxed.set_strict()
    x = torch.randn(7, rep_in.size, generator=torch.Generator().manual_seed(1))
    assert torch.equal(relaxed(x), strict(x))
    assert float(relaxed.equivariance_level().detach()) == 0.0


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_rpp_linear_equals_dense_linear(bias):
    G = SO2()
    rep_in, rep_out = 2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G)
    torch.manual_seed(0)
    layer = RPPLinear(rep_in, rep_out, bias=bias, residual_scale=0.5)
    x = torch.randn(4, rep_in.size, generator=torch.Generator().manual_seed(1))
    w = layer.equivariant_weight() + layer.residual
    b = layer.equivariant_bias() + layer.bias_residual if bias else None
    torch.testing.assert_close(layer(x), F.linear(x, w, b))
    names = ["residual", "bias_residual"] if bias else ["residual"]
    assert list(layer.relaxations()) == names
    assert [n for n, _, _ in relaxation_parameters(layer)] == names
    assert (layer.bias_coeffs is None) == (not bias)
    strict = EquivariantLinear(rep_in, rep_out, bias=bias)
    assert (strict.equivariant_bias() is None) == (not bias)


# ----------------------------------------------------------------------------- relaxation
@pytest.mark.parametrize("G", VALUE_GROUPS, ids=VALUE_IDS)
def test_error_and_level_grow_with_the_residual(G):
    rep_in, rep_out = 2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G)
    torch.manual_seed(0)
    layer = RPPLinear(rep_in, rep_out).double()
    gen = torch.Generator().manual_seed(1)
    residual = torch.randn(layer.residual.shape, generator=gen, dtype=torch.float64)
    bias_residual = torch.randn(layer.bias_residual.shape, generator=gen, dtype=torch.float64)
    x = torch.randn(5, rep_in.size, generator=gen, dtype=torch.float64)
    els = G.testing_elements()
    w_eq = layer.equivariant_weight().detach()
    b_eq = layer.equivariant_bias().detach()
    norm_eq = torch.cat([w_eq.reshape(-1), b_eq]).norm()
    errors, levels = [], []
    for t in (0.0, 0.01, 0.1, 1.0):
        with torch.no_grad():
            layer.residual.copy_(t * residual)
            layer.bias_residual.copy_(t * bias_residual)
        e, _ = equivariance_errors(layer, G, x, rep_in=rep_in, rep_out=rep_out, elements=els)
        errors.append(float(e.max()))
        level = float(layer.equivariance_level().detach())
        levels.append(level)
        expected = t * float(torch.cat([residual.reshape(-1), bias_residual]).norm() / norm_eq)
        assert level == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert errors[0] <= 1e-10
    assert levels[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(errors))
    assert all(a < b for a, b in itertools.pairwise(levels))


@pytest.mark.parametrize("G", [SO2(), Permutation(4)], ids=["SO2", "Permutation(4)"])
def test_mlp_error_grows_with_the_residuals(G):
    net, rep_in, rep_out = _mlp(G)
    net = net.double()
    gen = torch.Generator().manual_seed(1)
    residuals = {
        name: torch.randn(p.shape, generator=gen, dtype=torch.float64)
        for name, p, _ in relaxation_parameters(net)
    }
    x = torch.randn(5, rep_in.size, generator=gen, dtype=torch.float64)
    errors = []
    for t in (0.0, 0.01, 0.1, 1.0):
        with torch.no_grad():
            for name, p, _ in relaxation_parameters(net):
                p.copy_(t * residuals[name])
        e, _ = equivariance_errors(net, G, x, rep_in=rep_in, rep_out=rep_out)
        errors.append(float(e.max()))
        levels = equivariance_levels(net)
        assert list(levels) == ["layers.0", "layers.1", "layers.2"]
        assert all((float(v.detach()) == 0.0) == (t == 0.0) for v in levels.values())
    assert errors[0] <= 1e-10
    assert all(a < b for a, b in itertools.pairwise(errors))


def test_level_is_finite_without_equivariant_maps():
    G = Scaling(2)
    torch.manual_seed(0)
    layer = RPPLinear(V(G), Scalar(G), bias=False, residual_scale=1.0).double()
    assert layer.coeffs.numel() == 0
    level = layer.equivariance_level()
    eps = torch.finfo(torch.float64).eps
    expected = float(layer.residual.detach().norm()) / eps
    assert float(level.detach()) == pytest.approx(expected, rel=1e-12)
    level.backward()
    assert torch.isfinite(layer.residual.grad).all()
    layer.set_strict()
    layer.zero_grad()
    level = layer.equivariance_level()
    level.backward()
    assert float(level.detach()) == 0.0
    assert torch.equal(layer.residual.grad, torch.zeros_like(layer.residual))


def test_set_strict_and_relaxation_parameter_names():
    G = SO2()
    net, _, _ = _mlp(G, depth=2)
    names = [name for name, _, _ in relaxation_parameters(net)]
    assert names == [f"layers.{i}.{p}" for i in range(3) for p in ("residual", "bias_residual")]
    for _, _, rel in relaxation_parameters(net):
        assert (rel.family, rel.role, rel.strict_value) == ("rpp", "residual", 0.0)
    others = {n for n, _ in net.named_parameters()} - set(names)
    assert others == {f"layers.{i}.{p}" for i in range(3) for p in ("coeffs", "bias_coeffs")}
    coeffs_before = {n: p.detach().clone() for n, p in net.named_parameters() if n in others}
    assert all(p.abs().sum() > 0 for _, p, _ in relaxation_parameters(net))
    set_strict(net)
    assert all(torch.equal(p, torch.zeros_like(p)) for _, p, _ in relaxation_parameters(net))
    for n, p in net.named_parameters():
        if n in others:
            assert torch.equal(p, coeffs_before[n])
    assert all(float(v.detach()) == 0.0 for v in equivariance_levels(net).values())


# ----------------------------------------------------------------------------- gradients
def test_gradients_match_central_finite_differences():
    G = SO2()
    net, rep_in, _ = _mlp(G, depth=1)
    net = net.double()
    _randomise(net, seed=3, scale=0.5)
    x = torch.randn(4, rep_in.size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    target = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def loss():
        return ((net(x) - target) ** 2).sum() + net.layers[0].equivariance_level()

    net.zero_grad()
    loss().backward()
    h = 1e-6
    checked = 0
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        flat = p.data.view(-1)
        fd = torch.zeros_like(flat)
        with torch.no_grad():
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + h
                up = float(loss())
                flat[i] = old - h
                down = float(loss())
                flat[i] = old
                fd[i] = (up - down) / (2 * h)
        torch.testing.assert_close(p.grad.view(-1), fd, rtol=1e-6, atol=1e-7, msg=name)
        checked += 1
    assert checked == 8


# ----------------------------------------------------------------------------- nonlinearity
@pytest.mark.parametrize("G", MLP_GROUPS, ids=MLP_IDS)
def test_gated_nonlinearity_matches_a_naive_loop(G):
    rep = 2 * V(G) + 3 * Scalar(G) + V(G) * V(G)
    act = GatedNonlinearity(rep)
    assert act.num_gates == 3
    assert act.rep_in == rep + 3 * Scalar(G)
    x = torch.randn(4, act.rep_in.size, generator=torch.Generator().manual_seed(0))
    expected = torch.empty(4, rep.size)
    n = G.n
    gates = x[:, rep.size :]
    blocks = [(0, n, 0), (n, n, 1)]  # (offset, size, gate) of the non-scalar copies
    blocks.append((2 * n + 3, n * n, 2))
    for offset, size, gate in blocks:
        for j in range(offset, offset + size):
            expected[:, j] = x[:, j] * torch.sigmoid(gates[:, gate])
    for j in range(2 * n, 2 * n + 3):
        expected[:, j] = x[:, j] * torch.sigmoid(x[:, j])
    torch.testing.assert_close(act(x), expected, rtol=1e-6, atol=1e-7)
    assert_equivariant(act, G, x, rep_in=act.rep_in, rep_out=rep)


def test_gated_nonlinearity_gradients_match_finite_differences():
    G = SO2()
    # two non-scalar summands separated by scalars: several gate groups and an interleaved layout
    act = GatedNonlinearity(2 * V(G) + 2 * Scalar(G) + V(G) * V(G))
    x = torch.randn(
        3, act.rep_in.size, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    assert torch.autograd.gradcheck(act, (x.requires_grad_(True),))


def test_hidden_rep_splits_the_budget():
    G = SO3()
    assert hidden_rep(G, 20) == 3 * V(G) + 11 * Scalar(G)
    assert hidden_rep(G, 5) == 5 * Scalar(G)
    for c in (1, 6, 7, 256):
        rep = hidden_rep(SO2(), c)
        assert rep.size == c
    torch.manual_seed(0)
    net = RPPMLP(V(G), V(G), hidden=20, depth=1)
    assert net.hidden == 3 * V(G) + 11 * Scalar(G)
    assert net.layers[0].rep_out == 3 * V(G) + 14 * Scalar(G)


def test_depth_zero_is_one_layer():
    G = SO2()
    torch.manual_seed(0)
    net = RPPMLP(2 * V(G), V(G), hidden=8, depth=0)
    assert len(net.layers) == 1
    assert len(net.activations) == 0
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(net(x), net.layers[0](x))


# ----------------------------------------------------------------------------- initialisation
def test_initialisation_preserves_variance():
    G = SO2()
    rep_in, rep_out = 40 * V(G) + 30 * Scalar(G), 10 * V(G) + 10 * Scalar(G)
    torch.manual_seed(0)
    x = torch.randn(2000, rep_in.size)
    variances = []
    for _ in range(20):
        layer = EquivariantLinear(rep_in, rep_out, bias=False)
        with torch.no_grad():
            variances.append(layer(x).var(0))
    v = torch.stack(variances).mean(0)
    assert float(v[:20].mean()) == pytest.approx(1.0, abs=0.1)
    assert float(v[20:].mean()) == pytest.approx(1.0, abs=0.1)
    relaxed = RPPLinear(rep_in, rep_out, residual_scale=1e-3)
    assert float(relaxed.residual.detach().std()) == pytest.approx(1e-3 / rep_in.size**0.5, rel=0.1)
    start_strict = RPPLinear(rep_in, rep_out, residual_scale=0.0)
    assert float(start_strict.equivariance_level().detach()) == 0.0


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_the_parameters(device):
    net, rep_in, _ = _mlp(SO3())
    x = torch.randn(5, rep_in.size, generator=torch.Generator().manual_seed(0))
    expected = net(x)
    moved = copy.deepcopy(net).to(device)
    torch.testing.assert_close(moved(x.to(device)).cpu(), expected, rtol=1e-5, atol=1e-6)
    double = copy.deepcopy(net).double()
    out = double(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- bad input
G2, G3 = SO2(), SO3()
BAD_CONSTRUCTORS = {
    "groups-differ": (lambda: EquivariantLinear(V(G2), V(G3)), ValueError, "rep_in and rep_out"),
    "rpp-groups-differ": (lambda: RPPLinear(V(G2), Scalar(G3)), ValueError, "rep_in and rep_out"),
    "rep_in-not-rep": (lambda: RPPLinear("V", V(G2)), TypeError, "rep_in"),
    "rep_out-not-rep": (lambda: EquivariantLinear(V(G2), 3), TypeError, "rep_out"),
    "bias-not-bool": (lambda: EquivariantLinear(V(G2), V(G2), bias=1), TypeError, "bias"),
    "negative-residual_scale": (
        lambda: RPPLinear(V(G2), V(G2), residual_scale=-1.0),
        ValueError,
        "residual_scale",
    ),
    "mlp-groups-differ": (lambda: RPPMLP(V(G2), V(G3), 8, 1), ValueError, "rep_in and rep_out"),
    "hidden-other-group": (lambda: RPPMLP(V(G2), V(G2), V(G3), 1), ValueError, "hidden"),
    "hidden-zero": (lambda: RPPMLP(V(G2), V(G2), 0, 1), ValueError, "hidden"),
    "hidden-str": (lambda: RPPMLP(V(G2), V(G2), "wide", 1), TypeError, "hidden"),
    "depth-negative": (lambda: RPPMLP(V(G2), V(G2), 8, -1), ValueError, "depth"),
    "depth-float": (lambda: RPPMLP(V(G2), V(G2), 8, 1.0), TypeError, "depth"),
    "gate-not-rep": (lambda: GatedNonlinearity(4), TypeError, "rep"),
    "hidden_rep-group": (lambda: hidden_rep("SO2", 4), TypeError, "group"),
    "hidden_rep-channels": (lambda: hidden_rep(G2, 0), ValueError, "channels"),
}


@pytest.mark.parametrize("case", list(BAD_CONSTRUCTORS))
def test_bad_arguments_raise(case):
    build, error, match = BAD_CONSTRUCTORS[case]
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    "make",
    [
        lambda: EquivariantLinear(2 * V(G2), V(G2)),
        lambda: RPPLinear(2 * V(G2), V(G2)),
        lambda: RPPMLP(2 * V(G2), V(G2), 8, 2),
        lambda: GatedNonlinearity(V(G2) + V(G2)),
    ],
    ids=["EquivariantLinear", "RPPLinear", "RPPMLP", "GatedNonlinearity"],
)
def test_wrong_input_raises(make):
    torch.manual_seed(0)
    module = make()
    with pytest.raises(ValueError, match="x must have last dimension"):
        module(torch.randn(3, 5))
    with pytest.raises(ValueError, match="x must have last dimension"):
        module(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        module([[0.0] * 4])
