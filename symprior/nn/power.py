r"""PowerNet: truncated matrix power series as quasi-equivariant layers (paper 003).

A :class:`PowerLayer` parameterises its weight matrix as a truncated Laurent polynomial of base
matrices (003 sec. 3.1-3.2, 3.4),

.. math::

    y^{(o)} = \sum_{c} \sum_{i_1, \dots, i_m = -K}^{K} \theta^{(o, c)}_{i_1 \dots i_m}
        A_1^{i_1 D} A_2^{i_2 D} \cdots A_m^{i_m D} \, x^{(c)} + b^{(o)},
    \qquad A_k = \exp(t_k G_k),

with dilation :math:`D`, Lie-algebra generators :math:`G_k` and magnitudes :math:`t_k`. The
magnitudes are the relaxation parameters (family ``"power"``, role ``"magnitude"``): 003 keeps
the group structure and lets the transformation magnitudes become distributions.

Generators of image transformations come from the Shannon-Whittaker derivative operator
(003 eq. 1, :func:`shannon_whittaker_derivative`) combined by Kronecker products
(003 sec. 3.3, eq. 2, :func:`image_generators`). Pixel coordinates follow
:func:`symprior.groups.image_coordinates`: pixel ``(row, col)`` of an ``H x W`` image sits at
:math:`x = \mathrm{col} - (W-1)/2`, :math:`y = (H-1)/2 - \mathrm{row}`, and images are flattened
row-major (index ``row * W + col``).

A generator :math:`G` acts on functions as a vector field :math:`v \cdot \nabla`, so
:math:`(\exp(sG) f)(p) = f(\phi_s(p))` where :math:`\phi_s` is the flow of :math:`v`: for the
shift :math:`\partial_x`, :math:`\exp(\partial_x)` moves the content one pixel to the *left*,
i.e. it is ``transform_image(f, T)`` with ``T`` the translation by ``(-1, 0)``. Equivariance
statements are unaffected (the one-parameter group contains both directions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from symprior._caching import cacheable, filling_cache, has_storage
from symprior.groups import image_coordinates
from symprior.nn._blas import split_mm
from symprior.nn._inputs import check_device, check_floating
from symprior.nn._relaxation import Relaxation, RelaxedModule

__all__ = [
    "IMAGE_GENERATOR_KINDS",
    "ImageGenerator",
    "PowerBlock",
    "PowerLayer",
    "PowerNet",
    "affine_generators",
    "image_generators",
    "shannon_whittaker_derivative",
]


# ----------------------------------------------------------------------------- generators
def _check_size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def shannon_whittaker_derivative(
    n: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""The derivative operator of the periodic Shannon-Whittaker interpolation (003 eq. 1).

    A periodic signal with samples :math:`I(0), \dots, I(n-1)` is interpolated as
    :math:`I(r) = \sum_b I(b) Q(r - b)` with

    .. math:: Q(r) = \frac{1}{n}\Big[1 + 2 \sum_{p=1}^{\lfloor (n-1)/2 \rfloor}
              \cos\frac{2\pi p r}{n}\Big],

    and the operator is :math:`D_{ab} = Q'(a - b)`, so :math:`(DI)_a = I'(a)`. For even ``n`` the
    sum stops at :math:`n/2 - 1` as in 003 eq. 1; for odd ``n`` it runs to :math:`(n-1)/2`, the
    whole band (003 writes the even-``n`` bound for both). ``D`` is a real antisymmetric
    circulant matrix and :math:`\exp(tD)` shifts band-limited signals by ``t`` samples:
    :math:`(\exp(tD) I)_a = I(a + t)`.

    * Odd ``n``: :math:`\exp(D)` is exactly the cyclic shift :math:`S`, :math:`(SI)_a = I_{a+1}`.
    * Even ``n``: the Nyquist mode :math:`v_a = (-1)^a` lies in the kernel of ``D`` (the Nyquist
      cosine has zero derivative at the samples), so :math:`\exp(D) = S + \tfrac{2}{n} v v^T`: it
      shifts every other Fourier mode and leaves the alternating pattern unchanged. No real
      matrix has :math:`S` as exponential for even ``n`` (the eigenvalue :math:`-1` is simple), so
      this is the best a real generator can do; prefer odd image sizes when integer shifts must be
      exact pixel shifts.

    Parameters
    ----------
    n : int
        Number of samples, ``>= 1``.
    dtype, device
        Of the result (computed in float64).

    Returns
    -------
    Tensor
        ``(n, n)``.

    Examples
    --------
    >>> import torch
    >>> d = shannon_whittaker_derivative(5)
    >>> shift = torch.linalg.matrix_exp(d)
    >>> torch.allclose(shift, torch.roll(torch.eye(5, dtype=d.dtype), -1, dims=0), atol=1e-12)
    True
    """
    n = _check_size(n, "n")
    bands = torch.arange(1, (n - 1) // 2 + 1, dtype=torch.float64)
    r = torch.arange(n, dtype=torch.float64)
    # Q'(r) = -(4 pi / n^2) sum_p p sin(2 pi p r / n); circulant, so one row of values suffices.
    values = -(4 * math.pi / n**2) * (bands * torch.sin(2 * math.pi * r[:, None] * bands / n)).sum(
        -1
    )
    idx = torch.arange(n)
    matrix = values[(idx[:, None] - idx[None, :]) % n]
    return matrix.to(dtype=dtype, device=device)


class ImageGenerator:
    r"""A generator acting on flattened ``height x width`` images (003 sec. 3.3).

    Either a Kronecker sum :math:`G = R \otimes I_W + I_H \otimes C` of a row factor ``R``
    ``(H, H)`` and a column factor ``C`` ``(W, W)`` (either may be absent), or a dense matrix
    ``(H W, H W)``. A Kronecker sum exponentiates factor-wise,
    :math:`\exp(tG) = \exp(tR) \otimes \exp(tC)`, so :class:`PowerLayer` applies it as two 1-D
    operators along the image axes instead of one ``(HW, HW)`` matrix.

    Parameters
    ----------
    height, width : int
        Image size.
    row : Tensor, optional
        ``(height, height)``, acting along the rows (the ``y`` axis).
    col : Tensor, optional
        ``(width, width)``, acting along the columns (the ``x`` axis).
    dense : Tensor, optional
        ``(height * width, height * width)``; excludes ``row`` and ``col``.
    name : str
        A label, e.g. ``"d/dx"``.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        row: Tensor | None = None,
        col: Tensor | None = None,
        dense: Tensor | None = None,
        name: str = "generator",
    ) -> None:
        self.height = _check_size(height, "height")
        self.width = _check_size(width, "width")
        if dense is not None and (row is not None or col is not None):
            raise ValueError("give either dense or row/col factors, not both")
        if dense is None and row is None and col is None:
            raise ValueError("an ImageGenerator needs row, col or dense")
        self.row = self._matrix(row, self.height, "row")
        self.col = self._matrix(col, self.width, "col")
        self.dense = self._matrix(dense, self.height * self.width, "dense")
        self.name = str(name)

    @staticmethod
    def _matrix(value: Tensor | None, size: int, name: str) -> Tensor | None:
        if value is None:
            return None
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.shape != (size, size):
            raise ValueError(f"{name} must have shape ({size}, {size}), got {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite")
        return value.detach().to(dtype=torch.float64, device="cpu")

    @property
    def separable(self) -> bool:
        """Whether the generator is a Kronecker sum (no dense part)."""
        return self.dense is None

    def matrix(self) -> Tensor:
        r"""The dense generator ``(H W, H W)`` in float64 (row-major flattening)."""
        if self.dense is not None:
            return self.dense
        h, w = self.height, self.width
        out = torch.zeros(h * w, h * w, dtype=torch.float64)
        if self.row is not None:
            out = out + torch.kron(self.row, torch.eye(w, dtype=torch.float64))
        if self.col is not None:
            out = out + torch.kron(torch.eye(h, dtype=torch.float64), self.col)
        return out

    def __repr__(self) -> str:
        kind = "kronecker-sum" if self.separable else "dense"
        return f"ImageGenerator({self.name!r}, {self.height}x{self.width}, {kind})"


#: The kinds understood by :func:`image_generators`.
IMAGE_GENERATOR_KINDS = ("shift_x", "shift_y", "translation", "rotation", "scaling", "affine")


def image_generators(height: int, width: int, kind: str) -> list[ImageGenerator]:
    r"""Generators of planar transformations on flattened ``height x width`` images (003 eq. 2).

    With :math:`D_n` the Shannon-Whittaker derivative (:func:`shannon_whittaker_derivative`),
    :math:`X = \mathrm{diag}(x)` and :math:`Y = \mathrm{diag}(y)` the pixel coordinates of
    :func:`symprior.groups.image_coordinates` (``y`` points up, so
    :math:`\partial_y = -\partial_{\mathrm{row}}`):

    ==============  =================================================  ===============
    operator        matrix                                             structure
    ==============  =================================================  ===============
    ∂x              :math:`I_H \otimes D_W`                            Kronecker sum
    x∂x             :math:`I_H \otimes X D_W`                          Kronecker sum
    y∂x             :math:`Y \otimes D_W`                              dense
    ∂y              :math:`-D_H \otimes I_W`                           Kronecker sum
    x∂y             :math:`-D_H \otimes X`                             dense
    y∂y             :math:`-Y D_H \otimes I_W`                         Kronecker sum
    ==============  =================================================  ===============

    Parameters
    ----------
    height, width : int
        Image size.
    kind : str
        ``"shift_x"`` ([∂x]), ``"shift_y"`` ([∂y]), ``"translation"`` ([∂x, ∂y]),
        ``"rotation"`` ([x∂y - y∂x]), ``"scaling"`` ([x∂x + y∂y]) or ``"affine"`` (the six
        generators of 003 eq. 2 in the order ∂x, x∂x, y∂x, ∂y, x∂y, y∂y, as in
        :class:`symprior.groups.Affine2`).

    Returns
    -------
    list of ImageGenerator

    Examples
    --------
    >>> [g.name for g in image_generators(5, 5, "translation")]
    ['d/dx', 'd/dy']
    """
    h, w = _check_size(height, "height"), _check_size(width, "width")
    if not isinstance(kind, str) or kind not in IMAGE_GENERATOR_KINDS:
        raise ValueError(f"kind must be one of {IMAGE_GENERATOR_KINDS}, got {kind!r}")
    d_col = shannon_whittaker_derivative(w)
    d_row = -shannon_whittaker_derivative(h)  # d/dy = -d/drow
    coords = image_coordinates(h, w)
    x = torch.diag(coords[0, :, 0])
    y = torch.diag(coords[:, 0, 1])

    def kron_sum(name: str, row: Tensor | None = None, col: Tensor | None = None) -> ImageGenerator:
        return ImageGenerator(h, w, row=row, col=col, name=name)

    def dense(name: str, matrix: Tensor) -> ImageGenerator:
        return ImageGenerator(h, w, dense=matrix, name=name)

    if kind == "shift_x":
        return [kron_sum("d/dx", col=d_col)]
    if kind == "shift_y":
        return [kron_sum("d/dy", row=d_row)]
    if kind == "translation":
        return [kron_sum("d/dx", col=d_col), kron_sum("d/dy", row=d_row)]
    if kind == "rotation":
        matrix = torch.kron(d_row, x) - torch.kron(y, d_col)
        return [dense("x d/dy - y d/dx", matrix)]
    if kind == "scaling":
        return [kron_sum("x d/dx + y d/dy", row=y @ d_row, col=x @ d_col)]
    return [
        kron_sum("d/dx", col=d_col),
        kron_sum("x d/dx", col=x @ d_col),
        dense("y d/dx", torch.kron(y, d_col)),
        kron_sum("d/dy", row=d_row),
        dense("x d/dy", torch.kron(d_row, x)),
        kron_sum("y d/dy", row=y @ d_row),
    ]


def affine_generators(height: int, width: int) -> list[ImageGenerator]:
    r"""The six affine generators of 003 eq. 2: ``image_generators(height, width, "affine")``."""
    return image_generators(height, width, "affine")


# ----------------------------------------------------------------------------- PowerLayer
GeneratorsLike = ImageGenerator | Tensor | Sequence[ImageGenerator | Tensor]


def _as_generators(
    base_generators: GeneratorsLike,
) -> tuple[list[ImageGenerator] | None, list[Tensor]]:
    """Image generators (or None for plain vectors) and the dense float64 matrices."""
    items: list[ImageGenerator | Tensor]
    if isinstance(base_generators, ImageGenerator):
        items = [base_generators]
    elif isinstance(base_generators, Tensor):
        if base_generators.ndim == 2:
            items = [base_generators]
        elif base_generators.ndim == 3:
            items = list(base_generators)
        else:
            raise ValueError(
                "base_generators must be a (d, d) or (m, d, d) tensor, got shape "
                f"{tuple(base_generators.shape)}"
            )
    elif isinstance(base_generators, Sequence) and not isinstance(base_generators, str):
        items = list(base_generators)
    else:
        raise TypeError(
            "base_generators must be a Tensor, an ImageGenerator or a sequence of them, got "
            f"{type(base_generators).__name__}"
        )
    if not items:
        raise ValueError("base_generators must not be empty")
    for k, item in enumerate(items):
        if isinstance(item, ImageGenerator):
            continue
        if not isinstance(item, Tensor):
            raise TypeError(
                f"base_generators[{k}] must be a Tensor or an ImageGenerator, "
                f"got {type(item).__name__}"
            )
        if item.ndim != 2 or item.shape[0] != item.shape[1]:
            raise ValueError(
                f"base_generators[{k}] must be a square matrix, got shape {tuple(item.shape)}"
            )
        if not bool(torch.isfinite(item).all()):
            raise ValueError(f"base_generators[{k}] must be finite")
    images = [g for g in items if isinstance(g, ImageGenerator)]
    if not images:
        mats = [
            g.detach().to(dtype=torch.float64, device="cpu") for g in items if isinstance(g, Tensor)
        ]
        if len({m.shape[0] for m in mats}) != 1:
            raise ValueError(
                f"base_generators must all have the same size, got {[m.shape[0] for m in mats]}"
            )
        return None, mats
    shape = (images[0].height, images[0].width)
    gens: list[ImageGenerator] = []
    for k, item in enumerate(items):
        if isinstance(item, ImageGenerator):
            if (item.height, item.width) != shape:
                raise ValueError(
                    f"base_generators[{k}] acts on {item.height}x{item.width} images, "
                    f"base_generators[0] on {shape[0]}x{shape[1]}"
                )
            gens.append(item)
        else:
            gens.append(ImageGenerator(shape[0], shape[1], dense=item, name=f"dense[{k}]"))
    return gens, [g.matrix() for g in gens]


def _as_powers(powers: int | Sequence[int], m: int) -> list[int]:
    values = [powers] if isinstance(powers, int) else powers
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"powers must be an int or a sequence of ints, got {type(powers).__name__}")
    out = []
    for p in values:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"powers must be ints, got {type(p).__name__}")
        if p < 0:
            raise ValueError(f"powers must be >= 0 (powers -K..K), got {p}")
        out.append(p)
    if len(out) == 1:
        out = out * m
    if len(out) != m:
        raise ValueError(f"powers must be one int or one per generator ({m}), got {len(out)}")
    return out


def _check_shift_windows(
    images: Sequence[ImageGenerator] | None, powers: Sequence[int], dilation: int
) -> None:
    r"""Reject shift generators whose kernel window exceeds the image (003 sec. 3.4-3.5).

    A shift generator (a Kronecker sum of circulant factors, as ``d/dx`` and ``d/dy`` of
    :func:`image_generators`) with powers ``-K..K`` and dilation ``D`` has at unit magnitude
    the taps :math:`-KD, -(K-1)D, \dots, KD` pixels along each axis it acts on: a window of
    :math:`2KD + 1` pixels, the ``(2K+1)``-tap dilated kernel of a CNN (003 sec. 3.5). On the
    periodic grid of ``N`` pixels the taps are distinct pixel shifts when
    :math:`2KD + 1 \le N` (two of them differ by at most :math:`2KD < N`), so a window equal
    to the image is allowed. A larger window wraps around the image: taps :math:`iD` and
    :math:`i'D` with :math:`(i - i')D \equiv 0 \pmod N` (for ``D = 1``, taps ``K`` and
    ``K - N``) then give the same base-matrix power, whose weights cannot be told apart. The
    rule is the window, not only that coincidence (which spares some wrapped windows with
    ``D > 1``): a kernel support larger than the image is an error. The window counts steps
    of the base matrix at unit magnitude (one pixel); the magnitudes are relaxation parameters
    and do not enter the rule. Only the shift generators are checked (those of an affine set
    too): ``x d/dx``, ``y d/dx``, rotation and scaling act on the whole image and have no
    window, and plain tensor generators (layers on vectors) carry no image axes.
    """
    if images is None:
        return
    for k, gen in enumerate(images):
        factors = [
            (f, axis) for f, axis in ((gen.row, "height"), (gen.col, "width")) if f is not None
        ]
        if not gen.separable or not all(_is_circulant(f) for f, _ in factors):
            continue
        window = 2 * powers[k] * dilation + 1
        for factor, axis in factors:
            size = factor.shape[0]
            if window > size:
                raise ValueError(
                    f"PowerLayer with shift generators: the window 2*K*dilation+1 = "
                    f"2*{powers[k]}*{dilation}+1 = {window} of base_generators[{k}] "
                    f"({gen.name!r}, powers={powers[k]}, dilation={dilation}) exceeds the image "
                    f"{axis} {size}. A kernel support larger than the image wraps around the "
                    f"periodic grid, where the shifts +k*dilation and -k'*dilation alias; choose "
                    f"powers and dilation with 2*K*dilation+1 <= {size}"
                )


def _as_magnitudes(magnitudes: float | Sequence[float] | Tensor, m: int) -> Tensor:
    if isinstance(magnitudes, bool):
        raise TypeError("magnitudes must be a float, a sequence of floats or a Tensor")
    try:
        value = torch.as_tensor(magnitudes, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"magnitudes must be a float, a sequence of floats or a Tensor, got {magnitudes!r}"
        ) from err
    if value.ndim == 0:
        value = value.expand(m).clone()
    if value.shape != (m,):
        raise ValueError(
            f"magnitudes must be a scalar or have shape ({m},), got {tuple(value.shape)}"
        )
    if not bool(torch.isfinite(value).all()):
        raise ValueError("magnitudes must be finite")
    return value


def _weight_index(powers: Sequence[int]) -> Tensor:
    r"""``(N, m)``: for each entry of :math:`\theta`'s power axes (row-major, as
    ``weight.reshape(out, in, -1)`` flattens them), the index ``i + K`` along each generator."""
    sizes = [2 * p + 1 for p in powers]
    return torch.cartesian_prod(*[torch.arange(s) for s in sizes]).reshape(-1, len(powers))


def _exponent_table(
    members: Sequence[int], powers: Sequence[int], dilation: int
) -> tuple[Tensor, Tensor, list[int]]:
    """Per exponential: its generator (index into ``members``) and the power i * D."""
    owner, scale, sizes = [], [], []
    for position, k in enumerate(members):
        ks = range(-powers[k], powers[k] + 1)
        owner += [position] * len(ks)
        scale += [float(i * dilation) for i in ks]
        sizes.append(len(ks))
    return (
        torch.tensor(owner, dtype=torch.long),
        torch.tensor(scale, dtype=torch.float64),
        sizes,
    )


class _ScaledExp(torch.autograd.Function):
    r"""``exp(c_j G_j)`` for scalars ``c`` ``(T,)`` and constant generators ``G`` ``(T, d, d)``.

    The derivative is closed form, :math:`\partial_c \exp(cG) = G \exp(cG)` (``G`` commutes with
    its exponential), which is one matrix product instead of the backward of
    ``torch.linalg.matrix_exp`` (an exponential of a ``2d x 2d`` block matrix). The backward is
    written with differentiable operations, so second derivatives (Laplace) are exact too.
    """

    @staticmethod
    def forward(coeff: Tensor, generators: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(coeff[:, None, None] * generators)

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, Tensor], output: Tensor
    ) -> None:
        ctx.save_for_backward(inputs[1], output)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        generators, output = ctx.saved_tensors  # type: ignore[attr-defined]
        return ((generators @ output) * grad).sum((-2, -1)), None


def _fourier_matrices(height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Real matrices of the 2-D DFT of real ``(H, W)`` images, float64.

    With ``Wf = W // 2 + 1``, ``l`` a column frequency, ``k`` a row frequency and ``p`` the
    real/imaginary part:

    * ``dft_w`` ``((p, l), W)``: the first ``Wf`` DFT coefficients of a row,
      :math:`\sum_w x_w e^{-2\pi i wl/W}` (``rfft``), real parts first;
    * ``half_h`` ``(H, H)``: the cosine rows :math:`\cos(2\pi k h/H)` for
      :math:`k = 0 \dots \lfloor H/2 \rfloor` followed by the sine rows :math:`\sin(2\pi kh/H)`
      for :math:`k = 1 \dots \lfloor (H-1)/2 \rfloor` (the sines vanish at :math:`k = 0` and
      :math:`k = H/2`). Rows :math:`k` and :math:`H - k` of the complex DFT matrix share them,
      :math:`e^{\mp 2\pi i (H-k)h/H} = \cos(2\pi kh/H) \pm i \sin(2\pi kh/H)`, so a complex
      DFT of length ``H`` is this real product followed by additions (:func:`_butterfly`);
    * ``idft_w`` ``((p, l), W)``: the inverse of ``dft_w`` on Hermitian spectra, as ``irfft``
      (imaginary parts of the constant and Nyquist terms are ignored);
    * ``order`` ``(H,)``: the row frequencies in the order the butterfly produces them,
      :math:`0, 1, \dots, \lfloor H/2 \rfloor, H-1, H-2, \dots, H - \lfloor (H-1)/2 \rfloor`.
    """
    rows = torch.arange(height, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64)
    half = width // 2 + 1
    freqs = torch.arange(half, dtype=torch.float64)
    # Reduce the phase index modulo n before scaling, for exact angles.
    angle_w = 2 * math.pi * ((freqs[:, None] * cols[None, :]) % width) / width  # (l, w)
    dft_w = torch.cat([torch.cos(angle_w), -torch.sin(angle_w)])
    weight = torch.full((half, 1), 2.0 / width, dtype=torch.float64)
    weight[0] = 1.0 / width
    if width % 2 == 0 and half > 1:
        weight[-1] = 1.0 / width
    idft_w = torch.cat([weight * torch.cos(angle_w), -weight * torch.sin(angle_w)])
    num_cos, num_sin = height // 2 + 1, (height - 1) // 2
    k_cos = torch.arange(num_cos, dtype=torch.float64)
    k_sin = torch.arange(1, num_sin + 1, dtype=torch.float64)
    angle_cos = 2 * math.pi * ((k_cos[:, None] * rows[None, :]) % height) / height
    angle_sin = 2 * math.pi * ((k_sin[:, None] * rows[None, :]) % height) / height
    half_h = torch.cat([torch.cos(angle_cos), torch.sin(angle_sin)])
    return dft_w, half_h, idft_w, _butterfly_order(height)


