"""Per-position products of the soft-translation layers (004 eq. 2 with a kernel per pixel).

The fast path builds kernels one row of the support disk at a time and contracts them with
strided views of the padded image; these tests hold it to slow references: the naive sum of
eq. 2, the gather-based twin used for double backward, and finite differences.
"""

import pytest
import torch

from symprior.groups import SE2
from symprior.nn import nonstationary
from symprior.nn.nonstationary import (
    NonStationaryConv2d,
    NonStationaryGroupConv,
    NonStationaryKernelConfig,
    NonStationaryLifting,
)
from tests.nn.test_nonstationary import _naive

F64 = torch.float64
PADDINGS = ["zeros", "circular"]
#: (kind, soft) of the layers that evaluate a kernel per pixel.
PER_PIXEL = [("T2-conv", "translation"), ("SE2-lift", "both"), ("SE2-gconv", "translation")]
PER_PIXEL_IDS = ["-".join(case) for case in PER_PIXEL]


@pytest.fixture(params=["broadcast", "gather"])
def feature_path(request, monkeypatch):
    """Runs a test with the CPU's per-row broadcast sums for the kernel features and with the
    gathers that other devices use (forced on the CPU)."""
    monkeypatch.setattr(nonstationary, "_GATHER_ON_CPU", request.param == "gather")
    return request.param


def _layer(kind, soft, padding, *, radius=2.5, omega_prime=0.6, seed=0):
    torch.manual_seed(seed)
    config = NonStationaryKernelConfig(num_features=4, hidden=5, omega_prime_init=omega_prime)
    options = {"radius": radius, "soft": soft, "padding": padding, "config": config}
    if kind == "T2-conv":
        layer = NonStationaryConv2d(2, 3, **options)
    elif kind == "SE2-lift":
        layer = NonStationaryLifting(SE2(), 2, 3, num_rotations=3, **options)
    else:
        layer = NonStationaryGroupConv(SE2(), 2, 3, num_rotations=3, **options)
    return layer.to(F64).eval()


def _input(kind, height, width, *, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 2, 3, height, width) if kind == "SE2-gconv" else (batch, 2, height, width)
    return torch.randn(*shape, generator=gen, dtype=F64)


