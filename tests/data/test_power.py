"""Rotation-magnitude regression (003 sec. 4.2 analogue)."""

from __future__ import annotations

import math

import pytest
import torch

from symprior.data.digits import digit_canvas, load_digit_images
from symprior.data.power import power_rotation
from symprior.groups import transform_image

DT = torch.float64


@pytest.mark.parametrize("max_degrees", [180.0, 30.0], ids=["full", "30deg"])
def test_images_are_base_rotated_by_target_angle(max_degrees: float) -> None:
    data = power_rotation(64, max_degrees=max_degrees, seed=1, dtype=DT)
    torch.testing.assert_close(data.y[:, 0], data.angles, rtol=0, atol=0)
    limit = math.radians(max_degrees)
    assert float(data.angles.abs().max()) <= limit
    assert float(data.angles.min()) < -0.7 * limit and float(data.angles.max()) > 0.7 * limit
    for i in range(0, 64, 7):
        c, s = math.cos(float(data.angles[i])), math.sin(float(data.angles[i]))
        g = torch.tensor([[c, -s], [s, c]], dtype=DT)
        torch.testing.assert_close(data.x[i], transform_image(data.base[i], g), rtol=0, atol=1e-12)
    images, _ = load_digit_images()
    torch.testing.assert_close(data.base, digit_canvas(images[data.source_index]))


def test_absolute_target_and_classes() -> None:
    signed = power_rotation(32, seed=2, classes=[3], dtype=DT)
    magnitude = power_rotation(32, seed=2, classes=[3], absolute=True, dtype=DT)
    torch.testing.assert_close(magnitude.y, signed.y.abs(), rtol=0, atol=0)
    torch.testing.assert_close(magnitude.x, signed.x, rtol=0, atol=0)
    assert bool((signed.digits == 3).all())


def test_angle_distribution_is_uniform() -> None:
    data = power_rotation(4000, image_size=8, digit_size=8, seed=3, dtype=DT)
    u = (data.angles + math.pi) / (2 * math.pi)
    # Mean and variance of U(0, 1): 1/2 and 1/12, within 4 standard errors.
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / 4000)
    assert abs(float(u.var()) - 1 / 12) < 4 * math.sqrt(1 / 180 / 4000)