def _butterfly_order(height: int) -> Tensor:
    r"""The row frequencies in the order :func:`_butterfly` lists them, ``(H,)``."""
    num_cos, num_sin = height // 2 + 1, (height - 1) // 2
    return torch.cat([torch.arange(num_cos), height - torch.arange(1, num_sin + 1)])


def _butterfly(parts: Tensor, out: Tensor | None = None) -> Tensor:
    r"""The complex DFT along the rows from its cosine and sine transforms.

    ``parts`` ``(H, 2, L)`` holds ``half_h @ z`` (:func:`_fourier_matrices`) for the real and
    imaginary parts of ``L`` complex columns ``z``. With :math:`c_k, s_k` its cosine and sine
    rows, the DFT is :math:`\hat z_k = c_k - i s_k` and :math:`\hat z_{H-k} = c_k + i s_k`, half
    the multiplications of a dense complex DFT. The result ``(H, L, 2)`` (a complex ``(H, L)``)
    lists the frequencies in the order ``order`` of :func:`_fourier_matrices`. Written into
    ``out`` when given, else with out-of-place operations only (for legacy-vmap batched tensors).
    """
    h = parts.shape[0]
    num_cos, num_sin = h // 2 + 1, (h - 1) // 2
    pair = slice(1, num_sin + 1)  # k = 1..num_sin; rows num_cos.. hold H - k
    if out is None:
        cos, sin = parts[:num_cos], parts[num_cos:]
        minus_i_sin = torch.stack([sin[:, 1], -sin[:, 0]], 1)
        top = torch.cat([cos[:1], cos[pair] + minus_i_sin, cos[num_sin + 1 :]])
        return torch.cat([top, cos[pair] - minus_i_sin]).transpose(1, 2).contiguous()
    cos_re, cos_im = parts[:num_cos, 0], parts[:num_cos, 1]
    sin_re, sin_im = parts[num_cos:, 0], parts[num_cos:, 1]
    out_re, out_im = out[..., 0], out[..., 1]
    # k = 0 and, for even H, the Nyquist frequency H/2 (rows 0 and num_cos - 1) have no sine.
    alone = slice(0, num_cos, num_sin + 1)
    out[alone] = parts[alone].transpose(1, 2)
    torch.add(cos_re[pair], sin_im, out=out_re[pair])
    torch.sub(cos_im[pair], sin_re, out=out_im[pair])
    torch.sub(cos_re[pair], sin_im, out=out_re[num_cos:])
    torch.add(cos_im[pair], sin_re, out=out_im[num_cos:])
    return out


