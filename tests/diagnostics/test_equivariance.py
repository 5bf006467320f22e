r"""E (001 eq. 12) and E' (001 eq. 13) against closed forms.

For f(x) = x + c under SO(2) acting by rotations R_t on inputs and outputs,
f(R x) - R f(x) = (I - R) c, with |(I - R_t) c| = 2 |c| |sin(t/2)|. Hence, with M angles t_i:

* E' = (1/M) sum_i 2 |c| |sin(t_i/2)|, whose Haar limit is |c| (1/2pi) int 2|sin(t/2)| dt
  = (4/pi) |c|; the summands have variance |c|^2 (2 - 16/pi^2), so E' lies within
  6 |c| sqrt(2 - 16/pi^2) / sqrt(M) of (4/pi)|c| but with probability ~2e-9 (CLT);
* E = |(mean_i R_i) c - c| = |c| sqrt((1 - C)^2 + S^2), C and S the means of cos t_i, sin t_i.
  By the triangle inequality |E/|c| - 1| <= sqrt(C^2 + S^2), and 2M (C^2 + S^2) is
  asymptotically chi^2 with 2 degrees of freedom (each mean has variance 1/(2M)), so
  P(sqrt(C^2 + S^2) > 5/sqrt(M)) = P(chi^2_2 > 50) = e^-25: E -> |c| within 5|c|/sqrt(M).
"""

import math

import pytest
import torch

from symprior.diagnostics import equivariance_error, equivariance_error_pointwise
from symprior.groups import SO2, SO3, Scalar, V
from symprior.nn import RPPLinear
from symprior.testing import assert_equivariant

C = torch.tensor([0.3, -1.2], dtype=torch.float64)


def _rotate_scale(x):
    # |x| (2 I + J) x: the norm is invariant and I, J commute with every rotation
    j = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=x.dtype)
    return x.norm(dim=-1, keepdim=True) * (2 * x + x @ j.T)


def _strict_rpp():
    torch.manual_seed(3)
    layer = RPPLinear(V(SO2()), V(SO2())).double()
    layer.set_strict()
    return layer


EQUIVARIANT = [
    pytest.param(SO2(), _rotate_scale, "V", 2, id="SO2-norm-times-rotation-scaling"),
    pytest.param(SO2(), lambda x: (x**2).sum(-1, keepdim=True), "scalar", 2, id="SO2-norm2"),
    pytest.param(SO3(), lambda x: torch.tanh(x.norm(dim=-1, keepdim=True)) * x, "V", 3, id="SO3"),
    pytest.param(SO2(), _strict_rpp(), "V", 2, id="SO2-strict-RPPLinear"),
]


@pytest.mark.parametrize(("group", "f", "out", "n"), EQUIVARIANT)
def test_errors_vanish_for_equivariant_functions(group, f, out, n):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, n, generator=gen, dtype=torch.float64)
    rep_out = V(group) if out == "V" else Scalar(group)
    assert_equivariant(f, group, x, rep_in=V(group), rep_out=rep_out, dtypes=None, modes=("eval",))
    with torch.no_grad():
        e = equivariance_error(f, x, group, V(group), rep_out, num_samples=64, generator=gen)
        e_point = equivariance_error_pointwise(
            f, x, group, V(group), rep_out, num_samples=64, generator=gen
        )
    assert e.dtype == torch.float64
    assert float(e) <= 1e-10
    assert float(e_point) <= 1e-10


def _shift(x):
    return x + C


def _angles(num, seed):
    g = SO2().sample(num, torch.Generator().manual_seed(seed))
    return g, torch.atan2(g[:, 1, 0], g[:, 0, 0])


@pytest.mark.parametrize("num", [1, 7, 50], ids=lambda m: f"M={m}")
def test_shift_matches_the_finite_sample_closed_form(num):
    g, t = _angles(num, seed=num)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = float(C.norm())
    so2 = SO2()
    e = equivariance_error(_shift, x, so2, V(so2), V(so2), elements=g)
    e_none = equivariance_error(_shift, x, so2, V(so2), V(so2), elements=g, reduction="none")
    expected = c * math.hypot(1 - float(t.cos().mean()), float(t.sin().mean()))
    assert float(e) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # E does not depend on x for a shift: every point gives the same value
    assert torch.allclose(e_none, torch.full((5,), expected, dtype=torch.float64), rtol=1e-12)
    pointwise = equivariance_error_pointwise(
        _shift, x, so2, V(so2), V(so2), elements=g, reduction="none"
    )
    per_element = 2 * c * (t / 2).sin().abs()
    assert torch.allclose(pointwise, per_element[:, None].expand(num, 5), rtol=1e-12, atol=1e-14)
    e_point = equivariance_error_pointwise(_shift, x, so2, V(so2), V(so2), elements=g)
    assert float(e_point) == pytest.approx(float(per_element.mean()), rel=1e-12)


def test_shift_haar_limits_within_monte_carlo_error():
    num = 10_000
    gen = torch.Generator().manual_seed(2024)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    so2 = SO2()
    c = float(C.norm())
    e = float(equivariance_error(_shift, x, so2, V(so2), V(so2), num_samples=num, generator=gen))
    e_point = float(
        equivariance_error_pointwise(_shift, x, so2, V(so2), V(so2), num_samples=num, generator=gen)
    )
    assert abs(e - c) <= 5 * c / math.sqrt(num)
    sd = c * math.sqrt(2 - 16 / math.pi**2)
    assert abs(e_point - 4 / math.pi * c) <= 6 * sd / math.sqrt(num)
    # and the two limits differ by far more than those bounds, so the test can tell them apart
    assert abs(4 / math.pi * c - c) > 2 * (5 * c + 6 * sd) / math.sqrt(num)


@pytest.mark.parametrize("error", [equivariance_error, equivariance_error_pointwise])
def test_a_generator_that_is_not_one_is_a_type_error(error):
    G = SO2()
    layer = RPPLinear(V(G), V(G))
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        error(layer, torch.zeros(3, 2), G, V(G), V(G), generator=5)
