"""The compiled per-position products (``symprior/nn/_disk_product.c``) of float32 CPU layers.

They must give the sums of torch's products (the float64 layers, which never use them, are the
reference), for every layout the C code branches on: zero and circular padding, rotation
channels, batch sizes that leave partial vector blocks and scalar remainders, and channel counts
that are not multiples of the register tile. The loader must fall back cleanly and never leave
a partial library behind.
"""

import subprocess

import pytest
import torch

from symprior.groups import Translation
from symprior.nn import _native, nonstationary
from symprior.nn.nonstationary import NonStationaryConv2d, NonStationaryKernelConfig
from symprior.testing import assert_equivariant
from tests.nn.test_nonstationary import _actions, _shifts
from tests.nn.test_nonstationary_products import PER_PIXEL, PER_PIXEL_IDS, _input, _kwargs, _layer

needs_library = pytest.mark.skipif(
    _native.disk_product_library() is None,
    reason=f"no compiled products: {_native.native_status()}",
)


def _grads(layer, x, *, input_grad=True):
    """Output, input gradient (if asked) and parameter gradients for a fixed probe."""
    layer.zero_grad()
    x = x.clone().requires_grad_(input_grad)
    out = layer(x, **_kwargs(layer.kind))
    # Drawn in float64 for both dtypes (randn draws differently in float32).
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out.backward(probe.to(out.dtype))
    grads = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
    return [out.detach(), *([x.grad] if input_grad else []), *grads]


def _pair(kind, soft, padding, **options):
    """A float64 layer (torch's products) and its float32 copy."""
    reference = _layer(kind, soft, padding, **options)
    reference.kind = kind
    single = _layer(kind, soft, padding, **options).float()
    single.kind = kind
    return reference, single


def _assert_matches(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == torch.float32
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-5 * max(scale, 1.0))


@needs_library
@pytest.mark.parametrize("batch", [1, 5, 37, 64])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize(("kind", "soft"), PER_PIXEL, ids=PER_PIXEL_IDS)
def test_compiled_products_match_float64(kind, soft, padding, batch):
    # Batch 1 and 5 are scalar remainders only, 37 one or two vector blocks and a remainder,
    # 64 whole blocks (vector widths 4, 8 or 16). The layers have 2 -> 3 channels, 3 rotations.
    reference, single = _pair(kind, soft, padding)
    x = _input(kind, 7, 8, batch=batch)
    expected = _grads(reference, x)
    got = _grads(single, x.float())
    _assert_matches(got, expected)