def _butterfly_adjoint(spectrum: Tensor, out: Tensor | None = None) -> Tensor:
    r"""The transpose of :func:`_butterfly`, ``(H, L, 2) -> (H, 2, L)``.

    On a spectrum :math:`\hat y` it gives the cosine rows :math:`\hat y_k + \hat y_{H-k}` and the
    sine rows :math:`i(\hat y_k - \hat y_{H-k})`, so that ``half_h.T @ result / H`` is the
    inverse DFT along the rows. Written into ``out`` when given.
    """
    h = spectrum.shape[0]
    num_cos, num_sin = h // 2 + 1, (h - 1) // 2
    pair = slice(1, num_sin + 1)
    if out is None:
        spec = spectrum.transpose(1, 2)
        diff = spec[pair] - spec[num_cos:]
        i_diff = torch.stack([-diff[:, 1], diff[:, 0]], 1)
        total = spec[pair] + spec[num_cos:]
        return torch.cat([spec[:1], total, spec[num_sin + 1 : num_cos], i_diff])
    spec_re, spec_im = spectrum[..., 0], spectrum[..., 1]
    alone = slice(0, num_cos, num_sin + 1)
    out[alone] = spectrum[alone].transpose(1, 2)
    torch.add(spec_re[pair], spec_re[num_cos:], out=out[pair, 0])
    torch.add(spec_im[pair], spec_im[num_cos:], out=out[pair, 1])
    torch.sub(spec_im[num_cos:], spec_im[pair], out=out[num_cos:, 0])
    torch.sub(spec_re[pair], spec_re[num_cos:], out=out[num_cos:, 1])
    return out


def _analyze(images: Tensor, mat_w: Tensor, mat_h: Tensor, scratch: Tensor | None = None) -> Tensor:
    r"""Real images ``(n, H, W)`` to their spectrum ``(H Wf, n, 2)``, ``Wf = W // 2 + 1``.

    With ``(dft_w, half_h)`` of :func:`_fourier_matrices` the 2-D DFT (``rfft`` along the columns,
    complex DFT along the rows) as (Re, Im) pairs, rows ``(k, l)`` with ``k`` in the butterfly
    order; with ``(idft_w, half_h / H)`` the transpose of the inverse DFT (:func:`_synthesize`
    with the same matrices). Two matrix
    products whose operands the BLAS reads in place (transposed where needed) and a butterfly,
    the layout going ``(n, H, W) -> ((p, l), (n, H)) -> ((s, k), (p, l, n)) -> ((k, l), n, q)``
    with ``p, q`` the real and imaginary parts and ``s`` the cosine and sine halves of the row
    DFT. The first product is written into the result, the second into ``scratch`` (at least
    ``2 H Wf n`` entries; allocated when None).
    """
    n, h, w = images.shape
    half = mat_w.shape[0] // 2
    size = 2 * half * n * h
    out = images.new_empty(h * half, n, 2)
    z = split_mm(mat_w, images.reshape(n * h, w).t(), out=out.view(2 * half, n * h))
    scratch = images.new_empty(size) if scratch is None else scratch[:size]
    parts = split_mm(mat_h, z.view(2 * half * n, h).t(), out=scratch.view(h, 2 * half * n))
    return _butterfly(parts.view(h, 2, half * n), out.view(h, half * n, 2)).view(h * half, n, 2)


def _synthesize(spectrum: Tensor, mat_h: Tensor, mat_w: Tensor) -> Tensor:
    r"""A spectrum ``(H Wf, n, 2)`` to real images ``(n, H, W)``: the mirror of :func:`_analyze`.

    With ``(half_h / H, idft_w)`` the inverse DFT (``irfft`` along the columns); with
    ``(half_h, dft_w)`` the transpose of :func:`_analyze`.
    """
    h, w = mat_h.shape[1], mat_w.shape[1]
    n = spectrum.shape[1]
    half = mat_w.shape[0] // 2
    parts = _butterfly_adjoint(spectrum.view(h, half * n, 2), spectrum.new_empty(h, 2, half * n))
    z = split_mm(parts.view(h, 2 * half * n).t(), mat_h)  # ((p, l, n), H)
    del parts
    return split_mm(z.view(2 * half, n * h).t(), mat_w).view(n, h, w)


def _analyze_batched(images: Tensor, mat_w: Tensor, mat_h: Tensor) -> Tensor:
    """:func:`_analyze` with out-of-place operations only (legacy-vmap batched tensors)."""
    n, h, w = images.shape
    half = mat_w.shape[0] // 2
    z = mat_w @ images.reshape(n * h, w).t()
    parts = mat_h @ z.reshape(2 * half * n, h).t()
    return _butterfly(parts.reshape(h, 2, half * n)).reshape(h * half, n, 2)


def _synthesize_batched(spectrum: Tensor, mat_h: Tensor, mat_w: Tensor) -> Tensor:
    """:func:`_synthesize` with out-of-place operations only (legacy-vmap batched tensors)."""
    h, w = mat_h.shape[1], mat_w.shape[1]
    n = spectrum.shape[1]
    half = mat_w.shape[0] // 2
    parts = _butterfly_adjoint(spectrum.reshape(h, half * n, 2))
    z = parts.reshape(h, 2 * half * n).t() @ mat_h
    return (z.reshape(2 * half, n * h).t() @ mat_w).reshape(n, h, w)


def _unbatchable(err: RuntimeError) -> bool:
    """Whether ``err`` is vmap refusing the in-place and ``out=`` operations of a fast path."""
    return "atching rule" in str(err) or "vmap" in str(err)


def _vmap_loop(
    function: Callable[..., Tensor | tuple[Tensor, ...]],
    info: object,
    in_dims: tuple[int | None, ...],
    *args: Tensor | None,
) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    """A vmap rule by a loop over the batch, for the cases that the folding rules do not cover."""
    size: int = info.batch_size  # type: ignore[attr-defined]
    outputs = []
    for i in range(size):
        item = [
            a if d is None or a is None else a.select(d, i)
            for a, d in zip(args, in_dims, strict=True)
        ]
        out = function(*item)
        outputs.append(out if isinstance(out, tuple) else (out,))
    stacked = tuple(torch.stack(parts) for parts in zip(*outputs, strict=True))
    return stacked, (0,) * len(stacked)


def _batch_first(value: Tensor, dim: int | None, size: int) -> Tensor:
    """``value`` with its vmap dimension first (expanded when it has none)."""
    if dim is None:
        return value.expand(size, *value.shape)
    return value.movedim(dim, 0)


class _Analysis(torch.autograd.Function):
    r""":func:`_analyze` as a linear operator; its backward is :class:`_Synthesis` (all orders).

    vmap folds the batch into the images.
    """

    @staticmethod
    def forward(images: Tensor, mat_w: Tensor, mat_h: Tensor) -> Tensor:
        try:
            return _analyze(images, mat_w, mat_h)
        except RuntimeError as err:
            if not _unbatchable(err):
                raise
            return _analyze_batched(images, mat_w, mat_h)

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx,
        inputs: tuple[Tensor, Tensor, Tensor],
        output: Tensor,
    ) -> None:
        ctx.mats = inputs[1:]  # type: ignore[attr-defined]

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None]:
        mat_w, mat_h = ctx.mats  # type: ignore[attr-defined]
        return _Synthesis.apply(grad, mat_h, mat_w), None, None

    @staticmethod
    def jvp(ctx: torch.autograd.function.FunctionCtx, tangent: Tensor, *_: Tensor | None) -> Tensor:
        return _Analysis.apply(tangent, *ctx.mats)  # type: ignore[attr-defined]

    @staticmethod
    def vmap(
        info: object,
        in_dims: tuple[int | None, ...],
        images: Tensor,
        mat_w: Tensor,
        mat_h: Tensor,
    ) -> tuple[Tensor, int]:
        if in_dims[1] is not None or in_dims[2] is not None:
            outputs, dims = _vmap_loop(_Analysis.apply, info, in_dims, images, mat_w, mat_h)
            return outputs[0], dims[0]
        batch = _batch_first(images, in_dims[0], info.batch_size)  # type: ignore[attr-defined]
        spectrum = _Analysis.apply(batch.flatten(0, 1), mat_w, mat_h)
        return spectrum.view(spectrum.shape[0], batch.shape[0], batch.shape[1], 2), 1


class _Synthesis(torch.autograd.Function):
    r""":func:`_synthesize` as a linear operator; its backward is :class:`_Analysis` (all orders).

    vmap folds the batch into the spectra.
    """

    @staticmethod
    def forward(spectrum: Tensor, mat_h: Tensor, mat_w: Tensor) -> Tensor:
        try:
            return _synthesize(spectrum, mat_h, mat_w)
        except RuntimeError as err:
            if not _unbatchable(err):
                raise
            return _synthesize_batched(spectrum, mat_h, mat_w)

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx,
        inputs: tuple[Tensor, Tensor, Tensor],
        output: Tensor,
    ) -> None:
        ctx.mats = inputs[1:]  # type: ignore[attr-defined]

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None]:
        mat_h, mat_w = ctx.mats  # type: ignore[attr-defined]
        return _Analysis.apply(grad, mat_w, mat_h), None, None

    @staticmethod
    def jvp(ctx: torch.autograd.function.FunctionCtx, tangent: Tensor, *_: Tensor | None) -> Tensor:
        return _Synthesis.apply(tangent, *ctx.mats)  # type: ignore[attr-defined]

    @staticmethod
    def vmap(
        info: object,
        in_dims: tuple[int | None, ...],
        spectrum: Tensor,
        mat_h: Tensor,
        mat_w: Tensor,
    ) -> tuple[Tensor, int]:
        if in_dims[1] is not None or in_dims[2] is not None:
            outputs, dims = _vmap_loop(_Synthesis.apply, info, in_dims, spectrum, mat_h, mat_w)
            return outputs[0], dims[0]
        size: int = info.batch_size  # type: ignore[attr-defined]
        batch = _batch_first(spectrum, in_dims[0], size)  # (B, H Wf, n, 2)
        n = batch.shape[2]
        folded = batch.transpose(0, 1).reshape(batch.shape[1], size * n, 2)
        images = _Synthesis.apply(folded, mat_h, mat_w)
        return images.view(size, n, *images.shape[1:]), 0


