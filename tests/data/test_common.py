"""Registry, seeding, dtypes, argument checks and the result container, for every dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from symprior.data import DATASETS, SupervisedData

DT = torch.float64

#: Tiny settings per dataset (pendulum gets noise so that the seed matters).
TINY: dict[str, dict[str, Any]] = {
    "pendulum": {"num_steps": 50, "noise_std": 0.1},
    "nbody": {"num_samples": 6},
    "digits": {"num_samples": 6, "image_size": 8, "digit_size": 8},
    "six_vs_nine": {"num_samples": 6, "max_degrees": 20.0},
    "power_rotation": {"num_samples": 6, "image_size": 8, "digit_size": 8},
    "synthetic": {"num_samples": 6, "noise_std": 0.1},
}
NAMES = sorted(TINY)


def tensors(data: SupervisedData) -> dict[str, Tensor]:
    return {name: getattr(data, name) for name in data._tensor_fields()}


def test_registry_names() -> None:
    assert sorted(DATASETS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_other_seed_other_data(name: str) -> None:
    make: Callable[..., SupervisedData] = DATASETS[name]
    a, b = make(seed=1, **TINY[name]), make(seed=1, **TINY[name])
    c = make(seed=2, **TINY[name])
    for field, value in tensors(a).items():
        assert torch.equal(value, getattr(b, field)), field
    assert not torch.equal(a.x, c.x) or not torch.equal(a.y, c.y)


@pytest.mark.parametrize("name", NAMES)
def test_dtypes_and_container(name: str) -> None:
    data = DATASETS[name](seed=0, **TINY[name])
    for field, value in tensors(data).items():
        assert value.shape[0] == data.num_samples, field
        if value.is_floating_point():
            assert value.dtype == torch.float32, field
    wide = DATASETS[name](seed=0, dtype=DT, **TINY[name])
    assert wide.x.dtype == DT
    torch.testing.assert_close(wide.x.float(), data.x, rtol=1e-6, atol=1e-6)
    x, y = data
    assert x is data.x and y is data.y
    dataset = data.dataset()
    assert len(dataset) == data.num_samples
    assert torch.equal(dataset[2][0], data.x[2]) and torch.equal(dataset[2][1], data.y[2])
    train, test = data.split(0.5, shuffle=True, seed=3)
    assert train.num_samples + test.num_samples == data.num_samples
    merged = torch.cat([train.x, test.x]).flatten(1)
    assert torch.equal(merged.sort(0).values, data.x.flatten(1).sort(0).values)
    cast = data.to(dtype=DT)
    assert cast.x.dtype == DT and cast.x.data_ptr() != data.x.data_ptr()
    if not data.y.is_floating_point():
        assert cast.y.dtype == torch.int64


BAD_ARGUMENTS = [
    ("pendulum", {"num_steps": 0}, "num_steps"),
    ("pendulum", {"dt": -0.1}, "dt"),
    ("pendulum", {"damping": -1.0}, "damping"),
    ("pendulum", {"length": 0.0}, "length"),
    ("pendulum", {"noise_std": -0.5}, "noise_std"),
    ("nbody", {"num_samples": 0}, "num_samples"),
    ("nbody", {"rotation": "upside_down"}, "rotation"),
    ("nbody", {"num_bodies": 1}, "num_bodies"),
    ("nbody", {"star_mass": (5.0, 1.0)}, "star_mass"),
    ("nbody", {"radius": (0.0, 1.0)}, "radius"),
    ("digits", {"num_samples": -3}, "num_samples"),
    ("digits", {"max_degrees": 200.0}, "max_degrees"),
    ("digits", {"quarter_turns": True, "max_degrees": 10.0}, "max_degrees"),
    ("digits", {"image_size": 16, "digit_size": 11}, "digit_size"),
    ("digits", {"classes": [10]}, "classes"),
    ("six_vs_nine", {"max_degrees": 90.0}, "max_degrees"),
    ("power_rotation", {"max_degrees": -5.0}, "max_degrees"),
    ("power_rotation", {"num_samples": 2.5}, "num_samples"),
    ("synthetic", {"epsilon": -0.1}, "epsilon"),
    ("synthetic", {"breaking": "cubic"}, "breaking"),
    ("synthetic", {"seed": -1}, "seed"),
    ("synthetic", {"noise_std": float("nan")}, "noise_std"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    BAD_ARGUMENTS,
    ids=[f"{n}-{a}-{i}" for i, (n, _, a) in enumerate(BAD_ARGUMENTS)],
)
def test_bad_arguments_raise_value_error_naming_them(
    name: str, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        DATASETS[name](**kwargs)


def test_bad_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="dtype"):
        DATASETS["synthetic"](dtype=torch.int64)
