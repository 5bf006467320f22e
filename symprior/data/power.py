r"""Rotation-magnitude regression, the analogue of PowerNet's rotated-MNIST task (003 sec. 4.2).

003 sec. 4.2 trains PowerNets with rotation, scaling or shift base matrices on rotated MNIST "to
predict the transformation magnitude, in this case, the rotation angle", and reports the test MSE
on the angle in radians (0.949 with the rotation base matrix against about 1.46 with scale or
shift). Here the images are scikit-learn's digits on a padded canvas (:mod:`symprior.data.digits`)
and the target is the rotation angle in radians: the magnitude :math:`t` of the one-parameter group
element :math:`\exp(tG)` with :math:`G` the rotation generator, as 003 uses the word.

Choices of symprior (003 is silent): angles uniform in ``[-max_degrees, max_degrees]`` with
``max_degrees = 180`` (rotated MNIST is rotated over the full circle); ``absolute=True`` regresses
:math:`|t|` instead of the signed angle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from symprior.data._common import check_dtype, check_int, make_generator
from symprior.data.digits import (
    RotatedImageData,
    _check_degrees,
    _class_pool,
    _finish,
    _load,
    _sample_indices,
    _uniform_angles,
    digit_canvas,
)

__all__ = ["power_rotation"]


def power_rotation(
    num_samples: int = 1024,
    *,
    max_degrees: float = 180.0,
    absolute: bool = False,
    classes: Sequence[int] | None = None,
    image_size: int = 16,
    digit_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> RotatedImageData:
    r"""Digits rotated by a random angle; the target is the angle (003 sec. 4.2 analogue).

    Parameters
    ----------
    num_samples : int
        ``N``; digits are drawn by cycling through random permutations of the pool.
    max_degrees : float
        Angles uniform in ``[-max_degrees, max_degrees]``, at most 180.
    absolute : bool
        Regress :math:`|\alpha|` instead of :math:`\alpha`.
    classes : sequence of int, optional
        Digit classes to draw from (default all ten).
    image_size, digit_size, seed, dtype
        As in :func:`~symprior.data.digits.rotated_digits`.

    Returns
    -------
    RotatedImageData
        ``x`` ``(N, 1, H, W)`` = ``rotate_images(base, angles)``, ``y`` ``(N, 1)`` the angle (or
        its magnitude) in radians, ``angles`` ``(N,)``, ``digits`` ``(N,)`` the digit classes.

    Examples
    --------
    >>> data = power_rotation(16)
    >>> tuple(data.x.shape), tuple(data.y.shape)
    ((16, 1, 16, 16), (16, 1))
    >>> bool(torch.equal(data.y[:, 0], data.angles))
    True
    """
    check_int(num_samples, "num_samples")
    check_dtype(dtype)
    degrees = _check_degrees(max_degrees, "max_degrees", 180.0)
    if not isinstance(absolute, bool):
        raise TypeError(f"absolute must be a bool, got {type(absolute).__name__}")
    gen = make_generator(seed)
    images, labels = _load()
    index = _sample_indices(_class_pool(labels, classes), num_samples, gen)
    angles = _uniform_angles(index.numel(), degrees, gen)
    target = angles.abs() if absolute else angles
    base = digit_canvas(images[index], image_size, digit_size)
    return _finish(base, angles, target[:, None], index, dtype)
