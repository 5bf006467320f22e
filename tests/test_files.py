"""Atomic writes: a file is replaced whole or not at all, with ordinary permissions."""

import os
import stat

import pytest
import torch

from symprior._files import atomic_write
from symprior.diagnostics._plots import _figure, _save
from symprior.inference._posterior import atomic_save


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_new_file_gets_the_permissions_of_an_ordinary_open(tmp_path, umask_027):
    path = tmp_path / "sub" / "dir" / "state.pt"
    atomic_save({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    with open(tmp_path / "plain", "wb"):
        pass
    assert _mode(path) == _mode(tmp_path / "plain") == 0o640  # 0o666 less the umask
    assert sorted(os.listdir(path.parent)) == ["state.pt"]


def test_replacing_keeps_the_old_permissions(tmp_path, umask_027):
    path = tmp_path / "out.json"
    atomic_write(path, lambda h: h.write(b"1"))
    os.chmod(path, 0o604)
    atomic_write(path, lambda h: h.write(b"2"))
    assert path.read_bytes() == b"2" and _mode(path) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "posterior.pt"
    atomic_save({"v": torch.ones(2)}, path)

    def fail(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt  # as when a run is stopped mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(2))
    assert os.listdir(tmp_path) == ["posterior.pt"]


def test_plots_are_written_atomically(tmp_path):
    fig = _figure(2, 2)
    _save(fig, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert os.listdir(tmp_path) == ["plot.png"]
