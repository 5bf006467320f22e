r"""Shared pieces of the embedded datasets: the result container and argument checks.

Every dataset function returns a frozen dataclass derived from :class:`SupervisedData`. By
convention *every* tensor field is per sample (leading axis = sample), so the container can be
indexed, split and moved as a whole; scalars (the ground-truth epsilon, step sizes, ...) are plain
Python fields. Data are simulated in float64 and cast to the requested ``dtype`` at the end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Self

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

__all__ = ["SupervisedData"]


@dataclasses.dataclass(frozen=True, eq=False)
class SupervisedData:
    r"""Inputs ``x`` ``(N, ...)`` and targets ``y`` ``(N, ...)`` plus per-dataset metadata.

    Unpacks as ``x, y = data``; :meth:`dataset` gives a :class:`~torch.utils.data.TensorDataset`.
    """

    x: Tensor
    y: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.x, self.y))

    @property
    def num_samples(self) -> int:
        """``N``, the length of the leading axis."""
        return int(self.x.shape[0])

    def dataset(self) -> TensorDataset:
        """A :class:`~torch.utils.data.TensorDataset` of ``(x, y)``."""
        return TensorDataset(self.x, self.y)

    def _tensor_fields(self) -> list[str]:
        return [
            f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), Tensor)
        ]

    def subset(self, index: Tensor | slice) -> Self:
        """The samples selected by ``index`` (a slice, an index tensor or a boolean mask)."""
        if not isinstance(index, Tensor | slice):
            raise TypeError(f"index must be a slice or a Tensor, got {type(index).__name__}")
        changes = {name: getattr(self, name)[index] for name in self._tensor_fields()}
        return dataclasses.replace(self, **changes)

    def split(
        self, train_fraction: float = 0.9, *, shuffle: bool = False, seed: int = 0
    ) -> tuple[Self, Self]:
        """``(train, test)`` with ``round(train_fraction * N)`` training samples.

        Without ``shuffle`` the split keeps the order (the chronological split of a time series,
        000 sec. 5.2); with it the order is a permutation drawn from ``seed``.
        """
        if not isinstance(train_fraction, int | float) or not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
        n = self.num_samples
        n_train = round(train_fraction * n)
        if shuffle:
            order = torch.randperm(n, generator=make_generator(seed), device="cpu")
        else:
            order = torch.arange(n)
        order = order.to(self.x.device)
        return self.subset(order[:n_train]), self.subset(order[n_train:])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Self:
        """A copy on ``device`` with floating-point fields cast to ``dtype`` (integers kept)."""
        if dtype is not None:
            check_dtype(dtype)
        changes = {}
        for name in self._tensor_fields():
            value: Tensor = getattr(self, name)
            target = dtype if dtype is not None and value.is_floating_point() else value.dtype
            changes[name] = value.to(device=device, dtype=target)
        return dataclasses.replace(self, **changes)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if it is a floating-point torch dtype."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def check_int(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_float(
    value: float, name: str, *, minimum: float | None = None, strict: bool = False
) -> float:
    """``value`` as a finite float, ``> minimum`` (``strict``) or ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
    return float(value)


def check_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    """``value`` as a pair ``(low, high)`` with ``0 < low <= high``."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low = check_float(value[0], f"{name}[0]", minimum=0.0, strict=True)
    high = check_float(value[1], f"{name}[1]", minimum=low)
    return low, high
