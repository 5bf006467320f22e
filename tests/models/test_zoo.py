import math
from pathlib import Path

import pytest
import torch

from symprior._config import load_config
from symprior.groups import SO2, SO3, Cyclic, Scalar, Translation, V, transform_image
from symprior.models.zoo import ZOO, make_group, parse_rep, rpp_mlp, soft_se2_cnn
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


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_network_builds_with_defaults_and_runs(name):
    torch.manual_seed(2)
    net = ZOO[name]()
    x = torch.randn(3, 2) if name in ("rpp_mlp", "unconstrained_mlp") else torch.randn(3, 1, 16, 16)
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
