import math

import pytest
import torch
from torch import nn

from symprior.groups import SO2, SO3, Scalar, V, equivariant_basis, transform_image
from symprior.testing import DEFAULT_TOLERANCES, assert_equivariant, equivariance_errors


def test_passes_for_an_equivariant_linear_map_in_both_dtypes_and_modes():
    G = SO3()
    w = equivariant_basis(V(G) * V(G), V(G))[:, 0].reshape(3, 9)
    layer = nn.Linear(9, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    worst = assert_equivariant(layer, G, x, rep_in=V(G) * V(G), rep_out=V(G))
    assert worst <= DEFAULT_TOLERANCES[torch.float32]


def test_error_equals_the_closed_form_for_a_translated_map():
    # f(x) = x + c under SO(2): f(gx) - g f(x) = c - g c,
    # so e(g) = max|c - g c| / max(1, max|g f(x)|)
    G = SO2()
    c = torch.tensor([3.0, 0.0], dtype=torch.float64)
    x = torch.zeros(1, 2, dtype=torch.float64)
    theta = torch.tensor([[math.pi / 3], [math.pi]], dtype=torch.float64)
    g = G.exp(theta)
    errors, _ = equivariance_errors(lambda z: z + c, G, x, rep_in=V(G), rep_out=V(G), elements=g)
    expected = [
        float((c - g[i] @ c).abs().max()) / max(1.0, float((g[i] @ c).abs().max()))
        for i in range(2)
    ]
    assert torch.allclose(errors, torch.tensor(expected, dtype=torch.float64), atol=1e-14)


def test_failure_names_group_element_dtype_and_error():
    G = SO2()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(
        AssertionError,
        match=r"not equivariant under SO2\(\): relative error .* \(dtype torch.float64, mode call",
    ) as info:
        assert_equivariant(
            lambda z: z[..., :1].expand(-1, 2), G, x, rep_in=V(G), rep_out=V(G), dtypes=None
        )
    assert "at element" in str(info.value)


def test_stochastic_forward_sees_the_same_random_draws():
    # A layer that adds the same random invariant noise to every output channel is invariant
    # only if both forwards draw identical noise: the helper re-seeds before each call.
    G = SO2()

    class Noisy(nn.Module):
        def forward(self, z):
            return z.norm(dim=-1, keepdim=True) + torch.randn(z.shape[0], 1, dtype=z.dtype)

    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_equivariant(Noisy(), G, x, rep_in=V(G), rep_out=Scalar(G))


def test_image_actions_as_callables():
    G = SO2()
    img = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    quarter_turns = G.exp(torch.tensor([[k * math.pi / 2] for k in range(4)], dtype=torch.float64))

    def act(g, x):
        return transform_image(x, g, G)

    pool = nn.AvgPool2d(2)  # 2x2 blocks of a 6x6 grid are permuted by quarter turns
    assert_equivariant(pool, G, img, rep_in=act, rep_out=act, elements=quarter_turns)
    shift = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        shift.weight.zero_()
        shift.weight[0, 0, 1, 2] = 1.0  # picks the right neighbour: not rotation equivariant
    with pytest.raises(AssertionError):
        assert_equivariant(shift, G, img, rep_in=act, rep_out=act, elements=quarter_turns)


def test_bad_arguments():
    G = SO2()
    x = torch.zeros(1, 2)
    with pytest.raises(TypeError, match="rep_in"):
        assert_equivariant(lambda z: z, G, x, rep_in=3, rep_out=V(G))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="group"):
        assert_equivariant(lambda z: z, "SO2", x, rep_in=V(G), rep_out=V(G))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"f must be a callable or an nn\.Module, got str"):
        assert_equivariant("net", G, x, rep_in=V(G), rep_out=V(G))  # type: ignore[arg-type]
