"""Every layer rejects an input of the wrong dtype or device with a clear error naming it."""

import copy

import pytest
import torch

from symprior.groups import SE2, SO2, Scalar, V
from symprior.nn.lie_algebra import LieAlgebraConv
from symprior.nn.nonstationary import (
    NonStationaryConv2d,
    NonStationaryGroupConv,
    NonStationaryLifting,
)
from symprior.nn.power import PowerLayer, image_generators
from symprior.nn.rpp import RPPMLP, EquivariantLinear, GatedNonlinearity, RPPLinear


def _layers():
    G = SO2()
    return {
        "nonstationary-conv": (
            lambda: NonStationaryConv2d(2, 2, radius=1.5),
            (1, 2, 7, 7),
            "input",
        ),
        "nonstationary-soft-conv": (
            lambda: NonStationaryConv2d(2, 2, radius=1.5, soft="translation"),
            (1, 2, 7, 7),
            "input",
        ),
        "nonstationary-lifting": (
            lambda: NonStationaryLifting(SE2(), 2, 2, radius=1.5, num_rotations=4),
            (1, 2, 7, 7),
            "input",
        ),
        "nonstationary-group-conv": (
            lambda: NonStationaryGroupConv(SE2(), 2, 2, radius=1.5, num_rotations=4),
            (1, 2, 4, 7, 7),
            "input",
        ),
        "nonstationary-so2-group-conv": (
            lambda: NonStationaryGroupConv(SO2(), 2, 2, num_rotations=4),
            (1, 2, 4),
            "input",
        ),
        "equivariant-linear": (lambda: EquivariantLinear(V(G), V(G)), (3, 2), "x"),
        "rpp-linear": (lambda: RPPLinear(V(G), V(G) + Scalar(G)), (3, 2), "x"),
        "rpp-mlp": (lambda: RPPMLP(V(G), Scalar(G), hidden=V(G) + Scalar(G), depth=1), (3, 2), "x"),
        "lie-algebra": (lambda: LieAlgebraConv(SO2(), 2, 2, kernel_size=3), (1, 2, 8, 8), "input"),
    }


LAYERS = _layers()


@pytest.mark.parametrize("name", list(LAYERS))
def test_wrong_dtype_is_a_type_error_naming_the_input(name):
    make, shape, arg = LAYERS[name]
    layer = make()
    with pytest.raises(TypeError, match=rf"{arg} has dtype torch.float64 .* torch.float32"):
        layer(torch.zeros(shape, dtype=torch.float64))
    with pytest.raises(TypeError, match=rf"{arg} must be a floating-point tensor"):
        layer(torch.zeros(shape, dtype=torch.int64))
    # The remedy the message names works.
    out = layer.to(torch.float64)(torch.zeros(shape, dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("name", list(LAYERS))
def test_wrong_device_is_a_value_error_naming_the_input(name):
    make, shape, arg = LAYERS[name]
    with pytest.raises(
        ValueError, match=rf"{arg} is on meta but the layer's parameters are on cpu"
    ):
        make()(torch.zeros(shape, device="meta"))


def test_parameter_free_and_dtype_following_layers_need_floating_input():
    """The gated nonlinearity has no parameters and a PowerLayer computes in its input's dtype:
    both take any floating dtype and reject integers; the PowerLayer also checks the device."""
    G = SO2()
    act = GatedNonlinearity(V(G))
    x = torch.randn(3, 3, dtype=torch.float64)
    assert torch.equal(act(x), act.to(torch.float64)(x))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        act(torch.zeros(3, 3, dtype=torch.int64))
    layer = PowerLayer(image_generators(5, 5, "translation"), 1, 2, 3)
    images = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    expected = copy.deepcopy(layer).double()(images)  # the same weights, exactly upcast
    assert torch.allclose(layer(images), expected, atol=1e-12)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        layer(torch.zeros(1, 2, 5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="x is on meta but the layer's parameters are on cpu"):
        layer(torch.zeros(1, 2, 5, 5, device="meta"))
