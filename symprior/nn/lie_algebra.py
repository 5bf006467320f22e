r"""Lie-algebra convolutions (000, McNeela 2023): group convolutions over sampled algebra elements.

A Lie-algebra convolution (000 Def. 4.2) integrates a kernel over Lie-algebra elements
:math:`x = \sum_k c_k A_k` drawn with respect to the Lebesgue measure on the algebra (000 sec.
4.3), mapped to matrices by a learned network :math:`\mathcal{N}_\theta : \mathfrak{g} \to
\mathbb{R}^{n \times n}` instead of the exponential map. Because the measure lives on the algebra,
the construction is defined for non-compact groups too (000 sec. 4.2).

symprior writes the learned map as the exponential plus a residual,
:math:`\mathcal{N}_\theta(x) = \exp(x) + R_\theta(x)`, whose output layer starts at zero, and draws
the coefficients from a uniform distribution with a learnable width per generator,
:math:`c_k \in [-w_k, w_k]` (the reparameterised uniform of Romero and Lohit, 000 sec. 2). Both
are relaxation parameters: :math:`R_\theta = 0` with the whole rotation circle as width gives a
Monte-Carlo group convolution, exactly equivariant to the rotations that map the sample set to
itself; shrinking the width or growing the residual relaxes the symmetry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symprior.groups import SE2, SL2, SO2, Affine2, Group, Scaling
from symprior.nn._inputs import check_like_parameters
from symprior.nn._relaxation import Relaxation, RelaxedModule

__all__ = ["LieAlgebraConv"]

#: Seed of the fixed permutations that spread the quadrature grid over several generators.
_GRID_SEED = 0


def _supported(group: Group) -> bool:
    if type(group) in (SO2, SE2, SL2, Affine2):
        return True
    return type(group) is Scaling and group.space_dim == 2


def _compact_directions(group: Group) -> list[bool]:
    r"""Which basis directions of the algebra generate a circle (rotation angle, period 2 pi)."""
    if type(group) in (SO2, SE2):
        return [True] + [False] * (group.dim - 1)
    return [False] * group.dim


def _quadrature_grid(num_samples: int, dim: int) -> Tensor:
    r"""A Latin-hypercube grid ``(num_samples, dim)`` in :math:`[-1, 1]^{dim}` (float64).

    Every coordinate takes each midpoint :math:`-1 + (2j + 1)/M` exactly once. The first
    coordinate runs through them in order; the others are permuted by a fixed seed, so the grid
    is deterministic and never touches the global random state.
    """
    midpoints = -1.0 + (2.0 * torch.arange(num_samples, dtype=torch.float64) + 1.0) / num_samples
    generator = torch.Generator().manual_seed(_GRID_SEED)
    columns = [midpoints]
    for _ in range(1, dim):
        columns.append(midpoints[torch.randperm(num_samples, generator=generator)])
    return torch.stack(columns, -1)


def _odd_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value % 2 == 0:
        raise ValueError(f"{name} must be an odd int >= {minimum}, got {value!r}")
    return value


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _positive_float(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


class LieAlgebraConv(RelaxedModule):
    r"""Image-to-image Lie-algebra convolution with a learned map from the algebra (000 Def. 4.2).

    For a planar group :math:`G` with Lie-algebra basis :math:`A_1, \dots, A_d`, the layer computes

    .. math::

        h(p) = b + \frac{1}{M} \sum_{i=1}^{M} \sum_{q}
            \frac{k\big(\mathcal{N}_\theta(x_i)^{-1} \exp(q - p)\big)}
                 {|\det \mathcal{N}_\theta(x_i)|} \, f(q),
        \qquad
        \mathcal{N}_\theta(x) = \exp(x) + R_\theta(x),

    the Monte-Carlo estimate (000 sec. 4.3) of the Lie-algebra convolution of 000 Def. 4.2 with the
    algebra elements :math:`x_i = \sum_k c_{ik} A_k` uniform on the box
    :math:`c_{ik} \in [-w_k, w_k]` (Lebesgue measure on the algebra, normalised). Here
    :math:`\exp(q - p)` is the translation taking the origin to the displacement :math:`u = q - p`,
    so the kernel, a function on the plane, is read at the point :math:`\mathcal{N}_\theta(x)^{-1}
    u` (the affine action for homogeneous ``3 x 3`` groups). The factor :math:`1/|\det|` keeps the
    mass of the transformed kernel, so that for dilations the sum is a discretised group
    convolution. The layer is the lifted convolution :math:`h(p, x_i)` averaged over the samples;
    because averaging commutes with the sum over :math:`q`, it is one ``conv2d`` with the averaged
    kernel

    .. math:: \bar k(u) = \frac{1}{M} \sum_i \frac{k(\mathcal{N}_\theta(x_i)^{-1} u)}
        {|\det \mathcal{N}_\theta(x_i)|},

    evaluated on the ``support x support`` window of integer displacements, where :math:`k` is the
    bilinear interpolant (zero outside) of the learnable ``kernel_size x kernel_size`` filter
    ``weight``. Pixels follow :func:`~symprior.groups.transform_image`: :math:`x` to the right,
    :math:`y` up, one unit per pixel, so with ``support == kernel_size`` the term for sample
    :math:`i` is ``transform_image(weight, N(x_i)) / |det N(x_i)|``. The layer is not lifted: it
    maps images to images, and it is exactly equivariant to integer translations (zero padding,
    away from the border) for every setting of its parameters.

    **Samples.** In ``eval`` mode the unit coefficients come from a fixed Latin-hypercube grid
    (every coordinate takes each midpoint :math:`-1 + (2j+1)/M` once; the first in order, the
    others in a fixed permuted order), scaled by the widths. In ``train`` mode they are drawn
    afresh from :math:`U[-1, 1]` with the global torch RNG at every call
    (``train_sampling="random"``, as in 000 sec. 4.3) or taken from the same grid
    (``train_sampling="grid"``). For SO(2), the midpoint grid of :math:`M` angles on
    :math:`[-\pi, \pi]` is a coset of the cyclic group :math:`C_M`, so at the strict setting the
    layer is exactly equivariant to rotations by multiples of :math:`2\pi/M` (to quarter turns
    when :math:`4 \mid M`).

    **Relaxation** (family ``"lie_algebra"``). The output layer of :math:`R_\theta`
    (``residual_output.weight``, ``residual_output.bias``, role ``"residual_network"``, strict
    value 0: then :math:`\mathcal{N}_\theta = \exp`) and the widths ``width`` ``(d,)`` (role
    ``"width"``). The strict width of a compact direction (the rotation angle of SO(2) and SE(2))
    is :math:`\pi`, the whole circle. Non-compact directions have no finite "whole group", and no
    image layer with a compact kernel is exactly equivariant to dilations or shears: their strict
    width is a fixed ``reference_width`` (units: pixels for translations, log-scale or strain for
    linear directions), and the strict setting is the reference Lie-algebra convolution that
    averages over that fixed box. The hidden layer of :math:`R_\theta` is an ordinary weight: it
    does not change the output while the output layer is zero, and zeroing it would leave a
    network whose output layer never receives a gradient.

    :meth:`equivariance_level` is

    .. math:: \|W_{out}\|_F + \|b_{out}\|_2 + \sum_k \frac{\big||w_k| - w_k^*\big|}{w_k^*},

    zero exactly when the layer computes the strict layer (:math:`w^*` the strict widths; the
    sign of a width is immaterial because the uniform box is symmetric). The strict width is
    :math:`\pi` rounded to the dtype the layer was built in: build it with ``dtype=torch.float64``
    (or call :meth:`set_strict` after casting) for float64 exactness.

    Parameters
    ----------
    group : Group
        ``SO2()``, ``SE2()``, ``Scaling(2)``, ``SL2()`` or ``Affine2()``.
    in_channels, out_channels : int
        Channels of the input ``(B, in_channels, H, W)`` and output ``(B, out_channels, H, W)``.
    kernel_size : int
        Odd size ``K >= 3`` of the learnable filter ``weight`` ``(out, in, K, K)``.
    support : int, optional
        Odd size ``S`` of the window of displacements on which the transformed kernels are read
        (default ``kernel_size``); larger than ``kernel_size`` keeps dilated or translated kernels
        from being cut off. Must not exceed the image size.
    num_samples : int
        Number ``M`` of Lie-algebra samples per forward.
    hidden : int
        Width of the hidden layer of the residual network :math:`R_\theta` (``tanh``).
    width : float or sequence of float, optional
        Initial widths ``(d,)`` (one float for all generators); default: the strict widths.
    reference_width : float
        Strict width of the non-compact directions.
    bias : bool
        Whether to add a learnable bias ``(out_channels,)``.
    train_sampling : {"random", "grid"}
        How ``train`` mode draws the coefficients (see above).
    device, dtype : optional
        Where and in which dtype the parameters are created (as for :class:`torch.nn.Conv2d`);
        group constants are float64 buffers on ``device``.

    Examples
    --------
    >>> import torch
    >>> from symprior.groups import SO2
    >>> _ = torch.manual_seed(0)
    >>> layer = LieAlgebraConv(SO2(), 2, 3, kernel_size=5, num_samples=8, dtype=torch.float64)
    >>> layer = layer.eval()
    >>> x = torch.randn(4, 2, 9, 9, dtype=torch.float64)
    >>> y = layer(x)
    >>> y.shape
    torch.Size([4, 3, 9, 9])
    >>> rotated = layer(torch.rot90(x, 1, dims=(-2, -1)))
    >>> bool((rotated - torch.rot90(y, 1, dims=(-2, -1))).abs().max() < 1e-12)
    True
    >>> float(layer.equivariance_level().detach())
    0.0
    """

    lie_algebra: Tensor
    strict_width: Tensor
    unit_grid: Tensor
    displacements: Tensor
    bias: nn.Parameter | None

    def __init__(
        self,
        group: Group,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        support: int | None = None,
        num_samples: int = 8,
        hidden: int = 16,
        width: float | Sequence[float] | None = None,
        reference_width: float = 0.5,
        bias: bool = True,
        train_sampling: Literal["random", "grid"] = "random",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(group, Group):
            raise TypeError(f"group must be a symprior.groups.Group, got {type(group).__name__}")
        if not _supported(group):
            raise ValueError(
                "group must be one of SO2(), SE2(), Scaling(2), SL2(), Affine2() (a connected "
                f"group acting on the plane), got {group!r}"
            )
        self.group = group
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = _odd_int(kernel_size, "kernel_size", 3)
        self.support = self.kernel_size if support is None else _odd_int(support, "support", 1)
        self.num_samples = _positive_int(num_samples, "num_samples")
        hidden = _positive_int(hidden, "hidden")
        self.reference_width = _positive_float(reference_width, "reference_width")
        if train_sampling not in ("random", "grid"):
            raise ValueError(f"train_sampling must be 'random' or 'grid', got {train_sampling!r}")
        self.train_sampling = train_sampling
        self.homogeneous = group.n == 3

        dim = group.dim
        strict = torch.tensor(
            [math.pi if c else self.reference_width for c in _compact_directions(group)],
            dtype=torch.float64,
        )
        initial = strict.clone() if width is None else self._initial_width(width, dim)

        self.weight = nn.Parameter(
            torch.empty(
                out_channels, in_channels, kernel_size, kernel_size, device=device, dtype=dtype
            )
        )
        self.bias = (
            nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype)) if bias else None
        )
        # Rounded once from float64, so the strict width is pi to the precision of the dtype.
        self.width = nn.Parameter(
            initial.to(device=device, dtype=dtype or torch.get_default_dtype())
        )
        self.residual_hidden = nn.Linear(dim, hidden, device=device, dtype=dtype)
        # Only the affine rows of N are learned for homogeneous groups: the kernel lives on the
        # plane, and a non-affine last row would not map plane points to plane points.
        rows = 2 if self.homogeneous else group.n
        self.residual_output = nn.Linear(hidden, rows * group.n, device=device, dtype=dtype)

        self.register_buffer("lie_algebra", group.lie_algebra.to(device), persistent=False)
        self.register_buffer("strict_width", strict.to(device), persistent=False)
        self.register_buffer(
            "unit_grid", _quadrature_grid(self.num_samples, dim).to(device), persistent=False
        )
        half = (self.support - 1) / 2
        offsets = torch.arange(self.support, dtype=torch.float64) - half
        # Displacements u = (x, y) of the support window, rows from the top (y up).
        displacements = torch.stack(
            torch.broadcast_tensors(offsets[None, :], -offsets[:, None]), -1
        )
        self.register_buffer("displacements", displacements.to(device), persistent=False)
        self.reset_parameters()

    @staticmethod
    def _initial_width(width: float | Sequence[float], dim: int) -> Tensor:
        if isinstance(width, bool):
            raise TypeError(f"width must be a float or a sequence of {dim} floats, got a bool")
        if isinstance(width, int | float):
            values = [float(width)] * dim
        elif isinstance(width, Sequence) and all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in width
        ):
            values = [float(w) for w in width]
        else:
            raise TypeError(f"width must be a float or a sequence of {dim} floats, got {width!r}")
        if len(values) != dim:
            raise ValueError(
                f"width must have {dim} entries (one per generator), got {len(values)}"
            )
        if not all(math.isfinite(w) and w > 0 for w in values):
            raise ValueError(f"width must be positive and finite, got {values}")
        return torch.tensor(values, dtype=torch.float64)

    def reset_parameters(self) -> None:
        r"""Initialise ``weight`` and ``bias`` as :class:`torch.nn.Conv2d` does; zero ``R``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size**2)
            nn.init.uniform_(self.bias, -bound, bound)
        self.residual_hidden.reset_parameters()
        nn.init.zeros_(self.residual_output.weight)
        nn.init.zeros_(self.residual_output.bias)

    # ------------------------------------------------------------------ relaxation registry
    def relaxations(self) -> dict[str, Relaxation]:
        r"""The widths and the output layer of :math:`R_\theta` (see the class docstring)."""
        return {
            "width": Relaxation("lie_algebra", "width", self.strict_width.detach().clone()),
            "residual_output.weight": Relaxation("lie_algebra", "residual_network", 0.0),
            "residual_output.bias": Relaxation("lie_algebra", "residual_network", 0.0),
        }

    def equivariance_level(self) -> Tensor:
        r"""Residual output-layer norms plus the normalised width deviation (class docstring)."""
        strict = self.strict_width.to(self.width)
        deviation = ((self.width.abs() - strict).abs() / strict).sum()
        return (
            torch.linalg.vector_norm(self.residual_output.weight)
            + torch.linalg.vector_norm(self.residual_output.bias)
            + deviation
        )

    # --------------------------------------------------------------------------- the maths
    def algebra_samples(self) -> Tensor:
        r"""Lie-algebra coefficients ``(num_samples, d)`` for the next forward.

        The fixed grid scaled by ``width`` in ``eval`` mode (and in ``train`` mode with
        ``train_sampling="grid"``); fresh uniform draws on :math:`[-w_k, w_k]` from the global
        torch RNG in ``train`` mode otherwise. Differentiable in ``width``.
        """
        if self.training and self.train_sampling == "random":
            unit = torch.rand(
                self.num_samples,
                self.group.dim,
                dtype=self.width.dtype,
                device=self.width.device,
            )
            unit = 2 * unit - 1
        else:
            unit = self.unit_grid.to(self.width)
        return unit * self.width

    def transformations(self, coeffs: Tensor) -> Tensor:
        r"""The learned map :math:`\mathcal{N}_\theta(x) = \exp(x) + R_\theta(x)` (000 Def. 4.2).

        Parameters
        ----------
        coeffs : Tensor
            Lie-algebra coefficients ``(..., d)``.

        Returns
        -------
        Tensor
            Matrices ``(..., n, n)``; for homogeneous groups the last row is ``(0, 0, 1)``.
        """
        n = self.group.n
        basis = self.lie_algebra.to(coeffs)
        exp = torch.linalg.matrix_exp(torch.einsum("...d,dij->...ij", coeffs, basis))
        residual = self.residual_output(torch.tanh(self.residual_hidden(coeffs)))
        if self.homogeneous:
            residual = F.pad(residual.reshape(*coeffs.shape[:-1], 2, n), (0, 0, 0, 1))
        else:
            residual = residual.reshape(*coeffs.shape[:-1], n, n)
        return exp + residual

    def effective_kernel(self, coeffs: Tensor | None = None) -> Tensor:
        r"""The averaged kernel :math:`\bar k` ``(out_channels, in_channels, S, S)``.

        Parameters
        ----------
        coeffs : Tensor, optional
            Lie-algebra coefficients ``(M, d)``; default :meth:`algebra_samples`.
        """
        if coeffs is None:
            coeffs = self.algebra_samples()
        matrices = self.transformations(coeffs.to(self.weight))
        m, s = len(matrices), self.support
        # Closed-form 2x2 inverse on (M, 1, 1) entries: elementwise, no LAPACK or bmm for what
        # is a handful of tiny matrices.
        a, b = matrices[:, 0, 0, None, None], matrices[:, 0, 1, None, None]
        c, d = matrices[:, 1, 0, None, None], matrices[:, 1, 1, None, None]
        det = a * d - b * c
        u = self.displacements.to(self.weight)
        ux, uy = u[..., 0], u[..., 1]  # (S, S)
        if self.homogeneous:
            ux = ux - matrices[:, 0, 2, None, None]
            uy = uy - matrices[:, 1, 2, None, None]
        x = (d * ux - b * uy) / det  # (M, S, S)
        y = (a * uy - c * ux) / det
        # grid_sample with align_corners=True maps -1 and 1 to the outer pixel centres; y is up.
        half = (self.kernel_size - 1) / 2
        grid = torch.stack(torch.broadcast_tensors(x / half, -y / half), -1)
        channels = self.out_channels * self.in_channels
        sampled = F.grid_sample(
            self.weight.reshape(1, channels, self.kernel_size, self.kernel_size),
            grid.reshape(1, m * s, s, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        ).reshape(channels, m, s, s)
        kernel = (sampled / (m * det.abs())).sum(1)
        return kernel.reshape(self.out_channels, self.in_channels, s, s)

    def forward(self, input: Tensor) -> Tensor:
        r"""Images ``(B, in_channels, H, W)`` to images ``(B, out_channels, H, W)``."""
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.ndim != 4:
            raise ValueError(
                f"input must have shape (B, {self.in_channels}, H, W), got {tuple(input.shape)}"
            )
        if input.shape[1] != self.in_channels:
            raise ValueError(
                f"input has {input.shape[1]} channels, expected in_channels={self.in_channels}"
            )
        check_like_parameters(input, self.weight, "input")
        rows, cols = input.shape[-2:]
        if self.support > min(rows, cols):
            raise ValueError(f"support={self.support} is larger than the image ({rows} x {cols})")
        kernel = self.effective_kernel()
        return F.conv2d(input, kernel, self.bias, padding=self.support // 2)

    def extra_repr(self) -> str:
        return (
            f"{self.group!r}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, support={self.support}, "
            f"num_samples={self.num_samples}, train_sampling={self.train_sampling!r}"
        )