def _kwargs(kind):
    return {} if kind == "T2-conv" else {"grid_offset": 0.3}


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(("kind", "soft"), PER_PIXEL, ids=PER_PIXEL_IDS)
def test_matches_naive_sum_on_rectangular_images(kind, soft, padding, feature_path):
    # Radius 2.5 gives disk rows of widths 3, 5, 5, 5, 3; a 6 x 9 image has rows shorter and
    # longer than its columns, so the flat layout's row stride and edge masks are both tested.
    layer = _layer(kind, soft, padding)
    x = _input(kind, 6, 9)
    with torch.no_grad():
        got = layer(x, **_kwargs(kind))
    expected = _naive(layer, kind, x, 0.0 if kind == "T2-conv" else 0.3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_row_groups_respect_the_kernel_budget(monkeypatch):
    layer = _layer("SE2-gconv", "translation", "zeros")
    x = _input("SE2-gconv", 6, 9)
    layout = layer._layout(6, 9, x.device)
    # 21 offsets in 5 disk rows; 3 x 3 rotation pairs, 2 x 3 channels, 6 features.
    plan = nonstationary._DiskProduct(layout, 2, 3, 3, 3)
    assert plan.groups(8) == [(0, 5)]
    per_offset = layout.grid_size * 3 * 3 * 2 * 3 * 8
    monkeypatch.setattr(nonstationary, "_KERNEL_BYTES", 10 * per_offset)
    assert plan.groups(8) == [(0, 2), (2, 4), (4, 5)]  # rows of 3 + 5, 5 + 5, 3 offsets
    monkeypatch.setattr(nonstationary, "_KERNEL_BYTES", 1)
    assert plan.groups(8) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    with torch.no_grad():
        monkeypatch.setattr(nonstationary, "_KERNEL_BYTES", 32 << 20)
        expected = layer(x, grid_offset=0.3)
        monkeypatch.setattr(nonstationary, "_KERNEL_BYTES", 1)
        torch.testing.assert_close(layer(x, grid_offset=0.3), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("budget", [None, 1], ids=["one-group", "row-by-row"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(("kind", "soft"), PER_PIXEL, ids=PER_PIXEL_IDS)
def test_fast_backward_matches_the_gathered_reference(
    kind, soft, padding, budget, feature_path, monkeypatch
):
    # create_graph=True differentiates the gather-based twin of the forward; the plain backward
    # runs the per-row adjoint and kernel-gradient products. Both must give the same numbers,
    # whether the kernels of all disk rows are built at once or (tiny budget) row by row.
    if budget is not None:
        monkeypatch.setattr(nonstationary, "_KERNEL_BYTES", budget)
    layer = _layer(kind, soft, padding)
    x = _input(kind, 7, 8).requires_grad_()
    out = layer(x, **_kwargs(kind))
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    inputs = [x, *layer.parameters()]
    fast = torch.autograd.grad(out, inputs, probe, retain_graph=True)
    reference = torch.autograd.grad(out, inputs, probe, create_graph=True)
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-11)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(("kind", "soft"), PER_PIXEL, ids=PER_PIXEL_IDS)
def test_input_gradient_matches_finite_differences(kind, soft, padding):
    layer = _layer(kind, soft, padding, radius=1.5)
    x = _input(kind, 4, 5, batch=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: layer(v, **_kwargs(kind)), (x,))


@pytest.mark.parametrize("padding", PADDINGS)
def test_second_derivatives_match_finite_differences(padding):
    layer = _layer("T2-conv", "translation", padding, radius=1.5)
    x = _input("T2-conv", 4, 4, batch=1).requires_grad_()
    assert torch.autograd.gradgradcheck(layer, (x,))


@pytest.mark.parametrize(("kind", "soft"), PER_PIXEL, ids=PER_PIXEL_IDS)
def test_products_do_not_loop_over_pixels(kind, soft):
    # One batched product per row of the support disk (5 rows at radius 2.5), whatever the
    # image and batch size: no Python loop over pixels, tiles or rotations.
    layer = _layer(kind, soft, "zeros")
    counts = []
    for height, width, batch in [(6, 6, 1), (11, 17, 3)]:
        x = _input(kind, height, width, batch=batch)
        # acc_events: torch 2.11 warns that a profile without it keeps only its last cycle.
        with torch.no_grad(), torch.profiler.profile(acc_events=True) as prof:
            layer(x, **_kwargs(kind))
        names = [event.name for event in prof.events()]
        counts.append(sum(name in ("aten::bmm", "aten::baddbmm_") for name in names))
    assert counts == [5, 5]


def test_scratch_buffers_are_safe_across_overlapping_calls():
    # The kernel products reuse per-thread scratch buffers between calls. Two forward passes of
    # one layer and one of a layer of another size before a single backward (as REMUL's f(x)
    # and f(g x) do) must give the gradients of separate, gathered computations.
    big = _layer("T2-conv", "translation", "zeros")
    small = _layer("SE2-lift", "both", "circular", radius=1.5, seed=3)
    x1 = _input("T2-conv", 7, 8).requires_grad_()
    x2 = _input("T2-conv", 7, 8, seed=2).requires_grad_()
    x3 = _input("SE2-lift", 5, 6, seed=5).requires_grad_()
    gen = torch.Generator().manual_seed(6)

    def loss(create_graph):
        outs = [big(x1), small(x3, grid_offset=0.3), big(x2)]
        probes = [
            torch.randn(o.shape, generator=gen.manual_seed(6 + i), dtype=F64)
            for i, o in enumerate(outs)
        ]
        total = sum((o * p).sum() for o, p in zip(outs, probes, strict=True))
        inputs = [x1, x2, x3, *big.parameters(), *small.parameters()]
        return torch.autograd.grad(total, inputs, create_graph=create_graph)

    fast = loss(create_graph=False)
    reference = loss(create_graph=True)  # the gather-based twin, no scratch
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-11)


def test_scratch_keeps_small_buffers_and_allocates_large_ones(monkeypatch):
    like = torch.zeros(1, dtype=F64)
    first = nonstationary._scratch(100, like, "test slot")
    assert nonstationary._scratch(60, like, "test slot").data_ptr() == first.data_ptr()
    assert nonstationary._scratch(60, like, "other slot").data_ptr() != first.data_ptr()
    grown = nonstationary._scratch(200, like, "test slot")
    assert grown.numel() == 200
    assert nonstationary._scratch(150, like, "test slot").data_ptr() == grown.data_ptr()
    monkeypatch.setattr(nonstationary, "_SCRATCH_BYTES", 8 * 150)
    big = nonstationary._scratch(151, like, "test slot")
    assert big.data_ptr() != grown.data_ptr()  # over the cap: fresh, not kept
    assert nonstationary._scratch(150, like, "test slot").data_ptr() == grown.data_ptr()


def test_frequency_gradients_when_the_forward_kept_no_sines(monkeypatch):
    # The forward keeps the sines of the pre-activations only when it records gradients for
    # them; a backward that needs them anyway (e.g. under a function transform) rebuilds them.
    layer = _layer("T2-conv", "translation", "zeros")
    x = _input("T2-conv", 7, 8)
    probe = torch.randn(2, 3, 7, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    expected = torch.autograd.grad((layer(x) * probe).sum(), [layer.omega_prime])
    original = nonstationary._DiskProduct

    def without_sines(*args, **kwargs):
        return original(*args[:5], keep_sines=False)

    monkeypatch.setattr(nonstationary, "_DiskProduct", without_sines)
    got = torch.autograd.grad((layer(x) * probe).sum(), [layer.omega_prime])
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-12)
