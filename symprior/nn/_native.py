r"""The compiled per-position products of the non-stationary layers (``_disk_product.c``).

On the CPU, the soft T(2) layer's kernels differ at every pixel, so its sums over the support
disk are batched matrix products over grid positions. torch sends those to the BLAS one disk
row at a time, with each row's kernels gathered again for the input gradient (BENCHMARKS.md).
``_disk_product.c`` does the forward sum and the input gradient in one pass over all rows, the
latter reading the forward's kernels where they lie. It is compiled at first use with the
system's C compiler (``$CC``, else ``cc``/``gcc``/``clang``; ``-O3 -march=native``, OpenMP when
the compiler has it) into a cache directory, and loaded with :mod:`ctypes`.

Nothing here is required: without a compiler, on other platforms, or with ``SYMPRIOR_NATIVE=0``
in the environment, :func:`disk_product_library` returns ``None`` and the layers use torch's
products (the same sums in another order: float32 rounding differs, nothing else).
:func:`native_status` says which and why.

The cache directory is ``$SYMPRIOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/symprior``, else
``~/.cache/symprior``; if it cannot be written, ``<tmp>/symprior-<uid>``. A library is named by a hash of the source, the compiler's version and
flags and the machine's CPU flags, written to a temporary name and renamed into place, so that
concurrent or interrupted builds never leave a partial library under the final name.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["disk_product_library", "native_status"]

_LOG = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("_disk_product.c")
_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
_LOCK = threading.Lock()
#: (library or None, status message), once decided.
_STATE: list[tuple[ctypes.CDLL | None, str]] = []


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _cache_dirs() -> list[Path]:
    r"""Where to keep the library: the cache directory, then (when that cannot be written, e.g.
    a read-only home) a per-user directory under the system's temporary directory."""
    root = os.environ.get("SYMPRIOR_CACHE_DIR")
    if root:
        first = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        first = (Path(xdg) if xdg else Path.home() / ".cache") / "symprior"
    user = os.getuid() if hasattr(os, "getuid") else 0
    return [first, Path(tempfile.gettempdir()) / f"symprior-{user}"]


def _version(compiler: str) -> str:
    done = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout


def _build(compiler: str, target: Path, openmp: bool) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, *_FLAGS, *(["-fopenmp"] if openmp else []), str(_SOURCE), "-o", tmp]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            _LOG.debug("compiling %s failed: %s", _SOURCE.name, done.stderr)
            return False
        os.replace(tmp, target)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.sp_vector_width.argtypes = []
    lib.sp_vector_width.restype = i32
    image = [i64, i64, i64, i32]  # pixels per image, width, row width; threads
    lib.sp_forward.argtypes = [ptr, ptr, ptr, i64, i32, i32, i32, i32, ptr, ptr, ptr, *image]
    lib.sp_forward.restype = i32
    lib.sp_adjoint.argtypes = [ptr, ptr, ptr, ptr, i64, i32, i32, i32, i32, ptr, ptr, ptr, *image]
    lib.sp_adjoint.restype = i32
    return lib


def _decide() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("SYMPRIOR_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None, "disabled by SYMPRIOR_NATIVE"
    if platform.system() != "Linux":
        return None, f"not built on {platform.system()} (Linux only)"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc, clang)"
    source = _SOURCE.read_bytes()
    try:
        version = _version(compiler)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{compiler} --version failed: {error}"
    for openmp in (True, False):
        key = hashlib.sha256()
        for part in (source, version.encode(), repr((_FLAGS, openmp)).encode()):
            key.update(part)
        key.update(_cpu_flags().encode())
        for directory in _cache_dirs():
            target = directory / f"disk_product-{key.hexdigest()[:20]}.so"
            try:
                if not target.exists() and not _build(compiler, target, openmp):
                    break  # the compiler refused: another directory will not help
                lib = _load(target)
            except (OSError, subprocess.SubprocessError) as error:
                _LOG.debug("native disk products unavailable at %s: %s", directory, error)
                continue
            threads = "OpenMP" if openmp else "one thread"
            return lib, f"compiled with {compiler} ({threads}) at {target}"
    return None, f"{compiler} could not build {_SOURCE.name}"


def _state() -> tuple[ctypes.CDLL | None, str]:
    with _LOCK:
        if not _STATE:
            _STATE.append(_decide())
        return _STATE[0]


def disk_product_library() -> ctypes.CDLL | None:
    r"""The loaded library of ``_disk_product.c``, compiled on first call; ``None`` when it
    cannot be had (:func:`native_status` says why)."""
    return _state()[0]


def native_status() -> str:
    r"""Whether the compiled disk products are in use, and where from or why not."""
    return _state()[1]
