r"""``symprior.fit``: one call from a network (or model) and data to a Posterior."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from symprior.inference._engine import Engine
from symprior.inference._posterior import Posterior
from symprior.models import Likelihood, SymmetryModel

__all__ = ["ENGINES", "fit", "make_engine"]


def _engines() -> dict[str, type[Engine]]:
    from symprior.inference._laplace import Laplace
    from symprior.inference._map import MAP
    from symprior.inference._svi import SVI

    return {"map": MAP, "svi": SVI, "laplace": Laplace}


#: Engine names accepted by :func:`fit`.
ENGINES = ("map", "svi", "laplace")


def make_engine(engine: str | Engine, **options: Any) -> Engine:
    r"""An engine from its name and options (an Engine instance is returned as is)."""
    if isinstance(engine, Engine):
        if options:
            raise TypeError("options go to the engine's constructor when an Engine is given")
        return engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} or an Engine, got {engine!r}")
    return _engines()[engine](**options)


def fit(
    net_or_model: nn.Module,
    data: Any,
    likelihood: Likelihood | None = None,
    engine: str | Engine = "map",
    *,
    priors: Mapping[str, Any] | None = None,
    weight_prior: Any = None,
    resume: bool = False,
    **options: Any,
) -> Posterior:
    r"""Fit the posterior over the relaxation parameters of a network.

    Parameters
    ----------
    net_or_model : nn.Module or SymmetryModel
        A network with relaxed layers (wrapped as ``SymmetryModel(net, likelihood, priors,
        weight_prior)``) or a ready :class:`~symprior.models.SymmetryModel`.
    data
        ``(x, y)`` tensors, a Dataset or a DataLoader.
    likelihood : Likelihood
        Required with a network, e.g. ``Gaussian()`` or ``Categorical()``.
    engine : {"map", "svi", "laplace"} or Engine
    priors, weight_prior
        As for :class:`~symprior.models.SymmetryModel` (only with a network).
    resume : bool
        Resume from ``checkpoint_dir`` if a checkpoint is there.
    **options
        Engine options (e.g. ``num_epochs``, ``lr``, ``batch_size``, ``device``, ``guide``).

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2, V
    >>> from symprior.models import Gaussian
    >>> from symprior.nn import RPPLinear
    >>> x = torch.randn(16, 2)
    >>> post = fit(RPPLinear(V(SO2()), V(SO2())), (x, x), Gaussian(0.1), num_epochs=3, progress=False)
    >>> sorted(post.mean())
    ['bias_residual', 'residual']
    """
    if isinstance(net_or_model, SymmetryModel):
        if likelihood is not None or priors is not None or weight_prior is not None:
            raise ValueError(
                "likelihood, priors and weight_prior belong to the SymmetryModel; pass a network "
                "to have fit build it"
            )
        model = net_or_model
    elif isinstance(net_or_model, nn.Module):
        if likelihood is None:
            raise ValueError(
                "fit(net, data) needs likelihood=..., e.g. Gaussian() or Categorical()"
            )
        model = SymmetryModel(net_or_model, likelihood, priors=priors, weight_prior=weight_prior)
    else:
        raise TypeError(
            f"net_or_model must be a torch.nn.Module or a SymmetryModel, got "
            f"{type(net_or_model).__name__}"
        )
    return make_engine(engine, **options).fit(model, data, resume=resume)