@needs_library
@pytest.mark.parametrize(("cin", "cout"), [(5, 7), (13, 1), (16, 16)])
def test_compiled_products_for_channel_counts_off_the_tile(cin, cout):
    # The tile holds up to 6 output channels (AVX-512): 7, 1 and 16 leave every remainder.
    torch.manual_seed(0)
    config = NonStationaryKernelConfig(num_features=4, hidden=6, omega_prime_init=0.7)
    options = {"radius": 2.5, "soft": "translation", "padding": "zeros", "config": config}
    reference = NonStationaryConv2d(cin, cout, **options).double()
    single = NonStationaryConv2d(cin, cout, **options)
    single.load_state_dict(reference.state_dict())
    reference.kind = single.kind = "T2-conv"
    x = torch.randn(19, cin, 6, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _assert_matches(_grads(single, x.float()), _grads(reference, x))
    # Without an input gradient the forward keeps no kernels; the parameters still get theirs.
    _assert_matches(
        _grads(single, x.float(), input_grad=False), _grads(reference, x, input_grad=False)
    )


@needs_library
def test_compiled_and_torch_products_agree_in_float32(monkeypatch):
    _, single = _pair("SE2-gconv", "translation", "circular")
    x = _input("SE2-gconv", 7, 8, batch=21).float()
    compiled = _grads(single, x)
    monkeypatch.setattr(nonstationary, "_USE_NATIVE", False)
    torch_products = _grads(single, x)
    for a, b in zip(compiled, torch_products, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_library
def test_compiled_products_replace_the_batched_products(monkeypatch):
    # The compiled forward runs no bmm at all; above the kernel budget the layer goes back to
    # torch's products, one batched product per disk row (5 at radius 2.5).
    _, single = _pair("T2-conv", "translation", "zeros")
    x = _input("T2-conv", 6, 6, batch=3).float()

    def products():
        with torch.no_grad(), torch.profiler.profile(acc_events=True) as prof:
            out = single(x)
        names = [event.name for event in prof.events()]
        return out, sum(name in ("aten::bmm", "aten::baddbmm_") for name in names)

    compiled, count = products()
    assert count == 0
    monkeypatch.setattr(nonstationary, "_NATIVE_KERNEL_BYTES", 1)
    fallback, count = products()
    assert count == 5
    torch.testing.assert_close(compiled, fallback, rtol=1e-5, atol=1e-5)


@needs_library
def test_float32_strict_limit_is_shift_equivariant_on_compiled_products():
    # The soft layer at omega' = 0 still runs the per-position products (float32 here); integer
    # circular shifts are exact, so only float32 rounding remains.
    torch.manual_seed(0)
    config = NonStationaryKernelConfig(num_features=8, hidden=8, omega_prime_init=0.8)
    layer = NonStationaryConv2d(
        3, 4, radius=2.5, soft="translation", padding="circular", config=config
    )
    layer.set_strict()
    rep_in, rep_out = _actions("T2-conv", "circular")
    x = torch.randn(20, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    assert_equivariant(
        layer,
        Translation(2),
        x,
        rep_in=rep_in,
        rep_out=rep_out,
        elements=_shifts("T2-conv"),
        dtypes=(torch.float32,),
    )


# ------------------------------------------------------------------------------ the loader
@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """A loader that has decided nothing yet, caching into ``tmp_path``."""
    monkeypatch.setattr(_native, "_STATE", [])
    monkeypatch.setenv("SYMPRIOR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMPRIOR_NATIVE", raising=False)
    return tmp_path


def test_environment_variable_disables_the_library(fresh_state, monkeypatch):
    monkeypatch.setenv("SYMPRIOR_NATIVE", "0")
    assert _native.disk_product_library() is None
    assert "SYMPRIOR_NATIVE" in _native.native_status()
    assert list(fresh_state.iterdir()) == []


def test_no_compiler_falls_back(fresh_state, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setattr(_native.shutil, "which", lambda name: None)
    assert _native.disk_product_library() is None
    assert "no C compiler" in _native.native_status()


def test_failed_build_leaves_nothing_behind(fresh_state, monkeypatch):
    if _native._compiler() is None:
        pytest.skip("no C compiler")

    def failing(command, **kwargs):
        if "--version" in command:
            return subprocess.CompletedProcess(command, 0, "cc 1.0\n", "")
        return subprocess.CompletedProcess(command, 1, "", "error: interrupted")

    monkeypatch.setattr(_native.subprocess, "run", failing)
    assert _native.disk_product_library() is None
    assert "could not build" in _native.native_status()
    assert list(fresh_state.iterdir()) == []


@pytest.mark.skipif(_native._compiler() is None, reason="no C compiler")
def test_library_is_built_once_into_the_cache(fresh_state, monkeypatch):
    lib = _native.disk_product_library()
    if lib is None:
        pytest.skip(_native.native_status())
    built = sorted(p.name for p in fresh_state.iterdir())
    assert len(built) == 1 and built[0].endswith(".so")
    assert str(fresh_state) in _native.native_status()
    assert lib.sp_vector_width() in (4, 8, 16)
    # A second process (here: a fresh decision) loads the cached file instead of compiling.
    monkeypatch.setattr(_native, "_STATE", [])
    monkeypatch.setattr(_native, "_build", lambda *args: pytest.fail("rebuilt a cached library"))
    assert _native.disk_product_library() is not None
    assert sorted(p.name for p in fresh_state.iterdir()) == built


@pytest.mark.skipif(_native._compiler() is None, reason="no C compiler")
def test_unwritable_cache_falls_back_to_the_temporary_directory(fresh_state, monkeypatch):
    blocked = fresh_state / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("SYMPRIOR_CACHE_DIR", str(blocked))
    temporary = fresh_state / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(_native.tempfile, "gettempdir", lambda: str(temporary))
    if _native.disk_product_library() is None:
        pytest.skip(_native.native_status())
    assert str(temporary) in _native.native_status()
    assert [p.suffix for p in (temporary / next(temporary.iterdir()).name).iterdir()] == [".so"]


def test_status_is_public():
    from symprior import nn

    assert nn.native_status() == _native.native_status()