def _real_pairs(grad: Tensor) -> Tensor:
    r"""The transpose of :class:`_RealBlock`: real ``(F, 2m, 2n)`` blocks to complex ``(F, m, n)``.

    :math:`\mathrm{Re} = B_{rr} + B_{ii}` and :math:`\mathrm{Im} = B_{ri} - B_{ir}` with
    differentiable operations: the gradient of :math:`K` (PyTorch's convention for complex
    tensors) from that of its real block.
    """
    f, m2, n2 = grad.shape
    blocks = grad.reshape(f, m2 // 2, 2, n2 // 2, 2)
    real = blocks[:, :, 0, :, 0] + blocks[:, :, 1, :, 1]
    imag = blocks[:, :, 0, :, 1] - blocks[:, :, 1, :, 0]
    return torch.complex(real, imag)


class _RealBlock(torch.autograd.Function):
    r"""Complex ``(F, m, n)`` matrices as real ``(F, 2m, 2n)`` ones acting on (Re, Im) pairs.

    Right multiplication by :math:`K` maps a row :math:`(\mathrm{Re}\,x, \mathrm{Im}\,x)`
    (pairs interleaved) to :math:`(\mathrm{Re}\,xK, \mathrm{Im}\,xK)`: the real matrix has
    the rows :math:`(\mathrm{Re}\,K, \mathrm{Im}\,K)` for a real part and
    :math:`(-\mathrm{Im}\,K, \mathrm{Re}\,K)` for an imaginary part. The backward is
    :func:`_real_pairs`; vmap folds the batch into the matrices.
    """

    @staticmethod
    def forward(kernel: Tensor) -> Tensor:
        f, m, n = kernel.shape
        parts = torch.view_as_real(kernel)
        try:
            out = parts.new_empty(f, m, 2, n, 2)
            out[:, :, 0] = parts
            torch.neg(parts[..., 1], out=out[:, :, 1, :, 0])
            out[:, :, 1, :, 1] = parts[..., 0]
        except RuntimeError as err:
            if not _unbatchable(err):
                raise
            out = torch.stack([parts, torch.stack([-parts[..., 1], parts[..., 0]], -1)], 2)
        return out.reshape(f, 2 * m, 2 * n)

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor], output: Tensor
    ) -> None:
        pass

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        return _real_pairs(grad)

    @staticmethod
    def jvp(ctx: torch.autograd.function.FunctionCtx, tangent: Tensor) -> Tensor:
        return _RealBlock.apply(tangent)

    @staticmethod
    def vmap(info: object, in_dims: tuple[int | None], kernel: Tensor) -> tuple[Tensor, int | None]:
        if in_dims[0] is None:
            return _RealBlock.apply(kernel), None
        batch = kernel.movedim(in_dims[0], 0)
        block = _RealBlock.apply(batch.flatten(0, 1))
        return block.view(*batch.shape[:2], *block.shape[1:]), 0


