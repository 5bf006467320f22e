r"""Name -> dataset function, for configuration files and the command line."""

from __future__ import annotations

from collections.abc import Callable

from symprior.data._common import SupervisedData
from symprior.data.digits import rotated_digits, six_vs_nine
from symprior.data.nbody import nbody
from symprior.data.pendulum import pendulum
from symprior.data.power import power_rotation
from symprior.data.synthetic import synthetic

__all__ = ["DATASETS"]

#: Every embedded dataset by name; each function takes keyword options (``seed``, ``dtype``,
#: sizes) and returns a :class:`~symprior.data.SupervisedData`.
DATASETS: dict[str, Callable[..., SupervisedData]] = {
    "pendulum": pendulum,
    "nbody": nbody,
    "digits": rotated_digits,
    "six_vs_nine": six_vs_nine,
    "power_rotation": power_rotation,
    "synthetic": synthetic,
}
