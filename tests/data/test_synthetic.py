"""Synthetic task with known symmetry-breaking strength: E (001 eq. 12) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from symprior.data.synthetic import breaking_part, invariant_part, synthetic
from symprior.diagnostics import equivariance_error
from symprior.groups import SO2, Cyclic, Scalar, V
from symprior.testing import assert_equivariant

DT = torch.float64
BREAKINGS = ["linear", "quadrupole"]


def c4() -> torch.Tensor:
    return SO2().exp(torch.arange(4, dtype=DT)[:, None] * (math.pi / 2))


@pytest.mark.parametrize("breaking", BREAKINGS)
def test_epsilon_zero_is_exactly_invariant(breaking: str) -> None:
    data = synthetic(64, epsilon=0.0, breaking=breaking, seed=1, dtype=DT)  # type: ignore[arg-type]
    torch.testing.assert_close(data.y, invariant_part(data.x), rtol=0, atol=0)
    assert_equivariant(
        data.target_function,
        data.group,
        data.x,
        rep_in=data.rep_in,
        rep_out=data.rep_out,
        generator=torch.Generator().manual_seed(2),
    )
    err = equivariance_error(
        data.target_function,
        data.x,
        data.group,
        data.rep_in,
        data.rep_out,
        generator=torch.Generator().manual_seed(3),
    )
    assert float(err) < 1e-12


@pytest.mark.parametrize("breaking", BREAKINGS)
def test_error_is_linear_in_epsilon_closed_form(breaking: str) -> None:
    errors = []
    for eps in (0.05, 0.5, 2.0):
        data = synthetic(128, epsilon=eps, breaking=breaking, seed=4, dtype=DT)  # type: ignore[arg-type]
        err = equivariance_error(
            data.target_function, data.x, data.group, data.rep_in, data.rep_out, elements=c4()
        )
        closed = eps * breaking_part(data.x, breaking).abs().mean()  # type: ignore[arg-type]
        torch.testing.assert_close(err, closed, rtol=1e-12, atol=1e-14)
        errors.append(float(err) / eps)
    assert max(errors) - min(errors) < 1e-12


@pytest.mark.parametrize("breaking", BREAKINGS)
def test_haar_error_matches_population_closed_form(breaking: str) -> None:
    data = synthetic(4000, epsilon=0.3, breaking=breaking, seed=5, dtype=DT)  # type: ignore[arg-type]
    err = equivariance_error(
        data.target_function,
        data.x,
        data.group,
        data.rep_in,
        data.rep_out,
        num_samples=200,
        generator=torch.Generator().manual_seed(6),
    )
    expected = {"linear": 0.3 * math.sqrt(2 / math.pi), "quadrupole": 0.3 * 2 / math.pi}[breaking]
    assert data.expected_equivariance_error() == pytest.approx(expected)
    assert float(err) == pytest.approx(expected, rel=0.05)


def test_breaking_terms_have_unit_variance_and_quadrupole_is_c2_invariant() -> None:
    x = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(7), dtype=DT)
    for breaking in BREAKINGS:
        values = breaking_part(x, breaking)  # type: ignore[arg-type]
        assert float(values.var()) == pytest.approx(1.0, rel=0.02)
    data = synthetic(32, epsilon=1.0, breaking="quadrupole", seed=8, dtype=DT)
    group = Cyclic(2)
    assert_equivariant(
        data.target_function,
        group,
        data.x,
        rep_in=V(group),
        rep_out=Scalar(group),
        elements=group.elements(),
    )
    with pytest.raises(AssertionError):
        assert_equivariant(
            data.target_function,
            data.group,
            data.x,
            rep_in=data.rep_in,
            rep_out=data.rep_out,
            elements=c4()[1:2],
        )


def test_noise_level() -> None:
    data = synthetic(20_000, epsilon=0.2, noise_std=0.1, seed=9, dtype=DT)
    residual = data.y - data.target_function(data.x)
    assert float(residual.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(residual.mean())) < 0.004
