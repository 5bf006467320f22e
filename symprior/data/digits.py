r"""Rotated digits and the 6-vs-9 task, from scikit-learn's bundled 8x8 digits (no download).

Source: :func:`sklearn.datasets.load_digits` (1797 images of 8x8 pixels with grey levels 0-16,
about 180 per class, shipped inside scikit-learn). symprior scales them to :math:`[0, 1]`.

Canvas (a choice of symprior): rotating an 8x8 digit inside its own 8x8 frame cuts its corners
off and resamples it coarsely, so each digit is first resized bilinearly to
``digit_size x digit_size`` (default ``image_size - 2 * (image_size // 8)``, i.e. 12 for the
default ``image_size = 16``) and zero-padded to ``image_size x image_size``; rotations then act on
that canvas with :func:`~symprior.groups.transform_image` (about the image centre,
counter-clockwise for positive angles, exact for multiples of 90 degrees, bilinear otherwise).

Images have shape ``(N, 1, H, W)`` (one channel); angles are in radians.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from symprior.data._common import (
    SupervisedData,
    check_dtype,
    check_float,
    check_int,
    make_generator,
)
from symprior.groups import SO2, transform_image

__all__ = [
    "RotatedImageData",
    "digit_canvas",
    "load_digit_images",
    "rotate_images",
    "rotated_digits",
    "six_vs_nine",
]

SixVsNineSource = Literal["rotated_sixes", "sixes_and_nines"]
_SOURCES = ("rotated_sixes", "sixes_and_nines")


@dataclasses.dataclass(frozen=True, eq=False)
class RotatedImageData(SupervisedData):
    r"""Rotated images with their labels or regression targets.

    Attributes
    ----------
    x : Tensor
        ``(N, 1, H, W)`` rotated images, ``rotate_images(base, angles)``.
    y : Tensor
        Targets: class labels ``(N,)`` int64, or regression targets ``(N, 1)``.
    angles : Tensor
        ``(N,)`` rotation angles in radians (counter-clockwise).
    base : Tensor
        ``(N, 1, H, W)`` the unrotated images on the canvas.
    digits : Tensor
        ``(N,)`` int64, the scikit-learn class (0-9) of the source digit.
    source_index : Tensor
        ``(N,)`` int64, the index of the source digit in :func:`load_digit_images`.
    """

    angles: Tensor
    base: Tensor
    digits: Tensor
    source_index: Tensor


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def load_digit_images() -> tuple[Tensor, Tensor]:
    r"""scikit-learn's digits: images ``(1797, 8, 8)`` in :math:`[0, 1]` and labels ``(1797,)``.

    Images are float64, labels int64; returns fresh copies (the loaded arrays are cached).
    """
    images, labels = _load()
    return images.clone(), labels.clone()


def _check_sizes(image_size: int, digit_size: int | None) -> tuple[int, int]:
    check_int(image_size, "image_size", minimum=2)
    if digit_size is None:
        digit_size = image_size - 2 * (image_size // 8)
    check_int(digit_size, "digit_size", minimum=2)
    if digit_size > image_size or (image_size - digit_size) % 2:
        raise ValueError(
            f"digit_size must be <= image_size with an even difference (to centre the digit), "
            f"got digit_size={digit_size}, image_size={image_size}"
        )
    return image_size, digit_size


def digit_canvas(images: Tensor, image_size: int = 16, digit_size: int | None = None) -> Tensor:
    r"""Resize digits ``(N, h, w)`` bilinearly to ``digit_size`` and zero-pad to ``image_size``.

    Returns ``(N, 1, image_size, image_size)`` in the dtype of ``images`` (module docstring).
    """
    if not isinstance(images, Tensor) or images.ndim != 3 or not images.is_floating_point():
        raise ValueError("images must be a floating-point Tensor of shape (N, h, w)")
    image_size, digit_size = _check_sizes(image_size, digit_size)
    out = images[:, None]
    if out.shape[-2:] != (digit_size, digit_size):
        out = F.interpolate(
            out, size=(digit_size, digit_size), mode="bilinear", align_corners=False
        )
    pad = (image_size - digit_size) // 2
    return F.pad(out, (pad, pad, pad, pad))


def rotate_images(images: Tensor, angles: Tensor) -> Tensor:
    r"""Rotate each image ``(N, ..., H, W)`` counter-clockwise by its angle ``(N,)`` (radians).

    :math:`(R_\alpha f)(p) = f(R_\alpha^{-1} p)` with :math:`R_\alpha` =
    ``SO2().exp(alpha)``, through :func:`~symprior.groups.transform_image` (zero padding; exact,
    i.e. ``torch.rot90``, for multiples of 90 degrees).
    """
    if not isinstance(images, Tensor) or not isinstance(angles, Tensor):
        raise TypeError("images and angles must be torch.Tensors")
    if angles.ndim != 1 or images.ndim < 3 or images.shape[0] != angles.shape[0]:
        raise ValueError(
            f"angles must have shape (N,) matching images (N, ..., H, W), got angles "
            f"{tuple(angles.shape)} and images {tuple(images.shape)}"
        )
    g = SO2().exp(angles.detach().to(torch.float64)[:, None])
    return transform_image(images, g)


def _sample_indices(pool: Tensor, num: int | None, gen: torch.Generator) -> Tensor:
    """``num`` entries of ``pool`` in random order, cycling through permutations if needed."""
    if num is None:
        return pool[torch.randperm(pool.numel(), generator=gen)]
    rounds = math.ceil(num / pool.numel())
    perms = [pool[torch.randperm(pool.numel(), generator=gen)] for _ in range(rounds)]
    return torch.cat(perms)[:num]


def _check_num(num_samples: int | None) -> int | None:
    if num_samples is not None:
        check_int(num_samples, "num_samples")
    return num_samples


def _check_degrees(value: float, name: str, upper: float, *, inclusive: bool = True) -> float:
    value = check_float(value, name, minimum=0.0)
    if value > upper or (not inclusive and value == upper):
        bound = f"<= {upper}" if inclusive else f"< {upper}"
        raise ValueError(f"{name} must be {bound} degrees, got {value!r}")
    return value


def _uniform_angles(num: int, max_degrees: float, gen: torch.Generator) -> Tensor:
    u = torch.rand(num, generator=gen, dtype=torch.float64)
    return math.radians(max_degrees) * (2 * u - 1)


def _finish(
    base: Tensor, angles: Tensor, y: Tensor, index: Tensor, dtype: torch.dtype
) -> RotatedImageData:
    x = rotate_images(base, angles)
    target = y.to(dtype) if y.is_floating_point() else y
    return RotatedImageData(
        x=x.to(dtype),
        y=target,
        angles=angles.to(dtype),
        base=base.to(dtype),
        digits=_load()[1][index],
        source_index=index,
    )


def _class_pool(labels: Tensor, classes: Sequence[int] | None) -> Tensor:
    if classes is None:
        return torch.arange(labels.numel())
    wanted = list(classes)
    if not wanted or any(
        isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9 for c in wanted
    ):
        raise ValueError(f"classes must be a non-empty sequence of ints in 0..9, got {classes!r}")
    return torch.nonzero(torch.isin(labels, torch.tensor(wanted)))[:, 0]


def rotated_digits(
    num_samples: int | None = None,
    *,
    max_degrees: float | None = None,
    quarter_turns: bool = False,
    classes: Sequence[int] | None = None,
    image_size: int = 16,
    digit_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> RotatedImageData:
    r"""Randomly rotated digits, labels unchanged (the rotated-MNIST analogue of 000 sec. 5.1).

    Parameters
    ----------
    num_samples : int, optional
        ``N``; default: every digit of ``classes`` once. Larger ``N`` cycles through random
        permutations of the digits (each with a fresh angle).
    max_degrees : float, optional
        Angles are uniform in ``[-max_degrees, max_degrees]`` (default 180: the full circle).
    quarter_turns : bool
        Draw the angles uniformly from :math:`\{0°, 90°, 180°, -90°\}` instead (the group
        :math:`C_4`; exact rotations). Excludes ``max_degrees``.
    classes : sequence of int, optional
        Keep only these digit classes.
    image_size, digit_size : int
        Canvas and digit sizes (module docstring).
    seed : int
    dtype : torch.dtype

    Returns
    -------
    RotatedImageData
        ``x`` ``(N, 1, H, W)``, ``y`` = ``digits`` ``(N,)`` int64, ``angles`` ``(N,)``.

    Examples
    --------
    >>> data = rotated_digits(4, quarter_turns=True, image_size=8, digit_size=8)
    >>> tuple(data.x.shape), data.y.dtype
    ((4, 1, 8, 8), torch.int64)
    >>> k = torch.round(data.angles / (math.pi / 2)).long()
    >>> quarter = [torch.rot90(data.base[i], int(k[i]), (-2, -1)) for i in range(4)]
    >>> torch.equal(data.x, torch.stack(quarter))
    True
    """
    num = _check_num(num_samples)
    check_dtype(dtype)
    if not isinstance(quarter_turns, bool):
        raise TypeError(f"quarter_turns must be a bool, got {type(quarter_turns).__name__}")
    if quarter_turns and max_degrees is not None:
        raise ValueError("max_degrees cannot be combined with quarter_turns=True")
    degrees = 180.0 if max_degrees is None else _check_degrees(max_degrees, "max_degrees", 180.0)
    gen = make_generator(seed)
    images, labels = _load()
    index = _sample_indices(_class_pool(labels, classes), num, gen)
    base = digit_canvas(images[index], image_size, digit_size)
    if quarter_turns:
        k = torch.randint(-1, 3, (index.numel(),), generator=gen)
        angles = k.to(torch.float64) * (math.pi / 2)
    else:
        angles = _uniform_angles(index.numel(), degrees, gen)
    return _finish(base, angles, labels[index], index, dtype)


def six_vs_nine(
    num_samples: int | None = None,
    *,
    source: SixVsNineSource = "rotated_sixes",
    max_degrees: float = 0.0,
    image_size: int = 16,
    digit_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> RotatedImageData:
    r"""The 6-vs-9 task (analogue of MNIST6-180, 004 sec. 6.1): unsolvable under strict SO(2).

    ``"rotated_sixes"`` (004's construction): the 6s, exactly half of them rotated by 180
    degrees; label 1 ("a 9") for the rotated ones, so a 180-degree rotation flips every label.
    ``"sixes_and_nines"``: the natural 6s (label 0) and 9s (label 1) of the digits set, where a 9
    is approximately a 6 rotated by 180 degrees.

    On top, every image may be rotated by a nuisance angle uniform in
    ``[-max_degrees, max_degrees]``; ``max_degrees`` must stay below 90 (a choice of symprior;
    004 uses 0) so that the two classes occupy disjoint ranges of orientation and the label stays
    a function of the image.

    Parameters
    ----------
    num_samples : int, optional
        ``N``; default: every 6 (and 9) once.
    source : {"rotated_sixes", "sixes_and_nines"}
    max_degrees : float
        Nuisance rotation range, in ``[0, 90)`` degrees.
    image_size, digit_size, seed, dtype
        As in :func:`rotated_digits`.

    Returns
    -------
    RotatedImageData
        ``y`` ``(N,)`` int64 in {0, 1}; ``angles`` include the 180-degree flip; ``base`` are the
        unrotated source digits (class in ``digits``).
    """
    num = _check_num(num_samples)
    check_dtype(dtype)
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    degrees = _check_degrees(max_degrees, "max_degrees", 90.0, inclusive=False)
    gen = make_generator(seed)
    images, labels = _load()
    classes = [6] if source == "rotated_sixes" else [6, 9]
    index = _sample_indices(_class_pool(labels, classes), num, gen)
    n = index.numel()
    if source == "rotated_sixes":
        # Exactly half are flipped, as in MNIST6-180 ("half of the dataset rotated by 180°").
        flipped = torch.zeros(n, dtype=torch.int64)
        flipped[torch.randperm(n, generator=gen)[: n // 2]] = 1
        y = flipped
        angles = math.pi * flipped.to(torch.float64)
    else:
        y = (labels[index] == 9).to(torch.int64)
        angles = torch.zeros(n, dtype=torch.float64)
    angles = angles + _uniform_angles(n, degrees, gen)
    base = digit_canvas(images[index], image_size, digit_size)
    return _finish(base, angles, y, index, dtype)
