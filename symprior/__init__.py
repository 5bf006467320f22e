r"""symprior: learned symmetry priors for approximately equivariant networks.

``symprior.fit`` and ``symprior.Posterior`` are loaded on first use, so importing
``symprior.groups`` or ``symprior.nn`` never imports Pyro.
"""

from typing import Any

__all__ = ["Posterior", "fit"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "fit":
        from symprior.inference._fit import fit

        return fit
    if name == "Posterior":
        from symprior.inference import Posterior

        return Posterior
    raise AttributeError(f"module 'symprior' has no attribute {name!r}")
