"""Rotated digits and the 6-vs-9 task (004 sec. 6.1 analogue) from scikit-learn's digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from symprior.data.digits import (
    digit_canvas,
    load_digit_images,
    rotate_images,
    rotated_digits,
    six_vs_nine,
)
from symprior.groups import transform_image

DT = torch.float64


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angles), torch.sin(angles)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def nearest_mean(images: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Index of the nearest class mean for images (N, ...) and means (K, ...)."""
    return torch.cdist(images.flatten(1), means.flatten(1)).argmin(dim=1)


def test_load_matches_sklearn() -> None:
    images, labels = load_digit_images()
    bunch = load_digits()
    torch.testing.assert_close(images, torch.as_tensor(bunch.images) / 16.0)
    assert torch.equal(labels, torch.as_tensor(bunch.target))
    images[0] = -1.0  # copies: the cache is untouched
    assert float(load_digit_images()[0].min()) == 0.0


def test_canvas_pads_and_resizes() -> None:
    images, _ = load_digit_images()
    padded = digit_canvas(images[:5], image_size=12, digit_size=8)
    torch.testing.assert_close(padded[:, 0, 2:10, 2:10], images[:5], rtol=0, atol=0)
    assert float(padded[:, :, :2].abs().sum() + padded[:, :, :, 10:].abs().sum()) == 0.0
    resized = digit_canvas(images[:5])  # 16 x 16 with a 12 x 12 digit
    ref = F.interpolate(images[:5, None], size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized[:, :, 2:14, 2:14], ref, rtol=0, atol=0)
    # Bilinear resizing keeps the grey-level range.
    assert 0.0 <= float(resized.min()) and float(resized.max()) <= 1.0


def test_rotated_digits_are_rot90_for_quarter_turns() -> None:
    data = rotated_digits(40, quarter_turns=True, seed=1, dtype=DT)
    k = torch.round(data.angles / (math.pi / 2)).long()
    assert set(k.tolist()) == {-1, 0, 1, 2}
    for i in range(40):
        assert torch.equal(data.x[i], torch.rot90(data.base[i], int(k[i]), dims=(-2, -1)))
    quarter = rotate_images(data.base, torch.full((40,), math.pi / 2, dtype=DT))
    assert torch.equal(quarter, torch.rot90(data.base, 1, dims=(-2, -1)))


def test_rotated_digits_match_transform_image_and_labels() -> None:
    data = rotated_digits(50, max_degrees=45.0, seed=2, dtype=DT)
    assert float(data.angles.abs().max()) <= math.radians(45.0)
    expected = transform_image(data.base, rotation_matrices(data.angles))
    torch.testing.assert_close(data.x, expected, rtol=0, atol=1e-12)
    images, labels = load_digit_images()
    assert torch.equal(data.y, labels[data.source_index])
    assert torch.equal(data.digits, data.y)
    torch.testing.assert_close(data.base, digit_canvas(images[data.source_index]))


def test_rotation_is_counter_clockwise() -> None:
    image = torch.zeros(1, 1, 9, 9, dtype=DT)
    image[0, 0, 4, 7] = 1.0  # point (x, y) = (3, 0)
    turned = rotate_images(image, torch.tensor([math.pi / 2], dtype=DT))
    assert float(turned[0, 0, 1, 4]) == 1.0  # point (0, 3): row 4 - 3
    assert float(turned.sum()) == 1.0


def test_default_covers_every_digit_once_with_full_circle() -> None:
    data = rotated_digits(image_size=8, digit_size=8, seed=0)
    assert data.num_samples == 1797 and data.x.dtype == torch.float32
    assert torch.equal(data.source_index.sort().values, torch.arange(1797))
    assert float(data.angles.min()) < -3.0 and float(data.angles.max()) > 3.0
    subset = rotated_digits(classes=[0, 1], image_size=8, digit_size=8, seed=0)
    assert set(subset.y.tolist()) == {0, 1} and subset.num_samples == 178 + 182


def test_six_vs_nine_rotated_sixes_label_flips_under_180() -> None:
    data = six_vs_nine(seed=3, dtype=DT)
    assert bool((data.digits == 6).all()) and data.num_samples == 181
    assert int(data.y.sum()) == 90  # exactly half flipped
    torch.testing.assert_close(data.angles, math.pi * data.y.to(DT))
    half_turn = torch.full((data.num_samples,), math.pi, dtype=DT)
    turned = rotate_images(data.x, half_turn)
    # A flipped sample turned back is exactly an upright 6, an upright one becomes a "9".
    flipped = data.y == 1
    assert torch.equal(turned[flipped], data.base[flipped])
    assert torch.equal(turned[~flipped], torch.rot90(data.base[~flipped], 2, dims=(-2, -1)))
    means = torch.stack([data.x[data.y == c].mean(0) for c in (0, 1)])
    assert bool((nearest_mean(data.x, means) == data.y).all())
    assert bool((nearest_mean(turned, means) == 1 - data.y).all())


def test_six_vs_nine_natural_nines_are_turned_sixes() -> None:
    data = six_vs_nine(source="sixes_and_nines", seed=4, dtype=DT)
    assert torch.equal(data.y, (data.digits == 9).long())
    assert data.num_samples == 181 + 180
    means = torch.stack([data.x[data.y == c].mean(0) for c in (0, 1)])
    turned = rotate_images(data.x, torch.full((data.num_samples,), math.pi, dtype=DT))
    flipped = (nearest_mean(turned, means) == 1 - data.y).to(DT)
    # Measured: 100% of the turned 6s are nearer the 9s, 97.8% of the turned 9s nearer the 6s.
    assert float(flipped[data.y == 0].mean()) == 1.0
    assert float(flipped[data.y == 1].mean()) > 0.95


def test_six_vs_nine_nuisance_rotation_range() -> None:
    data = six_vs_nine(300, max_degrees=30.0, seed=5, dtype=DT)
    nuisance = data.angles - math.pi * data.y.to(DT)
    assert float(nuisance.abs().max()) <= math.radians(30.0)
    torch.testing.assert_close(data.x, rotate_images(data.base, data.angles))
    for bad in (90.0, 120.0, -1.0):
        with pytest.raises(ValueError, match="max_degrees"):
            six_vs_nine(max_degrees=bad)
    with pytest.raises(ValueError, match="source"):
        six_vs_nine(source="eights")  # type: ignore[arg-type]
