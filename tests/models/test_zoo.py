import math
from pathlib import Path

import pytest
import torch

from symprior._config import load_config
from symprior.data import six_vs_nine
from symprior.groups import SL2, SO2, SO3, Cyclic, Scalar, Translation, V, transform_image
from symprior.models.zoo import (
    ZOO,
    equivariant_mlp,
    make_group,
    parse_rep,
    rpp_mlp,
    soft_se2_cnn,
)
from symprior.nn import relaxation_parameters, set_strict
from symprior.testing import assert_equivariant

QUARTER_TURNS = SO2().exp(torch.tensor([[k * math.pi / 2] for k in range(4)], dtype=torch.float64))


def _image_action(g, x):
    return transform_image(x, g)


def _invariant(g, y):
    return y


def test_parse_rep_and_make_group():
    G = make_group("SO3")
    assert parse_rep("2V + 3Scalar", G) == 2 * V(G) + 3 * Scalar(G)
    assert parse_rep("V*V", G) == V(G) * V(G)
    assert make_group("Cyclic(4)") == Cyclic(4)
    assert make_group("Translation(2)") == Translation(2)
    with pytest.raises(ValueError, match="unknown group"):
        make_group("SU2")
    with pytest.raises(ValueError, match="unknown representation factor"):
        parse_rep("2W", G)
    assert SO3() == G


@pytest.mark.parametrize("group", ["SO2", "SL2", "O3", "Dihedral(4)"])
def test_parse_rep_reads_v_star_as_the_dual(group):
    """``V*`` (how the library prints a dual) is ``V.T``, alone, with a multiplicity and inside
    products; the matrices are checked against :math:`d\rho^*(A) = -A^\top` and
    :math:`\rho^*(h) = (h^{-1})^\top` directly."""
    G = make_group(group)
    for spec, expected in [
        ("V*", V(G).T),
        ("2V*", 2 * V(G).T),
        ("2 * V*", 2 * V(G).T),
        ("V* + 2S", V(G).T + 2 * Scalar(G)),
        ("V*V", V(G) * V(G)),  # a '*' between factors is still the product
        ("V* * V", V(G).T * V(G)),
        ("V**V", V(G).T * V(G)),
        ("V*V*", V(G) * V(G).T),
        ("V.T*", V(G)),
    ]:
        assert parse_rep(spec, G) == expected, spec
    assert parse_rep("2V*", G) == parse_rep("2V.T", G)
    rep = parse_rep("2V*", G)
    assert rep.size == 2 * G.n
    n = G.n
    for a in G.lie_algebra:
        ref = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
        ref[:n, :n] = ref[n:, n:] = -a.T
        assert torch.allclose(rep.drho(a), ref)
    for h in G.discrete_generators:
        ref = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
        ref[:n, :n] = ref[n:, n:] = torch.linalg.inv(h.double()).T
        assert torch.allclose(rep.rho(h).double(), ref)


def test_parse_rep_errors_name_the_factor():
    G = SO2()
    with pytest.raises(ValueError, match=r"unknown representation factor 'W' in 'V\*W'"):
        parse_rep("V*W", G)
    with pytest.raises(ValueError, match=r"unknown representation factor 'VV' in '2VV'"):
        parse_rep("2VV", G)
    with pytest.raises(ValueError, match=r"factor is missing after '\*' in 'V\*\*'"):
        parse_rep("V**", G)


def test_strict_rpp_mlp_into_the_dual_is_equivariant():
    """An RPP-MLP whose output is the dual (for SL(2) the dual of V is not V) builds, and its
    strict setting is SL(2)-equivariant."""
    torch.manual_seed(0)
    for rep_out in ("V.T", "V*"):
        net = rpp_mlp("SL2", "V", rep_out, hidden="2V + 2V* + 2Scalar", depth=1).double()
        set_strict(net)
        G = SL2()
        x = torch.randn(6, 2, dtype=torch.float64)
        assert_equivariant(net, G, x, rep_in=V(G), rep_out=V(G).T, dtypes=(torch.float64,))
        assert float(net(x).abs().max().detach()) > 1e-8


def test_strict_rpp_mlp_with_quadratic_features_is_invariant_and_not_constant():
    torch.manual_seed(0)
    net = rpp_mlp(hidden="3V + 3Scalar", depth=1).double()
    set_strict(net)
    x = torch.randn(6, 2, dtype=torch.float64)
    G = SO2()
    assert_equivariant(net, G, x, rep_in=V(G), rep_out=Scalar(G))
    # |x|^2 reaches the output: radially different inputs give different outputs
    out = net(torch.tensor([[0.5, 0.0], [2.0, 0.0]], dtype=torch.float64))
    assert float((out[0] - out[1]).abs().detach()) > 1e-6


