r"""Turning user data into reproducible minibatch epochs on a device."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["Batches", "as_batches"]


class Batches:
    r"""Minibatches of ``(x, y)`` on a device, in an order fixed by ``(seed, epoch)``.

    Tensors and Datasets are batched here: epoch ``e`` visits a permutation drawn from a generator
    seeded with ``seed + e``, so a resumed run sees exactly the batches it would have seen.
    A DataLoader is iterated as given (its own sampler decides the order); the engines restore the
    global RNG state of the epoch start before re-iterating it on resume.
    """

    def __init__(
        self,
        x: Tensor | None,
        y: Tensor | None,
        *,
        loader: DataLoader | None = None,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        device: torch.device,
    ) -> None:
        self.x, self.y, self.loader = x, y, loader
        self.device = device
        self.seed = seed
        self.shuffle = shuffle
        if loader is not None:
            self.num_data = len(loader.dataset)  # type: ignore[arg-type]
            self.num_batches = len(loader)
            self.batch_size = loader.batch_size or 1
        else:
            assert x is not None
            self.num_data = int(x.shape[0])
            self.batch_size = self.num_data if batch_size is None else batch_size
            self.num_batches = -(-self.num_data // self.batch_size)

    @property
    def is_loader(self) -> bool:
        return self.loader is not None

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        r"""The batches of epoch ``epoch`` (0-based)."""
        if self.loader is not None:
            for batch in self.loader:
                x, y = _split(batch)
                yield _to(x, self.device), None if y is None else _to(y, self.device)
            return
        assert self.x is not None
        if self.shuffle and self.num_batches > 1:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_data, generator=gen).to(self.x.device)
        else:
            order = torch.arange(self.num_data, device=self.x.device)
        for idx in order.split(self.batch_size):
            yield self.x[idx], None if self.y is None else self.y[idx]

    def full(self) -> tuple[Tensor, Tensor | None]:
        r"""All data as tensors on the device (concatenating a loader's batches)."""
        if self.loader is None:
            assert self.x is not None
            return self.x, self.y
        xs, ys = [], []
        for batch in self.loader:
            x, y = _split(batch)
            xs.append(x)
            if y is not None:
                ys.append(y)
        return _to(torch.cat(xs), self.device), (_to(torch.cat(ys), self.device) if ys else None)


def _split(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, list | tuple) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, list | tuple) and len(batch) == 1:
        return batch[0], None
    raise TypeError(
        "data batches must be (x, y) pairs or single tensors x, got "
        f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}"
    )


def _to(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device, non_blocking=True)


def _check_finite(t: Tensor, name: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(-1).nonzero()[0, 0])
        raise ValueError(f"data: {name} contains NaN or inf (first at index {bad})")


def as_batches(
    data: Any,
    *,
    batch_size: int | None,
    seed: int,
    device: torch.device,
    shuffle: bool = True,
) -> Batches:
    r"""Wrap ``data`` — ``(x, y)`` tensors, ``x`` alone, a Dataset or a DataLoader — as batches.

    Tensors and Datasets are moved to ``device`` once and checked for NaN/inf.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    if isinstance(data, DataLoader):
        if batch_size is not None:
            raise ValueError("batch_size is set by the DataLoader; leave batch_size=None")
        return Batches(None, None, loader=data, seed=seed, device=device)
    if isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        pairs = [_split(item) for item in items]
        x = torch.stack([p[0] for p in pairs])
        y = None if pairs[0][1] is None else torch.stack([torch.as_tensor(p[1]) for p in pairs])
    elif isinstance(data, Tensor):
        x, y = data, None
    elif isinstance(data, list | tuple) and len(data) == 2:
        x, y = data
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError("data=(x, y) must hold two tensors")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"data: x and y must have the same number of rows, got {x.shape[0]} and "
                f"{y.shape[0]}"
            )
    else:
        raise TypeError(
            "data must be (x, y) tensors, a tensor x, a torch Dataset or a DataLoader, got "
            f"{type(data).__name__}"
        )
    if x.shape[0] == 0:
        raise ValueError("data is empty")
    _check_finite(x, "x")
    if y is not None:
        _check_finite(y, "y")
    return Batches(
        x.to(device),
        None if y is None else y.to(device),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        device=device,
    )
