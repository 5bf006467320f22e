r"""Priors of the non-stationary filter family (004, sec. 6.3 and app. B.2).

004 app. B.2 reads the symmetry regulariser :math:`\lambda\|\omega'\|_2^2` as the MAP term of the
Gaussian prior :math:`N(\omega' \mid 0, \frac{1}{2\lambda} I)`; large :math:`\lambda` means strict
equivariance. The default :math:`\lambda = 0.1` is among the best settings of 004 Table 2.
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist

from symprior.priors._base import Hyperparameter, Prior

__all__ = ["DEFAULT_LAM", "FrequencyPrior"]

#: 004 Table 2 reports lam in {0.1, 0.5} among the best for every soft setting.
DEFAULT_LAM = 0.1


class FrequencyPrior(Prior):
    r"""Gaussian prior :math:`N(\omega' \mid 0, \frac{1}{2\lambda} I)` on ``omega_prime``.

    :math:`-\log p(\omega') = \lambda\|\omega'\|^2 + \frac{k}{2}\log(\pi/\lambda)` for ``k``
    entries (004 app. B.2).

    Parameters
    ----------
    lam : float or Distribution
        The precision-like :math:`\lambda > 0`; a distribution makes a hierarchical prior with the
        site ``"lam"`` (shared) or ``"<parameter>:lam"`` (``shared=False``).
    shared : bool

    Examples
    --------
    >>> import torch
    >>> p = FrequencyPrior(lam=0.5)
    >>> w = torch.tensor([1.0, 2.0])
    >>> round(float(-p.distribution("omega_prime", w).log_prob(w)), 4)  # 0.5*5 + log(2 pi)
    4.3379
    """

    def __init__(self, lam: Any = DEFAULT_LAM, *, shared: bool = True) -> None:
        self.lam = Hyperparameter(lam, "lam", shared=shared)

    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        return (self.lam,)

    def distribution(self, name, param, relaxation=None, cache=None):
        lam = self.lam.resolve(name, cache, dtype=param.dtype, device=param.device)
        scale = (1.0 / (2.0 * lam)).sqrt()
        base = dist.Normal(param.new_zeros(param.shape), scale.expand(param.shape))
        return base.to_event(param.ndim) if param.ndim else base

    def __repr__(self) -> str:
        return f"FrequencyPrior({self.lam!r})"
