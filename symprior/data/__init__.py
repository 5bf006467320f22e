r"""Embedded datasets and simulators; nothing is downloaded.

Damped pendulum (000 sec. 5.2), N-body (001 app. C.2), rotated digits and the 6-vs-9 task from
scikit-learn's bundled digits (004 sec. 6.1 analogue), rotation-magnitude regression (003 sec. 4.2
analogue) and a synthetic task with a known symmetry-breaking strength. Every function is seeded
and returns a frozen dataclass of tensors (``x, y = data``; ``data.dataset()``).
"""

from symprior.data._common import SupervisedData
from symprior.data._registry import DATASETS
from symprior.data.digits import (
    RotatedImageData,
    digit_canvas,
    load_digit_images,
    rotate_images,
    rotated_digits,
    six_vs_nine,
)
from symprior.data.nbody import (
    IN_DISTRIBUTION_DEGREES,
    OUT_OF_DISTRIBUTION_DEGREES,
    NBodyData,
    nbody,
    nbody_rotations,
    rotate_nbody,
    simulate_nbody,
)
from symprior.data.pendulum import PendulumData, pendulum, pendulum_energy, simulate_pendulum
from symprior.data.power import power_rotation
from symprior.data.synthetic import SyntheticData, breaking_part, invariant_part, synthetic

__all__ = [
    "DATASETS",
    "IN_DISTRIBUTION_DEGREES",
    "OUT_OF_DISTRIBUTION_DEGREES",
    "NBodyData",
    "PendulumData",
    "RotatedImageData",
    "SupervisedData",
    "SyntheticData",
    "breaking_part",
    "digit_canvas",
    "invariant_part",
    "load_digit_images",
    "nbody",
    "nbody_rotations",
    "pendulum",
    "pendulum_energy",
    "power_rotation",
    "rotate_images",
    "rotate_nbody",
    "rotated_digits",
    "simulate_nbody",
    "simulate_pendulum",
    "six_vs_nine",
    "synthetic",
]
