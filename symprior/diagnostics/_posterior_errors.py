r"""Posterior distribution of the equivariance errors E and E' (001 eq. 12-13)."""

from __future__ import annotations

import torch
from torch import Tensor

from symprior.diagnostics._draws import (
    check_generator,
    check_num_samples,
    check_posterior,
    draw_values,
    network_device,
    num_draws,
    posterior_draws,
)
from symprior.diagnostics._equivariance import equivariance_error, equivariance_error_pointwise
from symprior.groups import Group
from symprior.inference import Posterior
from symprior.inference._posterior import evaluation
from symprior.nn.remul import Action

__all__ = ["posterior_equivariance_errors"]


def posterior_equivariance_errors(
    posterior: Posterior,
    x: Tensor,
    group: Group,
    rep_in: Action,
    rep_out: Action,
    *,
    num_samples: int = 100,
    num_elements: int = 100,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    r"""Draws of :math:`E` (001 eq. 12) and :math:`E'` (001 eq. 13) under the posterior.

    For each posterior draw :math:`\theta_s` the network :math:`f_{\theta_s}` (relaxation
    parameters from the draw, other weights at their point estimates) is scored on ``x`` with
    :func:`equivariance_error` and :func:`equivariance_error_pointwise`. All draws share the same
    ``num_elements`` group elements (common random numbers), so the spread of the draws is the
    posterior's, not the Monte-Carlo noise of the group samples.

    Parameters
    ----------
    posterior : Posterior
        With its model attached; a point posterior gives one draw.
    x : Tensor
        Inputs ``(B, ...)``.
    group : Group
    rep_in, rep_out : Rep or callable
        Input and output actions (as in :func:`equivariance_error`).
    num_samples : int
        Posterior draws ``S``.
    num_elements : int
        Group elements ``M``.
    generator : torch.Generator, optional
        Source of the posterior draws and the group elements.

    Returns
    -------
    dict
        ``{"E": (S,), "E'": (S,)}`` float64 tensors, ready for
        :func:`plot_equivariance_errors`.
    """
    posterior = check_posterior(posterior)
    num_samples = check_num_samples(num_samples)
    num_elements = check_num_samples(num_elements, "num_elements")
    generator = check_generator(generator)
    if not isinstance(group, Group):
        raise TypeError(f"group must be a symprior.groups.Group, got {type(group).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    device = network_device(posterior)
    x = x.to(device)
    where = generator.device if generator is not None else device
    elements = group.sample(num_elements, generator, device=where).to(device)
    draws = posterior_draws(posterior, num_samples, generator)
    model = posterior.model
    errors: list[Tensor] = []
    pointwise: list[Tensor] = []
    with torch.no_grad(), evaluation(model.network):  # the function predictions use
        for i in range(num_draws(posterior, draws, num_samples)):
            values = draw_values(posterior, draws, i)

            def f(z: Tensor, values: dict[str, Tensor] = values) -> Tensor:
                return model.run(values, z)

            errors.append(equivariance_error(f, x, group, rep_in, rep_out, elements=elements))
            pointwise.append(
                equivariance_error_pointwise(f, x, group, rep_in, rep_out, elements=elements)
            )
    return {
        "E": torch.stack(errors).double().cpu(),
        "E'": torch.stack(pointwise).double().cpu(),
    }
