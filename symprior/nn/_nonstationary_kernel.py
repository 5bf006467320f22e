r"""The continuous non-stationary kernel of 004 sec. 4.2: random Fourier features and a small net.

A kernel :math:`k_\theta(v^{-1}u, v)` is written in Lie-algebra coordinates
:math:`\hat k(a, b)` with :math:`a` the coordinates of the stationary component :math:`v^{-1}u`
("filter space") and :math:`b` those of the absolute element :math:`v` ("domain space"),

.. math::

    \gamma_\omega(a) = \sqrt{1/D}\begin{bmatrix}\cos(2\pi W(a \odot \omega)) \\
        \sin(2\pi W(a \odot \omega))\end{bmatrix}, \qquad
    \hat k(a, b) = \mathrm{NN}_\theta\Big(\begin{bmatrix}\gamma_\omega(a) \\
        \gamma_{\omega'}(b)\end{bmatrix}\Big)  \qquad \text{(004 eq. 7-8)}.

``W`` is fixed and random (a buffer), ``omega`` is learnable, ``omega_prime`` belongs to the layer
that owns the kernel (it is the relaxation parameter priors act on) and is passed in. A zero
frequency makes the features constant, :math:`\gamma_0 = [1, \dots, 1, 0, \dots, 0]/\sqrt{D}`, so
:math:`\omega' = 0` removes every dependence on :math:`b` exactly (004 Remark 2) and
:math:`\omega = \omega' = 0` gives a constant kernel (Remark 3).

Angles. A rotation coordinate :math:`t = \theta / 2\pi` (turns) enters the features as the point
:math:`(\cos 2\pi t, \sin 2\pi t) / 2\pi` of the circle of circumference one, both components
scaled by the angle's one frequency. To first order this is the Lie-algebra coordinate
:math:`t` itself, but the features are smooth and periodic on SO(2) for *every* frequency.
004 sec. 5 gets smoothness by making :math:`\omega_r`, :math:`\omega'_r` and their columns of
``W`` integers; integers do not survive learning :math:`\omega'` by gradient or drawing it from
a prior, and the principal-branch cut of a non-integer frequency would make the error of a
relaxed layer jump with :math:`\omega'` instead of growing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["NonStationaryKernelConfig", "RandomFourierKernel", "embed_coordinates"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


@dataclass(frozen=True)
class NonStationaryKernelConfig:
    r"""Options of the continuous kernel shared by every non-stationary layer.

    Attributes
    ----------
    num_features : int
        ``D``, the number of random Fourier frequencies per space (004 eq. 7); each space gives
        ``2 D`` features.
    hidden : int
        Width of the cosine hidden layer of :math:`\mathrm{NN}_\theta` (004 app. A.2 uses 32).
    omega_init : float
        Initial filter-space frequency, every component of ``omega``.
    omega_prime_init : float
        Initial domain-space frequency, every relaxed component of ``omega_prime``; 0 (the
        default) starts at the strict group convolution.
    domain_scale : float or None
        Pixels per unit of the domain-space translation coordinates; ``None`` uses the input's
        larger side, ``max(H, W)``, so positions lie in ``[-1/2, 1/2]`` like the angles (in
        turns) and ``|omega_prime| = 1`` lets the kernel vary over about one period across the
        image.
    """

    num_features: int = 32
    hidden: int = 32
    omega_init: float = 1.0
    omega_prime_init: float = 0.0
    domain_scale: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self.num_features, "num_features")
        _positive_int(self.hidden, "hidden")
        _real(self.omega_init, "omega_init")
        _real(self.omega_prime_init, "omega_prime_init")
        if self.domain_scale is not None and not _real(self.domain_scale, "domain_scale") > 0:
            raise ValueError(f"domain_scale must be positive or None, got {self.domain_scale}")


def _check_dims(dims: Sequence[int], dim: int, name: str) -> tuple[int, ...]:
    out = tuple(dims)
    for j in out:
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < dim:
            raise ValueError(f"{name} must hold coordinate indices in [0, {dim}), got {out}")
    return out


def _frequency_index(dim: int, angular: tuple[int, ...]) -> Tensor:
    """For each embedded coordinate, the coordinate (and frequency) it comes from."""
    return torch.tensor([j for j in range(dim) for _ in range(2 if j in angular else 1)])


def embed_coordinates(coords: Tensor, angular: Sequence[int]) -> Tensor:
    r"""Coordinates ``(..., d)`` with angles (in turns) at ``angular`` replaced by
    :math:`(\cos 2\pi t, \sin 2\pi t) / 2\pi` (module docstring)."""
    parts = []
    for j in range(coords.shape[-1]):
        c = coords[..., j : j + 1]
        if j in angular:
            turn = 2 * math.pi * c
            parts += [torch.cos(turn) / (2 * math.pi), torch.sin(turn) / (2 * math.pi)]
        else:
            parts.append(c)
    return torch.cat(parts, -1)


class RandomFourierKernel(nn.Module):
    r"""Continuous kernel :math:`\hat k(a, b) = \mathrm{NN}_\theta([\gamma_\omega(a);
    \gamma_{\omega'}(b)])` on filter and domain coordinates (004 eq. 7-8).

    :math:`\mathrm{NN}_\theta` is ``Linear(4D, hidden) -> cos -> Linear(hidden, out_features)``,
    the shallow cosine network of 004 app. A.2 with the random Fourier features as its first
    layer. Its first linear map is stored as two blocks acting on the filter and the domain
    features, so a layer can evaluate each block once per distinct coordinate and add them
    (:meth:`filter_preactivation` + :meth:`domain_preactivation`, then :meth:`head`).

    Parameters
    ----------
    filter_dim, domain_dim : int
        Number of filter-space and domain-space coordinates (one frequency each).
    out_features : int
        Size of the kernel value (``in_channels * out_channels`` for a layer).
    num_features : int
        ``D``: rows of the fixed random matrices ``W`` (``filter_basis``, ``domain_basis``).
    hidden : int
        Width of the cosine hidden layer.
    omega_init : float
        Initial value of every component of ``omega``.
    angular_filter, angular_domain : sequence of int
        Coordinates that are angles in turns; they are embedded on the circle (module
        docstring), so ``W`` has one more column per angle.
    fan_in : float
        The number of terms each kernel value is summed over in the owning layer (divided by
        any normalisation): the output layer is initialised so kernel values have variance
        about ``1 / fan_in``.

    Attributes
    ----------
    omega : Parameter
        ``(filter_dim,)`` filter-space frequencies.
    filter_basis, domain_basis : Tensor
        Buffers ``(D, filter_dim + #angles)`` and ``(D, domain_dim + #angles)``: the fixed
        random ``W`` with :math:`N(0, 1)` entries.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> kernel = RandomFourierKernel(2, 2, out_features=3)
    >>> a, b = torch.randn(5, 2), torch.randn(5, 2)
    >>> torch.allclose(kernel(a, b), kernel(a, torch.zeros(5, 2)))  # omega' = 0: no b
    True
    >>> kernel(a, b, torch.tensor([0.5, 0.5])).shape
    torch.Size([5, 3])
    """

    filter_basis: Tensor
    domain_basis: Tensor
    filter_expand: Tensor
    domain_expand: Tensor

    def __init__(
        self,
        filter_dim: int,
        domain_dim: int,
        out_features: int,
        *,
        num_features: int = 32,
        hidden: int = 32,
        omega_init: float = 1.0,
        angular_filter: Sequence[int] = (),
        angular_domain: Sequence[int] = (),
        fan_in: float = 1.0,
    ) -> None:
        super().__init__()
        self.filter_dim = _positive_int(filter_dim, "filter_dim")
        self.domain_dim = _positive_int(domain_dim, "domain_dim")
        self.out_features = _positive_int(out_features, "out_features")
        self.num_features = _positive_int(num_features, "num_features")
        self.hidden = _positive_int(hidden, "hidden")
        if not _real(fan_in, "fan_in") > 0:
            raise ValueError(f"fan_in must be positive, got {fan_in}")
        self.angular_filter = _check_dims(angular_filter, filter_dim, "angular_filter")
        self.angular_domain = _check_dims(angular_domain, domain_dim, "angular_domain")
        filter_index = _frequency_index(filter_dim, self.angular_filter)
        domain_index = _frequency_index(domain_dim, self.angular_domain)
        # frequencies = omega @ expand: one product whose backward is one product (indexing
        # omega with repeated indices has an accumulating, on CUDA sorting, backward).
        for name, index, dim in (
            ("filter_expand", filter_index, filter_dim),
            ("domain_expand", domain_index, domain_dim),
        ):
            expand = torch.zeros(dim, len(index))
            expand[index, torch.arange(len(index))] = 1.0
            self.register_buffer(name, expand, persistent=False)
        self.register_buffer("filter_basis", torch.randn(num_features, len(filter_index)))
        self.register_buffer("domain_basis", torch.randn(num_features, len(domain_index)))
        self.omega = nn.Parameter(torch.full((filter_dim,), _real(omega_init, "omega_init")))
        self.filter_layer = nn.Linear(2 * num_features, hidden)
        self.domain_layer = nn.Linear(2 * num_features, hidden, bias=False)
        self.output_layer = nn.Linear(hidden, out_features)
        with torch.no_grad():
            # Unit-variance pre-activations and random phases make cos(.) a rich basis (SIREN's
            # argument); the output scale gives kernel values of variance ~ 1 / fan_in.
            self.filter_layer.weight.normal_()
            self.filter_layer.bias.uniform_(-math.pi, math.pi)
            self.domain_layer.weight.normal_()
            self.output_layer.weight.normal_(0.0, math.sqrt(2.0 / (hidden * fan_in)))
            self.output_layer.bias.zero_()

    @staticmethod
    def fourier_features(coords: Tensor, frequencies: Tensor, basis: Tensor) -> Tensor:
        r""":math:`\gamma_\omega(a)` ``(..., 2D)`` for embedded coordinates ``(..., e)``,
        frequencies ``(e,)`` and ``W`` ``(D, e)`` (004 eq. 7)."""
        phase = (2 * math.pi) * (coords * frequencies) @ basis.T
        scale = 1.0 / math.sqrt(basis.shape[0])
        return torch.cat([torch.cos(phase), torch.sin(phase)], -1) * scale

    def _check_coords(self, coords: Tensor, dim: int, name: str) -> None:
        if not isinstance(coords, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(coords).__name__}")
        if coords.ndim < 1 or coords.shape[-1] != dim:
            raise ValueError(f"{name} must have shape (..., {dim}), got {tuple(coords.shape)}")

    def filter_preactivation(self, filter_coords: Tensor) -> Tensor:
        r"""Filter block of the first layer plus its bias, ``(..., hidden)``."""
        self._check_coords(filter_coords, self.filter_dim, "filter_coords")
        coords = embed_coordinates(filter_coords, self.angular_filter)
        frequencies = self.omega @ self.filter_expand.to(self.omega)
        return self.filter_layer(self.fourier_features(coords, frequencies, self.filter_basis))

    def domain_preactivation(self, domain_coords: Tensor, omega_prime: Tensor | None) -> Tensor:
        r"""Domain block of the first layer, ``(..., hidden)``; ``omega_prime=None`` means 0."""
        self._check_coords(domain_coords, self.domain_dim, "domain_coords")
        if omega_prime is None:
            omega_prime = domain_coords.new_zeros(self.domain_dim)
        elif omega_prime.shape != (self.domain_dim,):
            raise ValueError(
                f"omega_prime must have shape ({self.domain_dim},), got {tuple(omega_prime.shape)}"
            )
        coords = embed_coordinates(domain_coords, self.angular_domain)
        frequencies = omega_prime @ self.domain_expand.to(omega_prime)
        return self.domain_layer(self.fourier_features(coords, frequencies, self.domain_basis))

    @staticmethod
    def hidden_features(preactivation: Tensor) -> Tensor:
        r"""The cosine hidden layer, ``(..., hidden) -> (..., hidden)``.

        The rest of the network, :meth:`head`, is ``output_layer`` applied to these features: the
        kernel is *linear* in them, which the per-position layers use to build kernels block by
        block. Their fast products evaluate the cosine and its derivative themselves; the
        gathered reference they are tested against calls this method.
        """
        return torch.cos(preactivation)

    def head(self, preactivation: Tensor) -> Tensor:
        r"""The rest of the network, ``(..., hidden) -> (..., out_features)``."""
        return self.output_layer(self.hidden_features(preactivation))

    def forward(
        self, filter_coords: Tensor, domain_coords: Tensor, omega_prime: Tensor | None = None
    ) -> Tensor:
        r"""Kernel values ``(..., out_features)``.

        Parameters
        ----------
        filter_coords : Tensor
            ``(..., filter_dim)`` coordinates :math:`a` of :math:`v^{-1}u`.
        domain_coords : Tensor
            ``(..., domain_dim)`` coordinates :math:`b` of :math:`v`; broadcast against
            ``filter_coords``.
        omega_prime : Tensor, optional
            ``(domain_dim,)`` domain-space frequencies; ``None`` means zero (stationary kernel).
        """
        pre = self.filter_preactivation(filter_coords)
        return self.head(pre + self.domain_preactivation(domain_coords, omega_prime))
