"""Layers first called under ``torch.inference_mode`` must still train afterwards.

Tensors created under inference mode cannot be written to, nor saved for backward, outside it.
Several layers cache tensors between calls (row layouts, masks, scratch buffers, Fourier
logarithms, DFT matrices, bases): a cache filled by an inference-mode call (a notebook's first
prediction, a validation pass before training) must not break the next training step. Each case
compares a layer that saw an inference-mode call first with an untouched copy: outputs, first
derivatives (including those a scratch buffer feeds) and, where the layer supports them, second
derivatives.
"""

import copy

import pytest
import torch

from symprior.groups import SE2, SO2, Scalar, V, equivariant_basis_blocks
from symprior.nn.lie_algebra import LieAlgebraConv
from symprior.nn.nonstationary import (
    NonStationaryConv2d,
    NonStationaryGroupConv,
    NonStationaryKernelConfig,
    NonStationaryLifting,
)
from symprior.nn.power import PowerLayer, PowerNet, image_generators
from symprior.nn.rpp import RPPMLP, EquivariantLinear

F64 = torch.float64


def _cases():
    config = NonStationaryKernelConfig(num_features=4, hidden=5, omega_prime_init=0.6)
    yield (
        "soft-T2-zeros",
        lambda: NonStationaryConv2d(2, 3, radius=1.5, soft="translation", config=config),
        lambda g: torch.randn(2, 2, 6, 7, generator=g, dtype=F64),
        {},
    )
    yield (
        "soft-T2-circular",
        lambda: NonStationaryConv2d(
            2, 3, radius=1.5, soft="translation", padding="circular", config=config
        ),
        lambda g: torch.randn(2, 2, 6, 7, generator=g, dtype=F64),
        {},
    )
    yield (
        "SE2-lift-both",
        lambda: NonStationaryLifting(SE2(), 2, 3, radius=1.5, num_rotations=3, soft="both"),
        lambda g: torch.randn(2, 2, 6, 6, generator=g, dtype=F64),
        {"grid_offset": 0.2},
    )
    yield (
        "SE2-gconv-translation",
        lambda: NonStationaryGroupConv(
            SE2(), 2, 2, radius=1.5, num_rotations=3, soft="translation", config=config
        ),
        lambda g: torch.randn(2, 2, 3, 6, 6, generator=g, dtype=F64),
        {"grid_offset": 0.2},
    )
    yield (
        "lie-algebra-SO2",
        lambda: LieAlgebraConv(SO2(), 2, 2, kernel_size=3, num_samples=4, train_sampling="grid"),
        lambda g: torch.randn(2, 2, 7, 7, generator=g, dtype=F64),
        {},
    )
    for kind in ("translation", "scaling", "rotation"):
        yield (
            f"power-{kind}",
            lambda kind=kind: PowerLayer(image_generators(6, 6, kind), 1, 2, 3),
            lambda g: torch.randn(2, 2, 6, 6, generator=g, dtype=F64),
            {},
        )
    for kind in ("translation", "scaling"):  # frozen magnitudes: the cached operators serve
        yield (
            f"power-{kind}-frozen-magnitudes",
            lambda kind=kind: PowerLayer(image_generators(6, 6, kind), 1, 2, 3).requires_grad_(
                True
            ),
            lambda g: torch.randn(2, 2, 6, 6, generator=g, dtype=F64),
            {"frozen": True},
        )
    yield (
        "powernet",
        lambda: PowerNet(
            image_generators(6, 6, "translation"), 1, 2, 3, channels=(4,), norm="layer"
        ),
        lambda g: torch.randn(2, 2, 6, 6, generator=g, dtype=F64),
        {},
    )
    yield (
        "rpp-mlp",
        lambda: RPPMLP(V(SO2()) + Scalar(SO2()), V(SO2()), hidden=16, depth=2),
        lambda g: torch.randn(3, 3, generator=g, dtype=F64),
        {},
    )


CASES = list(_cases())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    ("make", "data", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_training_after_an_inference_mode_call(make, data, kwargs, dtype):
    # float32 matters: casts of float64 constants are new tensors, made in inference mode.
    torch.manual_seed(0)
    layer = make().to(dtype)
    kwargs = dict(kwargs)
    if kwargs.pop("frozen", False):
        layer.magnitudes.requires_grad_(False)
    fresh = copy.deepcopy(layer)
    gen = torch.Generator().manual_seed(1)
    x = data(gen).to(dtype)
    close = {"rtol": 0, "atol": 1e-12 if dtype == F64 else 1e-5}
    with torch.inference_mode():
        first = layer(x, **kwargs)
    outputs, grads = [], []
    for module in (layer, fresh):
        xi = x.clone().requires_grad_()
        out = module(xi, **kwargs)
        probe = torch.randn(out.shape, generator=gen.manual_seed(2), dtype=dtype)
        inputs = [xi, *(p for p in module.parameters() if p.requires_grad)]
        grads.append(torch.autograd.grad((out * probe).sum(), inputs))
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.testing.assert_close(first, outputs[1], **close)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.inference_mode():  # and back
        torch.testing.assert_close(layer(x, **kwargs), outputs[1], **close)


def test_a_basis_first_built_under_inference_mode_trains_later():
    rep_in, rep_out = 2 * V(SO2()) + Scalar(SO2()), V(SO2()) + 3 * Scalar(SO2())
    with torch.inference_mode():
        first = equivariant_basis_blocks(rep_in, rep_out).dense()
    torch.manual_seed(0)
    layer = EquivariantLinear(rep_in, rep_out).to(F64)
    x = torch.randn(4, rep_in.size, dtype=F64, requires_grad=True)
    out = layer(x)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    torch.testing.assert_close(
        equivariant_basis_blocks(rep_in, rep_out).dense(), first, rtol=0, atol=0
    )