def _fourier_conv(
    x: Tensor, kernel: Tensor, constant: Tensor | None, mats: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor]:
    """The forward of :class:`_FourierConv`: ``(output, spectrum of x)``."""
    dft_w, half_h, idft_h, idft_w = mats
    b, c, h, w = x.shape
    o = kernel.shape[-1]
    half = dft_w.shape[0] // 2
    n_in, n_out = 2 * half * b * c * h, 2 * half * b * o * h
    scratch, buffer = x.new_empty(max(n_in, n_out)), x.new_empty(n_out)
    spectrum = _analyze(x.reshape(b * c, h, w), dft_w, half_h, scratch)
    # The mixed spectrum, its cosine/sine parts and the inverse along the rows take turns in
    # the two buffers.
    f = h * half
    y = torch.view_as_complex(scratch[:n_out].view(f, b, o, 2))
    torch.bmm(torch.view_as_complex(spectrum.view(f, b, c, 2)), kernel, out=y)
    parts = buffer.view(h, 2, half * b * o)
    parts = _butterfly_adjoint(torch.view_as_real(y).view(h, half * b * o, 2), parts)
    if constant is not None:
        parts[0, 0, : constant.shape[0]] += constant
    z = split_mm(parts.view(h, n_out // h).t(), idft_h, out=scratch[:n_out].view(n_out // h, h))
    return split_mm(z.view(2 * half, b * o * h).t(), idft_w).view(b, o, h, w), spectrum


def _fourier_conv_backward(
    grad: Tensor,
    x: Tensor,
    kernel: Tensor,
    spectrum: Tensor,
    mats: tuple[Tensor, ...],
    needs: tuple[bool, ...],
) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """The backward of :func:`_fourier_conv` in reused buffers: x, kernel and constant grads."""
    dft_w, half_h, idft_h, idft_w = mats
    b, c, h, w = x.shape
    o = kernel.shape[-1]
    half = dft_w.shape[0] // 2
    n_in, n_out, f = 2 * half * b * c * h, 2 * half * b * o * h, h * half
    scratch = x.new_empty(max(n_in, n_out))
    grad_y = _analyze(grad.reshape(b * o, h, w), idft_w, idft_h, scratch)
    grad_constant = grad_y[0, :, 0]
    grad_kernel = grad_x = None
    if needs[1]:
        # spectrum^H @ grad_y as a real product on (Re, Im) pairs (no conjugated copy).
        pairs = spectrum.view(f, b, 2 * c).transpose(1, 2) @ grad_y.view(f, b, 2 * o)
        grad_kernel = _real_pairs(pairs)
    if needs[0]:
        grad_spectrum = x.new_empty(n_in)
        torch.bmm(
            torch.view_as_complex(grad_y.view(f, b, o, 2)),
            kernel.mH.resolve_conj(),
            out=torch.view_as_complex(grad_spectrum.view(f, b, c, 2)),
        )
        parts = scratch[:n_in].view(h, 2, half * b * c)
        parts = _butterfly_adjoint(grad_spectrum.view(h, half * b * c, 2), parts)
        z = split_mm(parts.view(h, n_in // h).t(), half_h, out=grad_spectrum.view(n_in // h, h))
        grad_x = split_mm(z.view(2 * half, b * c * h).t(), dft_w).view(b, c, h, w)
    return grad_x, grad_kernel, grad_constant


class _FourierConv(torch.autograd.Function):
    r"""The Fourier path of :class:`PowerLayer` in one pass over reused buffers.

    ``x`` ``(b, c, H, W)``, ``kernel`` complex ``(H Wf, c, o)`` (the weight per frequency,
    :meth:`PowerLayer._fourier_kernel`), ``constant`` ``(b o,)`` or None, then the four
    matrices of :func:`_fourier_matrices` (``dft_w, half_h, half_h / H, idft_w``); returns the
    output ``(b, o, H, W)`` and, non-differentiable, the spectrum of ``x`` (kept for the
    backward). The forward is :func:`_analyze`, the channel mixing per frequency (one batched
    complex product) and :func:`_synthesize` with ``constant`` added to the zero frequency, in
    two scratch buffers for all steps: fewer and warmer allocations than separate operations.
    So is the backward. When the backward is itself differentiated (grad mode on) or vmapped,
    it is written instead with :class:`_Analysis`, :class:`_Synthesis`, :class:`_RealBlock`
    and real products, differentiable and vmappable in turn (the spectrum then recomputed as a
    differentiable function of ``x`` when ``x`` needs a gradient).
    """

    @staticmethod
    def forward(
        x: Tensor,
        kernel: Tensor,
        constant: Tensor | None,
        dft_w: Tensor,
        half_h: Tensor,
        idft_h: Tensor,
        idft_w: Tensor,
    ) -> tuple[Tensor, Tensor]:
        mats = (dft_w, half_h, idft_h, idft_w)
        try:
            return _fourier_conv(x, kernel, constant, mats)
        except RuntimeError as err:
            if not _unbatchable(err):
                raise
        b, c, h, w = x.shape
        spectrum = _analyze_batched(x.reshape(b * c, h, w), dft_w, half_h)
        f = spectrum.shape[0]
        y = torch.bmm(spectrum.view(f, b, 2 * c), _RealBlock.apply(kernel))
        out = _synthesize_batched(y.view(f, b * kernel.shape[-1], 2), idft_h, idft_w)
        out = out.view(b, -1, h, w)
        if constant is not None:
            out = out + (constant / (h * w)).view(b, -1, 1, 1)
        return out, spectrum

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx,
        inputs: tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor],
        output: tuple[Tensor, Tensor],
    ) -> None:
        x, kernel = inputs[0], inputs[1]
        ctx.save_for_backward(x, kernel, output[1])
        ctx.save_for_forward(x, kernel)
        ctx.mats = inputs[3:]  # type: ignore[attr-defined]
        ctx.has_constant = inputs[2] is not None  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(output[1])
        # The spectrum's gradient is never used: spare autograd zero-filling one per backward.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor | None, _: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, kernel, spectrum = ctx.saved_tensors  # type: ignore[attr-defined]
        if grad is None:  # only the (non-differentiable) spectrum was used
            return None, None, None, None, None, None, None
        mats = ctx.mats  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        has_constant: bool = ctx.has_constant  # type: ignore[attr-defined]
        grad_x: Tensor | None
        grad_kernel: Tensor | None
        if not torch.is_grad_enabled():
            try:
                grad_x, grad_kernel, constant = _fourier_conv_backward(
                    grad, x, kernel, spectrum, mats, needs
                )
                grad_constant = constant if has_constant and needs[2] else None
                return grad_x, grad_kernel, grad_constant, None, None, None, None
            except RuntimeError as err:
                if not _unbatchable(err):
                    raise
        dft_w, half_h, idft_h, idft_w = mats
        b, c, h, w = x.shape
        o = kernel.shape[-1]
        grad_y = _Analysis.apply(grad.reshape(b * o, h, w), idft_w, idft_h)
        grad_constant = grad_y[0, :, 0] if has_constant and needs[2] else None
        f = grad_y.shape[0]
        grad_y = grad_y.view(f, b, 2 * o)
        grad_kernel = grad_x = None
        if needs[1]:
            if needs[0] and torch.is_grad_enabled():
                spectrum = _Analysis.apply(x.reshape(b * c, h, w), dft_w, half_h)
            grad_kernel = _real_pairs(spectrum.view(f, b, 2 * c).transpose(1, 2) @ grad_y)
        if needs[0]:
            block = _RealBlock.apply(kernel)
            grad_spectrum = (grad_y @ block.transpose(1, 2)).view(f, b * c, 2)
            grad_x = _Synthesis.apply(grad_spectrum, half_h, dft_w).view(b, c, h, w)
        return grad_x, grad_kernel, grad_constant, None, None, None, None

    @staticmethod
    def jvp(
        ctx: torch.autograd.function.FunctionCtx,
        x_tangent: Tensor | None,
        kernel_tangent: Tensor | None,
        constant_tangent: Tensor | None,
        *_: Tensor | None,
    ) -> tuple[Tensor | None, None]:
        # Linear in (x, constant) and in kernel; the matrices are constants.
        x, kernel = ctx.saved_tensors  # type: ignore[attr-defined]
        mats = ctx.mats  # type: ignore[attr-defined]
        out: Tensor | None = None
        if x_tangent is not None or constant_tangent is not None:
            x_part = torch.zeros_like(x) if x_tangent is None else x_tangent
            out = _FourierConv.apply(x_part, kernel, constant_tangent, *mats)[0]
        if kernel_tangent is not None:
            kernel_part = _FourierConv.apply(x, kernel_tangent, None, *mats)[0]
            out = kernel_part if out is None else out + kernel_part
        return out, None

    @staticmethod
    def vmap(
        info: object,
        in_dims: tuple[int | None, ...],
        x: Tensor,
        kernel: Tensor,
        constant: Tensor | None,
        *mats: Tensor,
    ) -> tuple[tuple[Tensor, Tensor], tuple[int, int]]:
        size: int = info.batch_size  # type: ignore[attr-defined]
        if any(d is not None for d in (in_dims[1], *in_dims[3:])):
            args = (x, kernel, constant, *mats)
            outputs, dims = _vmap_loop(_FourierConv.apply, info, in_dims, *args)
            return (outputs[0], outputs[1]), (dims[0], dims[1])
        batch = _batch_first(x, in_dims[0], size)
        b = batch.shape[1]
        if constant is not None:
            constant = _batch_first(constant, in_dims[2], size).reshape(-1)
        out, spectrum = _FourierConv.apply(batch.flatten(0, 1), kernel, constant, *mats)
        spectrum = spectrum.view(spectrum.shape[0], size, spectrum.shape[1] // size, 2)
        return (out.view(size, b, *out.shape[1:]), spectrum), (0, 1)


#: Largest condition number of a factor's eigenvector matrix for which its powers are taken
#: through the eigendecomposition (the error grows like cond * eps); beyond, matrix_exp.
_EIGEN_COND = 1e3

#: The ``"fourier"`` path through ``torch.fft`` (one cuFFT call per transform, natural frequency
#: order, plain autograd) on every device but the CPU, where the matrix DFTs of
#: :class:`_FourierConv` are faster at image sizes. Tests set it to run the FFT path on the CPU.
_FFT_ON_CPU = False


def _uses_fft(device: torch.device) -> bool:
    return device.type != "cpu" or _FFT_ON_CPU


def _is_circulant(matrix: Tensor) -> bool:
    scale = max(float(matrix.abs().amax()), 1e-300)
    shifted = torch.roll(matrix, shifts=(1, 1), dims=(0, 1))
    return bool((matrix - shifted).abs().amax() <= 1e-12 * scale)


def _is_antisymmetric(matrices: Tensor) -> bool:
    scale = max(float(matrices.abs().amax()), 1e-300)
    return bool((matrices + matrices.mT).abs().amax() <= 1e-12 * scale)


class _EigenExp(torch.autograd.Function):
    r"""``exp(c_j G_j) = Re(V_j diag(exp(A_j t)) W_j)`` for every exponential ``j`` of a batch.

    Inputs: the magnitudes ``t`` ``(m,)``, the rates ``A`` ``(N, n, m)`` complex (each
    exponential's coefficient :math:`c_j = s_j^\top t` times its factor's eigenvalues, so that
    :math:`c_j \mu = A_j t`), and the factor's eigenvectors ``V`` ``(N, n, n)`` and
    :math:`W = V^{-1}` (or :math:`V^H`) gathered per exponential. Output ``(N, n, n)`` float64.

    The gradient is closed form: with :math:`\varphi = \exp(A t)` and an upstream gradient
    :math:`\bar E_j`, :math:`\partial_t = \mathrm{Re} \sum_{j,q} g_{jq} \varphi_{jq} A_{jq}`
    where :math:`g_{jq} = \sum_i V_{j,iq} (\bar E_j W_j^\top)_{iq}`: about half the
    operations of autograd through the complex products (which resolves every conjugate with a
    copy). Written with differentiable operations (the phases recomputed from
    ``t``), so second derivatives are exact too; torch.func transforms use the generated vmap
    rule and :meth:`jvp`.
    """

    generate_vmap_rule = True

    @staticmethod
    def _phases(t: Tensor, rates: Tensor) -> Tensor:
        return torch.exp(rates @ t.to(rates.dtype))

    @staticmethod
    def forward(t: Tensor, rates: Tensor, left: Tensor, right: Tensor) -> Tensor:
        phase = _EigenExp._phases(t, rates)
        return ((left * phase[:, None, :]) @ right).real

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx,
        inputs: tuple[Tensor, Tensor, Tensor, Tensor],
        output: Tensor,
    ) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def jvp(ctx: torch.autograd.function.FunctionCtx, tangent: Tensor, *_: Tensor | None) -> Tensor:
        t, rates, left, right = ctx.saved_tensors  # type: ignore[attr-defined]
        rate = rates @ tangent.to(rates.dtype)
        phase = _EigenExp._phases(t, rates) * rate
        return ((left * phase[:, None, :]) @ right).real

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None, None]:
        t, rates, left, right = ctx.saved_tensors  # type: ignore[attr-defined]
        weights = (left * (grad.to(left.dtype) @ right.mT)).sum(-2) * _EigenExp._phases(t, rates)
        grad_t = (weights.reshape(1, -1) @ rates.reshape(-1, rates.shape[-1])).real
        return grad_t.reshape(t.shape).to(t.dtype), None, None, None


def _cast(op: Tensor, dtype: torch.dtype) -> Tensor:
    """Real operators to ``dtype``, complex ones to its complex counterpart."""
    if op.is_complex():
        return op.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
    return op.to(dtype)


def _products(blocks: Sequence[Tensor]) -> Tensor:
    r"""All ordered products ``B1[i1] @ B2[i2] @ ...``, ``(prod n_k, d, d)``, row-major in i."""
    out = blocks[0]
    for block in blocks[1:]:
        d = out.shape[-1]
        out = (out[:, None] @ block[None]).reshape(-1, d, d)
    return out


def _ravel(indices: Tensor, sizes: Sequence[int]) -> Tensor:
    flat = torch.zeros(indices.shape[0], dtype=torch.long)
    for column, size in enumerate(sizes):
        flat = flat * size + indices[:, column]
    return flat


class PowerLayer(RelaxedModule):
    r"""Laurent convolution with base matrices :math:`A_k = \exp(t_k G_k)` (003 sec. 3.1-3.4).

    .. math::

        y^{(o)} = \sum_{c} \sum_{i_1..i_m = -K}^{K} \theta^{(o, c)}_{i_1 \dots i_m}
            A_1^{i_1 D} \cdots A_m^{i_m D} \, x^{(c)} + b^{(o)}

    (003 sec. 3.2 with dilation as in sec. 3.4). The mixed products run over all index
    combinations, in generator order. The layer is linear; 003's PowerLayer also applies the
    non-linearity, here :class:`PowerBlock` does. The bias is one value per output channel, so
    pixel permutations that commute with the weight also commute with the bias.

    The weight is a function of the generators only, so the layer commutes exactly with
    :math:`\exp(sG_k)` for every ``s`` when there is one generator (or commuting ones), whatever
    the magnitudes. What the magnitude sets is the step of the kernel along the orbit: with shift
    generators on odd-sized images and :math:`t = 1` the base matrices are exact pixel shifts and
    the layer is a circular convolution with a local ``(2K+1) x (2K+1)`` kernel (003 sec. 3.5);
    with :math:`t \ne 1` the taps sit at fractional shifts, band-limited (sinc) interpolation
    spreads them over the whole periodic image, and the layer stops being equivariant to
    translations of the plane (non-periodic), while staying equivariant to cyclic shifts.

    Relaxation parameters: ``magnitudes`` :math:`t` (family ``"power"``, role ``"magnitude"``),
    strict value the reference magnitudes given at construction.
    :meth:`equivariance_level` is :math:`\lVert t - t_{\mathrm{strict}} \rVert_2` (for a single
    generator :math:`|t - t_{\mathrm{strict}}|`).

    Parameters
    ----------
    base_generators : ImageGenerator, Tensor or sequence of them
        ``m`` generators :math:`G_k`. :class:`ImageGenerator` s (see :func:`image_generators`)
        make an image layer with inputs ``(..., in_channels, H, W)``; plain ``(d, d)`` tensors (or
        one ``(m, d, d)`` tensor) a layer on vectors ``(..., in_channels, d)``. The path follows
        the generators (attribute ``path``): ``"fourier"`` when every generator is a Kronecker
        sum of circulant factors (the shifts), ``"separable"`` when every generator is a
        Kronecker sum (``x d/dx``, ``y d/dy``, scaling), ``"dense"`` otherwise.
    powers : int or sequence of int
        ``K >= 0``: powers ``-K..K`` of each base matrix (one value, or one per generator).
    in_channels, out_channels : int
    dilation : int
        ``D >= 1``, the powers are multiplied by ``D``. A shift generator's kernel window,
        ``2 K D + 1`` pixels, must fit in the image along each axis it acts on.
    magnitudes : float, sequence of float or Tensor, keyword-only
        Initial and reference (strict) magnitudes :math:`t_k`, default 1.
    bias : bool, keyword-only
        Whether to add a per-channel bias.

    Raises
    ------
    ValueError
        Besides malformed arguments: when a shift generator (a Kronecker sum of circulant
        factors) has a window ``2 K D + 1`` larger than the image height or width it acts on
        (:func:`_check_shift_windows`): its powers would wrap around the periodic image and
        alias. A window equal to the image size is allowed.

    Attributes
    ----------
    weight : Parameter
        :math:`\theta`, ``(out_channels, in_channels, 2K_1+1, ..., 2K_m+1)``; index ``i + K``
        holds power ``i``.
    bias : Parameter or None
        ``(out_channels,)``.
    magnitudes : Parameter
        :math:`t`, ``(m,)``.

    Notes
    -----
    The powers :math:`A_k^{iD} = \exp(iDt_kG_k)` come from one batched evaluation over all
    ``(k, i)``, never a loop over powers:

    * ``"fourier"``: circulant factors are diagonal in the discrete Fourier basis, so the powers
      are :math:`\exp(iDt_k\lambda)` on the DFT eigenvalues :math:`\lambda` of the factors and
      the layer is one channel mixing per frequency between a 2-D DFT and its inverse. The
      multipliers of all power products are :math:`\exp(Lt)` for one constant matrix
      :math:`L` (their logarithms are linear in :math:`t`), so the weight in the Fourier domain
      is three operations whatever the number of generators and powers. On the CPU the DFTs are
      matrix products along each axis (an ``rfft`` along the columns, cosine and sine transforms
      combined by a butterfly along the rows), twice as fast as FFTs at image sizes, in a memory
      layout that the products read and write in place, the bias added as the zero frequency
      (see :class:`_FourierConv`); on other devices, where every extra kernel launch costs more
      than the arithmetic at these sizes, ``torch.fft.rfft2`` and ``irfft2``;
    * ``"separable"``: the 1-D factors :math:`\exp(iDt_kR_k)` ``(H, H)`` and
      :math:`\exp(iDt_kC_k)` ``(W, W)`` are applied along the image axes
      (:math:`\exp(t(R \oplus C)) = \exp(tR) \otimes \exp(tC)`);
    * ``"dense"``: ``(d, d)`` matrices.

    Antisymmetric generators (shifts, rotation, shears) are exponentiated through their
    eigendecomposition (computed once), :math:`\exp(cG) = V \mathrm{diag}(e^{c\mu}) V^H`;
    other diagonalisable ones whose eigenvectors are well conditioned (the scaling factors)
    likewise with :math:`V^{-1}` for :math:`V^H` (accurate to about
    :math:`\mathrm{cond}(V)\,\epsilon`, used up to :data:`_EIGEN_COND`). Both take one batched
    product per forward, with a closed-form derivative (:class:`_EigenExp`), and a square
    image's row and column factors share the batch. The rest use
    :func:`torch.linalg.matrix_exp`, whose derivative in :math:`t` is taken in closed form,
    :math:`G\exp(cG)`. The powers are cached
    while the magnitudes keep their value (keyed on the value, dtype and device) and recomputed
    in every forward that needs gradients with respect to the magnitudes; on the ``"fourier"``
    path the weight in the Fourier domain likewise, keyed on the values of :math:`\theta` and
    :math:`t`.

    Examples
    --------
    >>> import torch
    >>> from symprior.nn.power import PowerLayer, image_generators
    >>> _ = torch.manual_seed(0)
    >>> layer = PowerLayer(image_generators(5, 5, "translation"), 1, 2, 3)
    >>> x = torch.randn(4, 2, 5, 5)
    >>> layer(x).shape
    torch.Size([4, 3, 5, 5])
    >>> shifted = torch.roll(x, 1, dims=-1)  # one pixel to the right, periodic
    >>> torch.allclose(layer(shifted), torch.roll(layer(x), 1, dims=-1), atol=1e-5)
    True
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    magnitudes: nn.Parameter
    strict_magnitudes: Tensor
    pair_placement: Tensor
    shared_rates: Tensor
    shared_left: Tensor
    shared_right: Tensor

    def __init__(
        self,
        base_generators: GeneratorsLike,
        powers: int | Sequence[int],
        in_channels: int,
        out_channels: int,
        dilation: int = 1,
        *,
        magnitudes: float | Sequence[float] | Tensor = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        images, matrices = _as_generators(base_generators)
        m = len(matrices)
        self.num_generators = m
        self.powers = _as_powers(powers, m)
        self.in_channels = _check_size(in_channels, "in_channels")
        self.out_channels = _check_size(out_channels, "out_channels")
        self.dilation = _check_size(dilation, "dilation")
        _check_shift_windows(images, self.powers, self.dilation)
        self.image_shape: tuple[int, int] | None = (
            None if images is None else (images[0].height, images[0].width)
        )
        self.size = matrices[0].shape[0]
        sizes = [2 * p + 1 for p in self.powers]

        t0 = _as_magnitudes(magnitudes, m)
        self.magnitudes = nn.Parameter(t0.clone().to(torch.get_default_dtype()))
        self.register_buffer("strict_magnitudes", t0.clone())
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, *sizes))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None

        # A factor group is the set of generators acting on one axis (rows, columns) or on the
        # whole flattened input (dense); the powers of a group come from one batched evaluation.
        self._groups: dict[str, tuple[list[int], list[int], str]] = {}
        self.path: str
        if images is not None and all(g.separable for g in images):
            h, w = images[0].height, images[0].width
            rows = [(k, g.row) for k, g in enumerate(images) if g.row is not None]
            cols = [(k, g.col) for k, g in enumerate(images) if g.col is not None]
            circulant = all(_is_circulant(f) for _, f in rows + cols)
            self.path = "fourier" if circulant else "separable"
            self._register_group("row", [k for k, _ in rows], [f for _, f in rows], h, circulant)
            self._register_group("col", [k for k, _ in cols], [f for _, f in cols], w, circulant)
            row_sizes, col_sizes = self._groups["row"][1], self._groups["col"][1]
            # Every index combination of theta lands on one (row combination, column
            # combination) pair; a generator with both factors (scaling) couples the two.
            grid = _weight_index(self.powers)
            num_cols = math.prod(col_sizes)
            pair = _ravel(grid[:, [k for k, _ in rows]], row_sizes) * num_cols + _ravel(
                grid[:, [k for k, _ in cols]], col_sizes
            )
            self._pair_is_identity = bool(
                pair.numel() == math.prod(row_sizes) * num_cols
                and torch.equal(pair, torch.arange(pair.numel()))
            )
        else:
            self.path = "dense"
            self._register_group("dense", list(range(m)), matrices, self.size, False)
            pair = torch.zeros(0, dtype=torch.long)
            self._pair_is_identity = True
        # pair_placement[p, n] = 1 where theta's index combination n lands on grid pair p.
        placement = torch.zeros(0, pair.numel())
        if not self._pair_is_identity:
            placement = torch.zeros(math.prod(row_sizes) * num_cols, pair.numel())
            placement[pair, torch.arange(pair.numel())] = 1.0
        self.register_buffer("pair_placement", placement, persistent=False)
        # Row and column factors of one size that are both diagonalised share one batch of
        # exponentials (_compute_operators): half the operations per step.
        diagonalised = [
            name
            for name, (members, _, method) in self._groups.items()
            if members and method in ("spectral", "eigen")
        ]
        self._shared_eigen = (
            diagonalised == ["row", "col"]
            and self.get_buffer("row_left").shape[1:] == self.get_buffer("col_left").shape[1:]
        )
        # Exponentials of the row factors at the front of the shared batch (0 when unshared).
        self._shared_rows = self.get_buffer("row_rates").shape[0] if self._shared_eigen else 0
        empty = torch.zeros(0, dtype=torch.complex128)
        for suffix in ("rates", "left", "right"):
            shared = empty
            if self._shared_eigen:  # the batch holds the only copy
                shared = torch.cat([self.get_buffer(f"{n}_{suffix}") for n in diagonalised])
                for n in diagonalised:
                    self.register_buffer(f"{n}_{suffix}", empty, persistent=False)
            self.register_buffer(f"shared_{suffix}", shared, persistent=False)
        self._cache: tuple[Tensor, torch.dtype, torch.device, tuple[Tensor, ...]] | None = None
        self._dft_cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, ...]] = {}
        self._kernel_cache: tuple[Tensor, Tensor, bool, Tensor] | None = None
        self._logs_cache: dict[tuple[torch.device, bool, torch.dtype], Tensor] = {}
        self._placement: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self.reset_parameters()

    def _register_group(
        self, name: str, members: list[int], factors: list[Tensor], size: int, circulant: bool
    ) -> None:
        gens = torch.stack(factors) if factors else torch.zeros(0, size, size, dtype=torch.float64)
        owner, scale, sizes = _exponent_table(members, self.powers, self.dilation)
        # coeff = select @ t: each exponential's i D t_k, one product (no indexing of t).
        select = torch.zeros(len(owner), self.num_generators, dtype=torch.float64)
        if members:
            select[torch.arange(len(owner)), torch.tensor(members)[owner]] = scale
        method = "matrix_exp"
        vectors = torch.zeros(0, dtype=torch.complex128)
        rates = left = right = torch.zeros(0, dtype=torch.complex128)
        if circulant and factors:
            # A circulant matrix with first column g is diagonal in the DFT basis, with
            # eigenvalues fft(g).
            method = "fourier"
            vectors = torch.fft.fft(gens[:, :, 0], dim=-1)
        elif factors and _is_antisymmetric(gens):
            # iG is Hermitian: iG = V diag(mu) V^H with unitary V, so
            # exp(cG) = V diag(exp(-i c mu)) V^H.
            method = "spectral"
            gens = (gens - gens.mT) / 2
            spectrum, vectors = torch.linalg.eigh(1j * gens)
            rates, left, right = -1j * spectrum.to(torch.complex128), vectors, vectors.mH
        elif factors:
            # G = V diag(mu) V^-1 when G is diagonalisable with well-conditioned eigenvectors
            # (the scaling factors x d/dx: cond(V) = 75 at 28 pixels), so that
            # exp(cG) = V diag(exp(c mu)) V^-1 holds to ~cond(V) eps; else matrix_exp.
            mu, vec = torch.linalg.eig(gens)
            if bool((torch.linalg.cond(vec) <= _EIGEN_COND).all()):
                method = "eigen"
                rates, left, right = mu, vec, torch.linalg.inv(vec)
        if method in ("spectral", "eigen"):
            # Per exponential j: exp(c_j G) = left_j diag(exp(rates_j @ t)) right_j, with the
            # factor's eigenvectors gathered by exponential and c_j = select_j @ t folded into
            # the rates (N, n, m), so that a forward is five operations (_group_operator).
            rates = rates[owner][:, :, None] * select.to(torch.complex128)[:, None, :]
            left, right = left[owner], right[owner]
        # Derived from the generators: not part of the state dict.
        for suffix, value in (
            ("generators", gens),
            ("owner", owner),
            ("select", select),
            ("vectors", vectors),
            ("rates", rates),
            ("left", left),
            ("right", right),
        ):
            self.register_buffer(f"{name}_{suffix}", value, persistent=False)
        self._groups[name] = (members, sizes, method)

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        r"""Uniform :math:`\theta` and bias in :math:`\pm 1/\sqrt{\mathrm{fan\_in}}` (as Conv2d)."""
        fan_in = self.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def relaxations(self) -> dict[str, Relaxation]:
        r"""``{"magnitudes": Relaxation("power", "magnitude", reference magnitudes)}``."""
        return {"magnitudes": Relaxation("power", "magnitude", self.strict_magnitudes)}

    def equivariance_level(self) -> Tensor:
        r""":math:`\lVert t - t_{\mathrm{strict}} \rVert_2`, zero exactly at the reference.

        What a magnitude away from its reference breaks: the weight is a polynomial in
        :math:`A_k = \exp(t_k G_k)`, which commutes with :math:`\exp(s G_k)` for every ``t_k``
        (003 sec. 3.4), so a layer with one base matrix stays equivariant to the flow of its
        own generator at any magnitude (a rotation layer stays rotation-equivariant). The
        magnitude moves the taps off the reference steps: for shift generators, whole-pixel
        shifts become band-limited fractional shifts that spread over the periodic image, which
        breaks equivariance to translations of the plane (zero padding, no wrap-around) and the
        locality of the kernel; with several generators that do not commute, the relative
        magnitudes change which transformations the mixed products represent (003 sec. 3.2).
        """
        t = self.magnitudes
        return torch.linalg.vector_norm(t - self.strict_magnitudes.to(t))

    def _relaxation_changed(self) -> None:
        self._cache = None
        self._kernel_cache = None

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PowerLayer:
        # Every buffer is a constant (float64 magnitudes and generators, complex128 spectra,
        # indices) that keeps its dtype when the module is cast (``.float()``, ``.to(dtype)``):
        # only the parameters go through ``fn``, the buffers follow its device.
        constants = dict(self._buffers)
        self._buffers.clear()
        try:
            out = super()._apply(fn, recurse)
        finally:
            reference = next((v for v in constants.values() if v is not None), None)
            device = None
            if reference is not None:
                device = fn(torch.zeros(0, dtype=torch.float64, device=reference.device)).device
            self._buffers.update(
                {k: v if v is None else v.to(device=device) for k, v in constants.items()}
            )
            self._cache = None
            self._dft_cache = {}
            self._kernel_cache = None
            self._logs_cache = {}
            self._placement = {}
        return out

    # ------------------------------------------------------------------ operators
    def _group_operator(self, name: str, exps: Tensor | None = None) -> Tensor:
        r"""All ordered products of the powers of one factor group.

        ``(N, n, n)`` float64 matrices (the ``"separable"`` and ``"dense"`` paths; the
        ``"fourier"`` path builds its weight from :meth:`_fourier_logs` instead); empty when the
        group has no generator. ``exps``: the group's exponentials, when already computed
        (:meth:`_compute_operators`).
        """
        members, sizes, method = self._groups[name]
        gens: Tensor = getattr(self, f"{name}_generators")
        if not members:
            return gens.new_zeros(0)
        if exps is None and method in ("spectral", "eigen"):
            exps = _EigenExp.apply(
                self.magnitudes,
                getattr(self, f"{name}_rates"),
                getattr(self, f"{name}_left"),
                getattr(self, f"{name}_right"),
            )
        elif exps is None:
            owner: Tensor = getattr(self, f"{name}_owner")
            coeff = getattr(self, f"{name}_select") @ self.magnitudes.to(torch.float64)
            exps = _ScaledExp.apply(coeff, gens[owner])
        return _products([exps] if len(sizes) == 1 else list(torch.split(exps, sizes)))

    def _compute_operators(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        r"""The operators of :meth:`_operators` (float64, or ``dtype`` where that saves a cast)."""
        if self.path == "dense":
            return (self._group_operator("dense"),)
        if self._shared_eigen:
            # Both axes' exponentials in one batch (square images, both diagonalised), cast
            # once when no products follow.
            exps = _EigenExp.apply(
                self.magnitudes, self.shared_rates, self.shared_left, self.shared_right
            )
            if all(len(self._groups[name][1]) == 1 for name in ("row", "col")):
                exps = _cast(exps, dtype)
            rows, cols = torch.split(exps, [self._shared_rows, exps.shape[0] - self._shared_rows])
            return self._group_operator("row", rows), self._group_operator("col", cols)
        return self._group_operator("row"), self._group_operator("col")

    def _operators(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        t = self.magnitudes
        if (torch.is_grad_enabled() and t.requires_grad) or not has_storage(t):
            return tuple(_cast(op, dtype) for op in self._compute_operators(dtype))
        if self._cache is not None:
            key, key_dtype, key_device, ops = self._cache
            if (
                key_dtype == dtype
                and key_device == device
                and key.dtype == t.dtype
                and key.device == t.device
                and torch.equal(key, t.detach())
            ):
                return ops
        ops = tuple(_cast(op, dtype) for op in self._compute_operators(dtype))
        self._cache = (t.detach().clone(), dtype, device, tuple(cacheable(op) for op in ops))
        return ops

    def generator_matrices(self) -> Tensor:
        r"""The dense generators :math:`G_k`, ``(m, d, d)`` in float64."""
        if self.path == "dense":
            return self.get_buffer("dense_generators")
        h, w = self.image_shape or (0, 0)
        out = self.strict_magnitudes.new_zeros(self.num_generators, h * w, h * w)
        eye_h = torch.eye(h, dtype=out.dtype, device=out.device)
        eye_w = torch.eye(w, dtype=out.dtype, device=out.device)
        for position, k in enumerate(self._groups["row"][0]):
            out[k] += torch.kron(self.get_buffer("row_generators")[position], eye_w)
        for position, k in enumerate(self._groups["col"][0]):
            out[k] += torch.kron(eye_h, self.get_buffer("col_generators")[position])
        return out

    def base_matrices(self) -> Tensor:
        r"""The dense base matrices :math:`A_k = \exp(t_k G_k)`, ``(m, d, d)`` in float64."""
        t = self.magnitudes.to(torch.float64)
        return torch.linalg.matrix_exp(t[:, None, None] * self.generator_matrices())

    def dense_weight(self) -> Tensor:
        r"""The full weight :math:`\sum_i \theta_i \prod_k A_k^{i_k D}`, ``(out, in, d, d)``.

        Built with dense ``(d, d)`` matrix exponentials, independently of the fast path: meant
        for inspection and tests on small inputs.
        """
        sizes = [2 * p + 1 for p in self.powers]
        owner, scale, _ = _exponent_table(range(self.num_generators), self.powers, self.dilation)
        gens = self.generator_matrices()
        owner, scale = owner.to(gens.device), scale.to(gens.device)
        coeff = scale * self.magnitudes.to(torch.float64)[owner]
        exps = torch.linalg.matrix_exp(coeff[:, None, None] * gens[owner])
        products = _products(list(torch.split(exps, sizes)))
        theta = self.weight.to(torch.float64).reshape(self.out_channels, self.in_channels, -1)
        return torch.einsum("ocn,nde->ocde", theta, products)

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if self.image_shape is not None:
            if x.ndim < 3:
                raise ValueError(
                    f"x must have shape (..., {self.in_channels}, H, W), got {tuple(x.shape)}"
                )
            if tuple(x.shape[-2:]) != self.image_shape:
                h, w = self.image_shape
                raise ValueError(
                    f"x has images of size {x.shape[-2]}x{x.shape[-1]}, the base generators act "
                    f"on {h}x{w} images"
                )
            channels = x.shape[-3]
        else:
            if x.ndim < 2:
                raise ValueError(
                    f"x must have shape (..., {self.in_channels}, {self.size}), got "
                    f"{tuple(x.shape)}"
                )
            if x.shape[-1] != self.size:
                raise ValueError(
                    f"x has feature size {x.shape[-1]}, the base generators are "
                    f"{self.size}x{self.size}"
                )
            channels = x.shape[-2]
        if channels != self.in_channels:
            raise ValueError(
                f"x has {channels} channels, the layer expects in_channels={self.in_channels}"
            )
        # Any floating dtype: the layer computes in x's (its parameters are cast to it).
        check_floating(x, "x")
        check_device(x, self.weight, "x")

    def forward(self, x: Tensor) -> Tensor:
        r"""Apply the layer.

        Parameters
        ----------
        x : Tensor
            ``(..., in_channels, H, W)`` for image generators, else ``(..., in_channels, d)``.

        Returns
        -------
        Tensor
            ``(..., out_channels, H, W)`` or ``(..., out_channels, d)``.
        """
        self._check_input(x)
        spatial = 2 if self.image_shape is not None else 1
        lead = x.shape[: -spatial - 1]
        xb = x.reshape(-1, self.in_channels, *x.shape[x.ndim - spatial :])
        # The Fourier path builds its weight from the magnitudes directly (_fourier_kernel).
        ops = () if self.path == "fourier" else self._operators(x.dtype, x.device)
        theta = self.weight.to(x.dtype).reshape(self.out_channels, self.in_channels, -1)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.path == "dense":
            y = self._forward_dense(xb.reshape(xb.shape[0], self.in_channels, -1), theta, ops[0])
        elif self.path == "fourier":
            natural = _uses_fft(x.device)
            kernel = self._fourier_kernel(theta, natural)
            if natural:
                y = self._forward_fft(xb, kernel)
            else:
                y = self._forward_fourier(xb, kernel, bias)
                bias = None  # added as the zero frequency
        else:
            y = self._forward_separable(xb, *self._mixing(theta, ops[0], ops[1]), *ops)
        if bias is not None:
            y = y + bias.reshape(-1, *([1] * (y.ndim - 2)))
        return y.reshape(*lead, self.out_channels, *x.shape[x.ndim - spatial :])

    def _mixing(self, theta: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, int, int]:
        r"""``theta`` ``(out, in, N)`` as the channel-mixing matrix of :meth:`_forward_separable`,
        ``(out R, S in)`` with rows ``(o, r)`` and columns ``(s, c)``, for ``R`` row and ``S``
        column combinations.

        When the weight's index combinations are not the whole (row, column) grid (a generator
        with both factors, such as the scaling, couples them), the mixing matrix is zero off
        their pairs: one batched product with the 0/1 placement matrix, which also puts the axes
        in order (one operation where zero-filling, scattering and reordering take three).
        """
        num_rows = rows.shape[0] if rows.numel() else 1
        num_cols = cols.shape[0] if cols.numel() else 1
        out, n_in = theta.shape[:2]
        if self._pair_is_identity:
            grid = theta.view(out, n_in, num_rows, num_cols).permute(0, 2, 3, 1)
            return grid.reshape(out * num_rows, num_cols * n_in), num_rows, num_cols
        key = (theta.dtype, theta.device)
        if key not in self._placement:  # (R S, N), 0/1 in theta's dtype
            with filling_cache():
                self._placement[key] = self.pair_placement.to(theta)
        placement = self._placement[key]
        mixing = torch.matmul(placement, theta.transpose(1, 2))  # (out, R S, in)
        return mixing.view(out * num_rows, num_cols * n_in), num_rows, num_cols

    def _dft(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        key = (dtype, device)
        if key not in self._dft_cache:
            h, w = self.image_shape or (1, 1)
            with filling_cache():
                dft_w, half_h, idft_w, _ = _fourier_matrices(h, w)
                self._dft_cache[key] = tuple(
                    m.to(dtype=dtype, device=device) for m in (dft_w, half_h, half_h / h, idft_w)
                )
        return self._dft_cache[key]

    def _fourier_logs(self, device: torch.device, natural: bool, dtype: torch.dtype) -> Tensor:
        r"""The logarithms of the DFT multipliers of every power product, linear in :math:`t`.

        A circulant factor is diagonal in the Fourier basis, so the product indexed by
        :math:`\theta` entry ``n`` multiplies frequency ``(k, l)`` by
        :math:`\exp(\sum_g i_g(n) D t_g (\lambda^{row}_g[k] + \lambda^{col}_g[l]))` (the DFT
        eigenvalues of generator ``g``'s factors; a missing factor contributes 0). The exponent
        is ``L @ t`` with the constant ``L`` returned here as real pairs, ``(N F 2, m)``, rows
        ``(n, k, l, re/im)`` with ``F = H (W // 2 + 1)``: ``k`` in natural order for the FFT
        path, else in the order of :func:`_butterfly`. Built once per device, order and dtype.

        ``L`` comes in the real ``dtype`` while the phases per unit magnitude,
        :math:`\sum_g |L_{nkl,g}|`, stay within :math:`2\pi` (the first powers of the shifts),
        else in float64: a phase rounded to float32 carries an error of about
        :math:`|\varphi| 2^{-24}` into its multiplier, which high powers or dilations would
        make many times the rounding of the float32 weight itself.
        """
        key = (device, natural, dtype)
        if key not in self._logs_cache:
            h, w = self.image_shape or (1, 1)
            half = w // 2 + 1
            m = self.num_generators
            eig = torch.zeros(m, h, half, dtype=torch.complex128)
            for position, k in enumerate(self._groups["row"][0]):
                eig[k] += self.get_buffer("row_vectors")[position].cpu()[:, None]
            for position, k in enumerate(self._groups["col"][0]):
                eig[k] += self.get_buffer("col_vectors")[position].cpu()[None, :half]
            if not natural:
                eig = eig[:, _butterfly_order(h)]
            index = _weight_index(self.powers)
            exponent = (index - torch.tensor(self.powers)).to(torch.float64) * self.dilation
            logs = exponent[:, None, :] * eig.reshape(m, -1).T[None]  # (N, F, m)
            pairs = torch.view_as_real(logs).transpose(-1, -2).reshape(-1, m)
            if float(logs.abs().sum(-1).amax()) > 2 * math.pi:
                dtype = torch.float64
            self._logs_cache[key] = cacheable(pairs.to(device=device, dtype=dtype).contiguous())
        return self._logs_cache[key]

    def _fourier_kernel(self, theta: Tensor, natural: bool) -> Tensor:
        r"""The channel mixing per frequency, complex ``(H Wf, in, out)`` (``Wf = W // 2 + 1``).

        The weight in the Fourier domain, :math:`K^{(o,c)}_{kl} = \sum_n \theta^{(o,c)}_n
        P_{n,kl}` with :math:`P = \exp(L t)` the DFT multipliers of every power product
        (:meth:`_fourier_logs`): one matrix-vector product, one exponential and one product with
        :math:`\theta`, whatever the number of generators and powers. Row frequencies in natural
        order (``natural``, the FFT path) or in that of :func:`_butterfly`, as ``(in, out)``
        matrices that multiply the spectra from the right. Cached while nothing needs gradients
        and neither :math:`\theta` nor :math:`t` changes (compared by value).
        """
        t = self.magnitudes
        grad = torch.is_grad_enabled()
        frozen = not any((grad and v.requires_grad) or not has_storage(v) for v in (theta, t))
        if frozen and self._kernel_cache is not None:
            key_theta, key_t, key_natural, kernel = self._kernel_cache
            if (
                key_natural == natural
                and key_theta.dtype == theta.dtype
                and key_theta.device == theta.device
                and key_t.dtype == t.dtype
                and key_t.device == t.device
                and torch.equal(key_t, t)
                and torch.equal(key_theta, theta)
            ):
                return kernel
        # Real arithmetic on (re, im) pairs wherever theta enters (no complex copy of it, no
        # conjugate resolved by a copy in the backward): a matrix-vector product, the
        # exponential, one real matrix product, one reordering copy (and two casts when the
        # phases need float64).
        o, c, n = theta.shape
        logs = self._fourier_logs(theta.device, natural, theta.dtype)
        exponent = torch.view_as_complex((logs @ t.to(logs.dtype)).view(n, -1, 2))
        pairs = torch.view_as_real(torch.exp(exponent)).reshape(n, -1).to(theta.dtype)  # (N, 2F)
        mixed = torch.view_as_complex((theta.reshape(o * c, n) @ pairs).view(o, c, -1, 2))
        kernel = mixed.permute(2, 1, 0).contiguous()
        if frozen:
            key = (theta.detach().clone(), t.detach().clone())
            self._kernel_cache = (*key, natural, cacheable(kernel))
        else:
            self._kernel_cache = None
        return kernel

    def _forward_fft(self, x: Tensor, kernel: Tensor) -> Tensor:
        r"""The ``"fourier"`` path through ``torch.fft``: ``rfft2``, one batched complex product
        per frequency with ``kernel`` (natural order), ``irfft2``; differentiated by autograd."""
        b, _, h, w = x.shape
        if b == 0:  # the FFT libraries refuse empty batches; keep the graph (zero gradients)
            return x.new_zeros(0, self.out_channels, h, w) + 0 * (x.sum() + kernel.real.sum())
        spectrum = torch.fft.rfft2(x)
        half = spectrum.shape[-1]
        # Frequency-major explicitly (bmm would copy it anyway): the saved operand is then
        # contiguous, so the kernel's gradient takes its conjugate transpose without a copy.
        spectrum = spectrum.reshape(b, self.in_channels, -1).permute(2, 0, 1).contiguous()
        mixed = torch.bmm(spectrum, kernel)
        mixed = mixed.permute(1, 2, 0).reshape(b, self.out_channels, h, half)
        return torch.fft.irfft2(mixed, s=(h, w))

    def _forward_fourier(self, x: Tensor, kernel: Tensor, bias: Tensor | None) -> Tensor:
        b, _, h, w = x.shape
        dft_w, half_h, idft_h, idft_w = self._dft(x.dtype, x.device)
        # The bias is the zero frequency of the output: (H W) bias / (H W) after the inverse.
        constant = None
        if bias is not None:
            constant = (bias * (h * w)).expand(b, self.out_channels).reshape(-1)
        out, _ = _FourierConv.apply(x, kernel, constant, dft_w, half_h, idft_h, idft_w)
        return out

    def _forward_separable(
        self, x: Tensor, mixing: Tensor, num_rows: int, num_cols: int, rows: Tensor, cols: Tensor
    ) -> Tensor:
        r""":math:`y_o = \sum_{c,r,s} \theta_{o,c,r,s} R_r x_c C_s^\top` in three batched products.

        1. ``z`` ``(b, S, c h, w)``: every column operator applied along the image rows, one
           product per (image, column combination);
        2. ``u`` ``(b, (o, r), (h, w))``: the channel mixing of each image, ``mixing``
           (:meth:`_mixing`, ``(o R, S c)``) against ``z`` read in place;
        3. ``y`` ``(b o, h, w)``: the row operators side by side, ``(h, R h)``, against the
           ``R`` planes of each output channel, read in place.

        Every operand is read where it lies (no transposing copies, which on CPU cost more than
        the products at these sizes), and the backward consists of the same kind of products.
        """
        b, c, h, w = x.shape
        o = self.out_channels
        if cols.numel():
            z = torch.bmm(
                x.reshape(b, 1, c * h, w).expand(b, num_cols, c * h, w).reshape(-1, c * h, w),
                cols.transpose(1, 2)[None].expand(b, -1, -1, -1).reshape(-1, w, w),
            )
        else:
            z = x
        u = torch.bmm(mixing.expand(b, *mixing.shape), z.reshape(b, num_cols * c, h * w))
        if rows.numel():
            side_by_side = rows.permute(1, 0, 2).reshape(h, num_rows * h)
            u = torch.bmm(
                side_by_side.expand(b * o, *side_by_side.shape),
                u.view(b * o, num_rows * h, w),
            )
        return u.view(b, o, h, w)

    def _forward_dense(self, x: Tensor, theta: Tensor, products: Tensor) -> Tensor:
        if self.out_channels <= self.in_channels:
            mixed = torch.einsum("ocn,bcd->bond", theta, x)
            return torch.einsum("nde,bone->bod", products, mixed).contiguous()
        applied = torch.einsum("nde,bce->bcnd", products, x)
        return torch.einsum("ocn,bcnd->bod", theta, applied).contiguous()

    def extra_repr(self) -> str:
        where = (
            f"image_shape={self.image_shape}"
            if self.image_shape is not None
            else f"size={self.size}"
        )
        return (
            f"{self.in_channels}, {self.out_channels}, generators={self.num_generators}, "
            f"powers={self.powers}, dilation={self.dilation}, {where}, path={self.path}"
        )


# ----------------------------------------------------------------------------- blocks
_NONLINEARITIES = ("leaky_relu", "relu", "gelu", "silu", "tanh", "identity")


def _nonlinearity(value: str | nn.Module) -> nn.Module:
    if isinstance(value, nn.Module):
        return value
    if value == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if value == "relu":
        return nn.ReLU()
    if value == "gelu":
        return nn.GELU()
    if value == "silu":
        return nn.SiLU()
    if value == "tanh":
        return nn.Tanh()
    if value == "identity":
        return nn.Identity()
    raise ValueError(
        f"nonlinearity must be one of {_NONLINEARITIES} or an nn.Module, got {value!r}"
    )


class _ChannelNorm(nn.Module):
    """Batch or layer norm of ``(..., C, *pixels)`` features; both commute with pixel permutations.

    Batch norm normalises each channel over the batch and the pixels; layer norm each sample over
    its channels and pixels (GroupNorm with one group, per-channel affine).
    """

    def __init__(self, kind: str, channels: int, spatial: int) -> None:
        super().__init__()
        self.spatial = spatial
        self.norm: nn.Module
        if kind == "batch":
            self.norm = nn.BatchNorm1d(channels)
        elif kind == "layer":
            self.norm = nn.GroupNorm(1, channels)
        else:
            raise ValueError(f"norm must be 'batch', 'layer' or None, got {kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[: -self.spatial]
        flat = x.reshape(-1, x.shape[-self.spatial - 1], math.prod(x.shape[-self.spatial :]))
        return self.norm(flat).reshape(*lead, *x.shape[-self.spatial :])


class _ChannelLinear(nn.Module):
    """A 1x1 channel mixing (acts on no pixel), used as skip connection between widths."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        self.spatial = spatial
        self.linear = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        axis = x.ndim - self.spatial - 1
        return self.linear(x.movedim(axis, -1)).movedim(-1, axis)


class PowerBlock(nn.Module):
    r"""PowerLayers with normalisation, non-linearity and a residual connection (003 sec. 4.1).

    .. math:: h_0 = x, \quad h_l = \sigma(\mathrm{norm}(P_l h_{l-1})), \quad
              y = h_L + \rho \, S x,

    with :math:`P_l` :class:`PowerLayer` s, :math:`S` the identity when the widths agree and a
    bias-free 1x1 channel mixing otherwise, and :math:`\rho` the residual strength (003's
    ``rho``; 0 disables the connection). Norms and point-wise non-linearities commute with pixel
    permutations, so the block keeps the equivariance of its layers to them.

    Parameters
    ----------
    base_generators, powers, dilation
        As in :class:`PowerLayer`, shared by every layer (each layer has its own magnitudes).
    in_channels, out_channels : int
    num_layers : int, keyword-only
        Layers per block (003's ``num_layers``), default 2.
    residual : float, keyword-only
        :math:`\rho`, default 1.
    nonlinearity : str or nn.Module, keyword-only
        ``"leaky_relu"`` (slope 0.2, as in 003 sec. 4.2), ``"relu"``, ``"gelu"``, ``"silu"``,
        ``"tanh"``, ``"identity"`` or a module.
    norm : {"batch", "layer", None}, keyword-only
        Batch norm per channel, layer norm per sample (over channels and pixels), or none.
    magnitudes : keyword-only
        Initial/reference magnitudes of every layer.

    Examples
    --------
    >>> import torch
    >>> from symprior.nn.power import PowerBlock, image_generators
    >>> block = PowerBlock(image_generators(7, 7, "translation"), 1, 1, 4)
    >>> block(torch.randn(2, 1, 7, 7)).shape
    torch.Size([2, 4, 7, 7])
    """

    def __init__(
        self,
        base_generators: GeneratorsLike,
        powers: int | Sequence[int],
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int = 2,
        residual: float = 1.0,
        nonlinearity: str | nn.Module = "leaky_relu",
        norm: str | None = "batch",
        dilation: int = 1,
        magnitudes: float | Sequence[float] | Tensor = 1.0,
    ) -> None:
        super().__init__()
        num_layers = _check_size(num_layers, "num_layers")
        if isinstance(residual, bool) or not isinstance(residual, int | float):
            raise TypeError(f"residual must be a float, got {type(residual).__name__}")
        if not math.isfinite(residual):
            raise ValueError(f"residual must be finite, got {residual}")
        self.residual = float(residual)
        widths = [in_channels] + [out_channels] * num_layers
        layers = [
            PowerLayer(
                base_generators,
                powers,
                widths[i],
                widths[i + 1],
                dilation,
                magnitudes=magnitudes,
                bias=norm != "batch",
            )
            for i in range(num_layers)
        ]
        self.layers = nn.ModuleList(layers)
        spatial = 1 if layers[0].image_shape is None else 2
        self.spatial = spatial
        self.norms = nn.ModuleList(
            nn.Identity() if norm is None else _ChannelNorm(norm, out_channels, spatial)
            for _ in range(num_layers)
        )
        self.nonlinearity = _nonlinearity(nonlinearity)
        self.skip: nn.Module | None = None
        if self.residual != 0.0:
            self.skip = (
                nn.Identity()
                if in_channels == out_channels
                else _ChannelLinear(in_channels, out_channels, spatial)
            )

    def forward(self, x: Tensor) -> Tensor:
        r"""``(..., in_channels, *pixels) -> (..., out_channels, *pixels)``."""
        h = x
        for layer, norm in zip(self.layers, self.norms, strict=True):
            h = self.nonlinearity(norm(layer(h)))
        if self.skip is not None:
            h = h + self.residual * self.skip(x)
        return h


class PowerNet(nn.Module):
    r"""A stack of :class:`PowerBlock` s with a pooled linear readout (003 sec. 4).

    Blocks map ``in_channels -> channels[0] -> channels[1] -> ...`` at the input resolution; the
    features are then pooled over all pixels (mean or max, invariant to pixel permutations) and
    a linear layer gives ``out_features`` logits (classification) or values (regression).

    Parameters
    ----------
    base_generators, powers, dilation, magnitudes
        As in :class:`PowerLayer`, shared by every block.
    in_channels : int
    out_features : int
    channels : sequence of int, keyword-only
        Width of each block, default ``(16, 16)``.
    num_layers, residual, nonlinearity, norm : keyword-only
        As in :class:`PowerBlock`.
    pooling : {"mean", "max"}, keyword-only
        Global pooling before the readout.

    Examples
    --------
    >>> import torch
    >>> from symprior.nn.power import PowerNet, image_generators
    >>> net = PowerNet(image_generators(7, 7, "translation"), 1, 1, 10, channels=(4, 8))
    >>> net(torch.randn(3, 1, 7, 7)).shape
    torch.Size([3, 10])
    """

    def __init__(
        self,
        base_generators: GeneratorsLike,
        powers: int | Sequence[int],
        in_channels: int,
        out_features: int,
        *,
        channels: Sequence[int] = (16, 16),
        num_layers: int = 2,
        residual: float = 1.0,
        nonlinearity: str | nn.Module = "leaky_relu",
        norm: str | None = "batch",
        dilation: int = 1,
        magnitudes: float | Sequence[float] | Tensor = 1.0,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if isinstance(channels, int) or not isinstance(channels, Sequence) or not channels:
            raise ValueError(f"channels must be a non-empty sequence of ints, got {channels!r}")
        widths = [_check_size(in_channels, "in_channels")]
        widths += [_check_size(c, "channels") for c in channels]
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        self.pooling = pooling
        blocks = [
            PowerBlock(
                base_generators,
                powers,
                widths[i],
                widths[i + 1],
                num_layers=num_layers,
                residual=residual,
                nonlinearity=nonlinearity,
                norm=norm,
                dilation=dilation,
                magnitudes=magnitudes,
            )
            for i in range(len(channels))
        ]
        self.blocks = nn.ModuleList(blocks)
        self.spatial = blocks[0].spatial
        self.readout = nn.Linear(widths[-1], _check_size(out_features, "out_features"))

    def forward(self, x: Tensor) -> Tensor:
        r"""``(..., in_channels, *pixels) -> (..., out_features)``."""
        h = x
        for block in self.blocks:
            h = block(h)
        h = h.flatten(start_dim=h.ndim - self.spatial)
        pooled = h.mean(-1) if self.pooling == "mean" else h.amax(-1)
        return self.readout(pooled)
