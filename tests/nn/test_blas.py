"""Tests of symprior.nn._blas: the split products equal torch.mm/addmm in float64."""

import pytest
import torch

from symprior.nn._blas import split_addmm_, split_mm

F64 = torch.float64


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(30, 28, 700), (28, 28, 511), (7, 5, 9), (600, 28, 28), (601, 33, 17), (1, 4, 4)],
)
@pytest.mark.parametrize("transposed", [False, True], ids=["plain", "transposed-a"])
def test_split_mm_equals_mm(m, k, n, transposed, threads):
    gen = torch.Generator().manual_seed(m * n + k)
    a = (
        torch.randn(k, m, dtype=F64, generator=gen).t()
        if transposed
        else torch.randn(m, k, dtype=F64, generator=gen)
    )
    b = torch.randn(n, k, dtype=F64, generator=gen).t()  # strided like the DFT operands
    expected = a @ b
    assert torch.allclose(split_mm(a, b), expected, rtol=1e-13, atol=1e-13)
    out = torch.full((m, n), float("nan"), dtype=F64)
    assert split_mm(a, b, out=out) is out
    assert torch.allclose(out, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("m", "k", "n"), [(33, 2900, 64), (5, 7, 3), (4, 1, 4)])
def test_split_addmm_equals_addmm(m, k, n, threads):
    gen = torch.Generator().manual_seed(k)
    a = torch.randn(k, m, dtype=F64, generator=gen).t()
    b = torch.randn(k, n, dtype=F64, generator=gen)
    acc = torch.randn(m, n, dtype=F64, generator=gen)
    expected = acc + a @ b
    assert split_addmm_(acc, a, b) is acc
    assert torch.allclose(acc, expected, rtol=1e-12, atol=1e-12)


def test_empty_operands():
    assert split_mm(torch.zeros(0, 3), torch.zeros(3, 5)).shape == (0, 5)
    acc = torch.ones(2, 2)
    split_addmm_(acc, torch.zeros(2, 0), torch.zeros(0, 2))
    assert torch.equal(acc, torch.ones(2, 2))