def test_strict_soft_se2_cnn_is_invariant_to_quarter_turns():
    torch.manual_seed(1)
    net = soft_se2_cnn(channels=(3, 3), num_rotations=4, radius=1.5, soft="both").double()
    set_strict(net)
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    assert_equivariant(
        net,
        SO2(),
        x,
        rep_in=_image_action,
        rep_out=_invariant,
        elements=QUARTER_TURNS,
        modes=("eval",),
    )
    assert [n for n, _, _ in relaxation_parameters(net)] == [
        "lift.omega_prime",
        "convs.0.omega_prime",
    ]


def test_equivariant_mlp_is_the_strict_rpp_mlp_without_relaxation_parameters():
    torch.manual_seed(0)
    strict = equivariant_mlp(hidden="3V + 3Scalar", depth=1).double()
    assert list(relaxation_parameters(strict)) == []
    x = torch.randn(6, 2, dtype=torch.float64)
    G = SO2()
    assert_equivariant(strict, G, x, rep_in=V(G), rep_out=Scalar(G))
    # The same function as rpp_mlp at its strict setting, given the same coefficients.
    relaxed = set_strict(rpp_mlp(hidden="3V + 3Scalar", depth=1).double())
    ours = [p for n, p in strict.named_parameters() if n.endswith("coeffs")]
    theirs = [p for n, p in relaxed.named_parameters() if n.endswith("coeffs")]
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            b.copy_(a)
    torch.testing.assert_close(strict(x), relaxed(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_strict_soft_se2_cnn_with_a_fixed_grid_is_invariant_in_training_mode_too(pool):
    torch.manual_seed(1)
    net = soft_se2_cnn(
        channels=(3, 3), num_rotations=4, radius=1.5, soft="both", pool=pool, random_grid=False
    ).double()
    set_strict(net)
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    assert_equivariant(
        net, SO2(), x, rep_in=_image_action, rep_out=_invariant, elements=QUARTER_TURNS
    )
    assert net.train()(x).equal(net(x))  # no random grid offset: deterministic


def test_soft_se2_cnn_options():
    torch.manual_seed(2)
    net = soft_se2_cnn(channels=(2,), num_rotations=4, radius=1.5, omega_prime_init=0.5)
    assert torch.equal(net.lift.omega_prime, torch.full((3,), 0.5))
    assert net.pool == "max" and net.random_grid
    with pytest.raises(ValueError, match="pool must be one of"):
        soft_se2_cnn(pool="sum")
    with pytest.raises(TypeError, match="random_grid must be a bool"):
        soft_se2_cnn(random_grid=1)


def test_soft_se2_cnn_learns_six_vs_nine_where_the_strict_one_cannot():
    # The regression behind notebook 01: at 8x8, a mean-pooled readout (and a random rotation
    # grid) left the soft network at chance; max pooling and a fixed grid let it learn.
    data = six_vs_nine(64, image_size=8, seed=0)
    x = (data.x - data.x.mean()) / data.x.std()
    flipped = torch.rot90(x, 2, (-2, -1))
    accuracy = {}
    for soft in ("both", "none"):
        torch.manual_seed(0)
        net = soft_se2_cnn(
            channels=(4, 4), num_rotations=4, radius=1.5, soft=soft, random_grid=False
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(30):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), data.y).backward()
            optimizer.step()
        with torch.no_grad():
            logits = net.eval()(x)
            accuracy[soft] = float((logits.argmax(-1) == data.y).float().mean())
            if soft == "none":  # a 9 is a rotated 6: the strict network cannot tell them apart
                torch.testing.assert_close(net(flipped), logits, rtol=0, atol=1e-5)
    assert accuracy["both"] >= 0.9
    assert accuracy["none"] <= 0.6


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_network_builds_with_defaults_and_runs(name):
    torch.manual_seed(2)
    net = ZOO[name]()
    vector_input = name in ("rpp_mlp", "equivariant_mlp", "unconstrained_mlp")
    x = torch.randn(3, 2) if vector_input else torch.randn(3, 1, 16, 16)
    out = net(x)
    assert out.shape[0] == 3 and bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    "path",
    sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.toml")),
    ids=lambda p: p.name,
)
def test_example_configs_are_valid(path):
    config = load_config(path)
    assert config.data["name"] and config.model["name"]
