"""Tensors that outlive the call that made them: the library's caches.

Several objects keep tensors between calls: bases, row layouts, masks, DFT matrices, scratch
buffers, working-dtype copies. A cache may be filled by a call under ``torch.inference_mode``
(a first prediction, a validation pass) and then serve a training step. Inference tensors can be
neither written nor saved for backward outside inference mode, so every cache fills itself
under :func:`filling_cache` (or stores :func:`cacheable` copies of values computed in the
caller's mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["cacheable", "filling_cache", "has_storage"]


@contextlib.contextmanager
def filling_cache() -> Iterator[None]:
    r"""The mode in which to create cached tensors: normal (not inference) tensors, with no
    autograd history."""
    with torch.inference_mode(False), torch.no_grad():
        yield


def cacheable(tensor: Tensor) -> Tensor:
    r"""``tensor``, or a normal copy of it if it was made under ``torch.inference_mode``."""
    if not tensor.is_inference():
        return tensor
    with filling_cache():
        return tensor.clone()


def has_storage(value: Tensor) -> bool:
    """Whether ``value`` is a plain tensor, not a torch.func wrapper (that a cache must not keep)."""
    try:
        value.data_ptr()
    except RuntimeError:
        return False
    return True
