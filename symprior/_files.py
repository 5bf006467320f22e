"""Writing files so that an interrupted run never leaves a half-written or missing one.

Every file the library writes (posteriors, checkpoints, run summaries) goes through
:func:`atomic_write`: the content goes to a temporary file in the destination's folder, is
flushed to disk, and then replaces the destination in one rename. A reader sees the old file or
the new one, never a mixture, and a crash mid-write leaves the old file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


def _umask() -> int:
    """The process's file-creation mask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, then put it back at once
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    r"""Call ``write`` on a binary handle whose content then replaces ``path`` atomically.

    The folder is created if needed. The file gets the permissions an ordinary ``open`` would
    give it (``0o666`` less the umask), or keeps those of the file it replaces; the temporary
    file, which ``mkstemp`` makes private, is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
