r"""Matrix groups defined by their generators (EMLP's recipe: a group *is* its generators).

Every group is a subgroup of :math:`GL(n)` given by a Lie-algebra basis ``lie_algebra``
(shape ``(d, n, n)``) and a set of discrete generators ``discrete_generators`` (shape
``(k, n, n)``). Everything else (the exponential map, sampling, representations and equivariant
bases) is derived from those two tensors. Group constants are stored in float64; results follow the
dtype and device of the inputs. Randomness comes only from an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable

import torch
from torch import Tensor

from symprior.groups._linalg import LogUndefinedError, matrix_log, skew3, unskew3

__all__ = [
    "O2",
    "O3",
    "SE2",
    "SL2",
    "SO2",
    "SO3",
    "Affine2",
    "Cyclic",
    "Dihedral",
    "Group",
    "LogUndefinedError",
    "MatrixGroup",
    "Permutation",
    "Scaling",
    "Translation",
]


def _as_generators(value: Tensor | None, name: str, n: int | None) -> Tensor:
    if value is None:
        if n is None:
            raise ValueError(f"{name}: cannot infer the matrix size n from an empty generator set")
        return torch.zeros(0, n, n, dtype=torch.float64)
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    value = value.detach().to("cpu", torch.float64)
    if value.ndim == 2:
        value = value[None]
    if value.ndim != 3 or value.shape[-1] != value.shape[-2]:
        raise ValueError(
            f"{name} must have shape (k, n, n) of square matrices, got {tuple(value.shape)}"
        )
    if n is not None and value.shape[0] > 0 and value.shape[-1] != n:
        raise ValueError(f"{name} are {value.shape[-1]}x{value.shape[-1]}, expected {n}x{n}")
    return value


class Group:
    r"""A matrix group given by a Lie-algebra basis and discrete generators.

    Subclasses set the two generator tensors in ``__init__`` through :meth:`_set_generators` and
    may override :meth:`exp`, :meth:`log` and :meth:`sample` with closed forms.

    Attributes
    ----------
    lie_algebra : Tensor
        ``(d, n, n)`` float64 basis of the Lie algebra (``d`` may be 0).
    discrete_generators : Tensor
        ``(k, n, n)`` float64 generators of the component group.
    compact : bool
        Whether :meth:`sample` draws from the Haar measure.
    """

    lie_algebra: Tensor
    discrete_generators: Tensor
    compact: bool = False
    #: Standard deviation of the Lie-algebra coefficients drawn by :meth:`sample` for the
    #: non-compact directions (see each group's docstring).
    sample_scale: float = 0.5

    def _set_generators(self, lie_algebra: Tensor | None, discrete: Tensor | None) -> None:
        n: int | None = None
        for candidate in (lie_algebra, discrete):
            if candidate is not None and torch.as_tensor(candidate).numel() > 0:
                shape = torch.as_tensor(candidate).shape
                n = int(shape[-1])
                break
        self.lie_algebra = _as_generators(lie_algebra, "lie_algebra", n)
        self.discrete_generators = _as_generators(discrete, "discrete_generators", n)
        if self.lie_algebra.shape[-1] != self.discrete_generators.shape[-1]:
            raise ValueError(
                "lie_algebra and discrete_generators act on different sizes: "
                f"{self.lie_algebra.shape[-1]} vs {self.discrete_generators.shape[-1]}"
            )

    # ----------------------------------------------------------------- identity and equality
    @property
    def n(self) -> int:
        r"""Size of the matrices of the defining representation."""
        return int(self.lie_algebra.shape[-1])

    @property
    def dim(self) -> int:
        r"""Dimension ``d`` of the Lie algebra."""
        return int(self.lie_algebra.shape[0])

    def _params(self) -> tuple[Hashable, ...]:
        return ()

    def _key(self) -> tuple[Hashable, ...]:
        return (type(self).__name__, *self._params())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        params = ", ".join(str(p) for p in self._params())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------ checks and helpers
    def check_elements(self, g: Tensor, name: str = "g") -> Tensor:
        r"""Validate that ``g`` has shape ``(..., n, n)``; return it unchanged."""
        if not isinstance(g, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (..., {self.n}, {self.n})")
        if g.ndim < 2 or g.shape[-1] != self.n or g.shape[-2] != self.n:
            raise ValueError(
                f"{name} must have shape (..., {self.n}, {self.n}) to be an element of {self!r}, "
                f"got {tuple(g.shape)} (an element of another group?)"
            )
        return g

    def identity(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ):
        r"""The identity matrix ``(n, n)``."""
        return torch.eye(self.n, dtype=dtype, device=device)

    def inverse(self, g: Tensor) -> Tensor:
        r"""Inverse of a batch of elements ``(..., n, n)``."""
        return torch.linalg.inv(self.check_elements(g))

    def algebra_element(self, coeffs: Tensor) -> Tensor:
        r"""The Lie-algebra matrix :math:`\sum_i c_i A_i` for coefficients ``(..., d)``."""
        if not isinstance(coeffs, Tensor):
            raise TypeError("coeffs must be a torch.Tensor of shape (..., d)")
        if coeffs.shape[-1:] != (self.dim,):
            raise ValueError(
                f"coeffs must have shape (..., {self.dim}) for {self!r}, got {tuple(coeffs.shape)}"
            )
        basis = self.lie_algebra.to(dtype=coeffs.dtype, device=coeffs.device)
        return torch.einsum("...d,dij->...ij", coeffs, basis)

    # ------------------------------------------------------------------------ core maps
    def exp(self, coeffs: Tensor) -> Tensor:
        r"""Exponential map :math:`\exp(\sum_i c_i A_i)` for coefficients ``(..., d)``.

        The base implementation uses :func:`torch.linalg.matrix_exp`; groups override it with
        closed forms.
        """
        return torch.linalg.matrix_exp(self.algebra_element(coeffs))

    def _coefficients(self, algebra: Tensor) -> Tensor:
        r"""Coordinates of Lie-algebra matrices ``(..., n, n)`` in the basis (least squares)."""
        basis = self.lie_algebra.to(dtype=algebra.dtype, device=algebra.device).reshape(
            self.dim, -1
        )
        flat = algebra.reshape(*algebra.shape[:-2], -1)
        coeffs = torch.linalg.lstsq(basis.T, flat.reshape(-1, flat.shape[-1]).T).solution.T
        coeffs = coeffs.reshape(*algebra.shape[:-2], self.dim)
        residual = (self.algebra_element(coeffs) - algebra).abs().amax() if coeffs.numel() else 0.0
        if float(residual) > 1e-8 * max(1.0, float(algebra.abs().amax())):
            raise LogUndefinedError(
                f"log: the element is not exp of an element of the Lie algebra of {self!r} "
                "(outside the identity component or off the principal branch)"
            )
        return coeffs

    def log(self, g: Tensor) -> Tensor:
        r"""Principal logarithm: coefficients ``(..., d)`` with ``exp(log(g)) == g``.

        Uses the principal matrix logarithm and reads off the Lie-algebra coordinates. Raises
        :class:`LogUndefinedError` (a ``ValueError``) where no principal logarithm in the
        algebra exists, e.g. for reflections or for finite groups.
        """
        self.check_elements(g)
        if self.dim == 0:
            raise LogUndefinedError(f"log is undefined for {self!r}: its Lie algebra is trivial")
        return self._coefficients(matrix_log(g))

    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Tensor:
        r"""Draw ``num`` elements ``(num, n, n)``.

        The default (used by groups without a closed form) is :math:`\exp(\sum_i c_i A_i)` with
        :math:`c_i \sim N(0, \mathrm{sample\_scale}^2)`, followed by a uniformly chosen word of
        up to three discrete generators.
        """
        num = _check_num(num)
        device = _device_of(generator, device)
        c = torch.randn(num, self.dim, generator=generator, dtype=torch.float64, device=device)
        g = self.exp(self.sample_scale * c)
        k = self.discrete_generators.shape[0]
        if k:
            gens = torch.cat(
                [self.identity(device=device)[None], self.discrete_generators.to(device)]
            )
            for _ in range(3):
                idx = torch.randint(0, k + 1, (num,), generator=generator, device=device)
                g = gens[idx] @ g
        return g.to(dtype)

    def testing_elements(self) -> Tensor:
        r"""A fixed, deterministic set of float64 elements ``(m, n, n)`` for tests.

        The identity, the discrete generators, exponentials of each Lie-algebra generator at a
        few magnitudes, and eight draws from :meth:`sample` with seed 0.
        """
        parts = [self.identity()[None], self.discrete_generators]
        for t in (0.3, -1.1):
            eye = torch.eye(self.dim, dtype=torch.float64)
            if self.dim:
                parts.append(self.exp(t * eye))
        parts.append(self.sample(8, torch.Generator().manual_seed(0)))
        return torch.cat(parts)


def _check_num(num: int) -> int:
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"num must be a non-negative int, got {num!r}")
    return num


def check_generator(generator: object) -> torch.Generator | None:
    r"""``generator`` if it is a ``torch.Generator`` or None; a ``TypeError`` naming it else.
    Shared by everything that takes a ``generator`` argument (group sampling, equivariance
    errors, REMUL, posterior draws)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _device_of(generator: torch.Generator | None, device: torch.device | str | None):
    check_generator(generator)
    if device is not None:
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"generator lives on {generator.device} but device={device} was requested"
            )
        return device
    return generator.device if generator is not None else torch.device("cpu")


class MatrixGroup(Group):
    r"""A group given directly by its generators, e.g. for a symmetry not shipped here.

    Parameters
    ----------
    lie_algebra : Tensor, optional
        ``(d, n, n)`` Lie-algebra basis.
    discrete_generators : Tensor, optional
        ``(k, n, n)`` discrete generators.
    name : str
        Used in messages and as the identity of the group (with the generators).
    compact : bool
        Declares the group compact (sampling stays the default Gaussian-on-algebra scheme).

    Examples
    --------
    >>> import torch
    >>> G = MatrixGroup(lie_algebra=torch.tensor([[[0.0, -1.0], [1.0, 0.0]]]), name="rot")
    >>> G.n, G.dim
    (2, 1)
    """

    def __init__(
        self,
        lie_algebra: Tensor | None = None,
        discrete_generators: Tensor | None = None,
        *,
        name: str = "MatrixGroup",
        compact: bool = False,
    ) -> None:
        self._set_generators(lie_algebra, discrete_generators)
        self.name = name
        self.compact = compact

    def _key(self) -> tuple[Hashable, ...]:
        return (
            "MatrixGroup",
            self.name,
            tuple(self.lie_algebra.reshape(-1).tolist()),
            tuple(self.discrete_generators.reshape(-1).tolist()),
        )

    def __repr__(self) -> str:
        return f"MatrixGroup(name={self.name!r}, n={self.n}, dim={self.dim})"


# ------------------------------------------------------------------------------ rotations
_J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
_REFLECT = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)


def _rotation2(theta: Tensor) -> Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


class _PlanarOrthogonal(Group):
    """Shared closed forms of SO(2) and O(2) (O(2) is not a subclass of SO(2))."""

    compact = True

    def exp(self, coeffs: Tensor) -> Tensor:
        self.algebra_element(coeffs)  # validates the shape
        return _rotation2(coeffs[..., 0])

    def log(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        return torch.atan2(g[..., 1, 0] - g[..., 0, 1], g[..., 0, 0] + g[..., 1, 1])[..., None]

    def inverse(self, g: Tensor) -> Tensor:
        return self.check_elements(g).transpose(-1, -2)

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        num = _check_num(num)
        device = _device_of(generator, device)
        theta = 2 * torch.rand(num, generator=generator, dtype=torch.float64, device=device) - 1
        return _rotation2(math.pi * theta).to(dtype)


class SO2(_PlanarOrthogonal):
    r"""Rotations of the plane, :math:`\exp(\theta J)` with :math:`J = [[0,-1],[1,0]]`.

    ``log`` returns the angle in :math:`(-\pi, \pi]`; ``sample`` is Haar (uniform angle).
    """

    def __init__(self) -> None:
        self._set_generators(_J[None], None)


class O2(_PlanarOrthogonal):
    r"""Rotations and reflections of the plane: SO(2) and the reflection ``diag(1, -1)``.

    ``log`` is defined on the rotations only; ``sample`` is Haar (a uniform rotation, reflected
    with probability 1/2).
    """

    def __init__(self) -> None:
        self._set_generators(_J[None], _REFLECT[None])

    def log(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        if bool((torch.linalg.det(g) < 0).any()):
            raise LogUndefinedError("log is undefined for reflections in O(2) (det = -1)")
        return super().log(g)

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        g = super().sample(num, generator, dtype=torch.float64, device=device)
        flip = torch.rand(num, generator=generator, dtype=torch.float64, device=g.device) < 0.5
        refl = _REFLECT.to(g.device)
        return torch.where(flip[:, None, None], g @ refl, g).to(dtype)


_SO3_ALGEBRA = skew3(torch.eye(3, dtype=torch.float64))


class _SpatialOrthogonal(Group):
    """Shared closed forms of SO(3) and O(3) (O(3) is not a subclass of SO(3))."""

    compact = True

    def exp(self, coeffs: Tensor) -> Tensor:
        self.algebra_element(coeffs)
        theta2 = (coeffs * coeffs).sum(-1)[..., None, None]
        theta = theta2.sqrt()
        small = theta < 1e-4
        safe = torch.where(small, torch.ones_like(theta), theta)
        # Taylor series below 1e-4 keep both coefficients accurate to machine precision.
        a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(safe) / safe)
        b = torch.where(
            small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(safe)) / safe**2
        )
        k = skew3(coeffs)
        eye = torch.eye(3, dtype=coeffs.dtype, device=coeffs.device)
        return eye + a * k + b * (k @ k)

    def log(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        if bool((torch.linalg.det(g) < 0).any()):
            raise LogUndefinedError("log is undefined for improper rotations (det = -1)")
        tr = g.diagonal(dim1=-2, dim2=-1).sum(-1)
        cos = ((tr - 1) / 2).clamp(-1.0, 1.0)
        theta = torch.arccos(cos)
        axis_sin = unskew3(g)  # = sin(theta) * axis
        small = theta < 1e-4
        near_pi = theta > math.pi - 1e-3
        safe = torch.where(small | near_pi, torch.ones_like(theta), theta)
        factor = torch.where(small, 1 + theta**2 / 6, safe / torch.sin(safe))
        out = axis_sin * factor[..., None]
        if bool(near_pi.any()):
            # Near pi, read the axis from the symmetric part: R + I = 2 cos^2 ... ~ 2 a a^T.
            sym = 0.5 * (g + g.transpose(-1, -2)) - cos[..., None, None] * torch.eye(
                3, dtype=g.dtype, device=g.device
            )
            col = sym.diagonal(dim1=-2, dim2=-1).argmax(-1)
            axis = torch.gather(sym, -1, col[..., None, None].expand(*sym.shape[:-1], 1))[..., 0]
            axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            sign = torch.sign((axis * axis_sin).sum(-1, keepdim=True))
            sign = torch.where(sign == 0, torch.ones_like(sign), sign)
            out = torch.where(near_pi[..., None], axis * sign * theta[..., None], out)
        return out

    def inverse(self, g: Tensor) -> Tensor:
        return self.check_elements(g).transpose(-1, -2)

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        num = _check_num(num)
        device = _device_of(generator, device)
        q = torch.randn(num, 4, generator=generator, dtype=torch.float64, device=device)
        q = q / q.norm(dim=-1, keepdim=True)
        w, x, y, z = q.unbind(-1)
        rows = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
        return torch.stack([torch.stack(r, -1) for r in rows], -2).to(dtype)


class SO3(_SpatialOrthogonal):
    r"""Rotations of space; Lie algebra :math:`L_x, L_y, L_z` with :math:`L_i v = e_i \times v`.

    ``exp`` is Rodrigues' formula, ``log`` returns the rotation vector of angle in
    :math:`[0, \pi]`, ``sample`` is Haar (uniform unit quaternions).
    """

    def __init__(self) -> None:
        self._set_generators(_SO3_ALGEBRA, None)


class O3(_SpatialOrthogonal):
    r"""Rotations and the inversion :math:`-I` of space; Haar sampling, ``log`` on SO(3) only."""

    def __init__(self) -> None:
        self._set_generators(_SO3_ALGEBRA, -torch.eye(3, dtype=torch.float64)[None])

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        g = super().sample(num, generator, dtype=torch.float64, device=device)
        flip = torch.rand(num, generator=generator, dtype=torch.float64, device=g.device) < 0.5
        return torch.where(flip[:, None, None], -g, g).to(dtype)


# ----------------------------------------------------------------- homogeneous coordinates
def _unit(n: int, i: int, j: int) -> Tensor:
    m = torch.zeros(n, n, dtype=torch.float64)
    m[i, j] = 1.0
    return m


class SE2(Group):
    r"""Rigid motions of the plane as 3x3 homogeneous matrices ``[[R, t], [0, 1]]``.

    Lie algebra ``(rotation, d/dx, d/dy)``. ``exp`` and ``log`` are closed form (rotation angle in
    :math:`(-\pi, \pi]`). ``sample``: a Haar-uniform rotation and a translation drawn from
    :math:`N(0, \mathrm{sample\_scale}^2 I)`.
    """

    def __init__(self, sample_scale: float = 0.5) -> None:
        rot = torch.zeros(3, 3, dtype=torch.float64)
        rot[:2, :2] = _J
        self._set_generators(torch.stack([rot, _unit(3, 0, 2), _unit(3, 1, 2)]), None)
        self.sample_scale = _positive(sample_scale, "sample_scale")

    def _params(self) -> tuple[Hashable, ...]:
        return ()

    @staticmethod
    def _v_matrix(theta: Tensor) -> tuple[Tensor, Tensor]:
        small = theta.abs() < 1e-4
        safe = torch.where(small, torch.ones_like(theta), theta)
        a = torch.where(small, 1 - theta**2 / 6, torch.sin(safe) / safe)
        b = torch.where(small, theta / 2 - theta**3 / 24, (1 - torch.cos(safe)) / safe)
        return a, b

    def exp(self, coeffs: Tensor) -> Tensor:
        self.algebra_element(coeffs)
        theta, u = coeffs[..., 0], coeffs[..., 1:]
        a, b = self._v_matrix(theta)
        # V(theta) u with V = a I + b J
        t = torch.stack([a * u[..., 0] - b * u[..., 1], b * u[..., 0] + a * u[..., 1]], -1)
        out = torch.zeros(*coeffs.shape[:-1], 3, 3, dtype=coeffs.dtype, device=coeffs.device)
        out[..., :2, :2] = _rotation2(theta)
        out[..., :2, 2] = t
        out[..., 2, 2] = 1.0
        return out

    def log(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        theta = torch.atan2(g[..., 1, 0] - g[..., 0, 1], g[..., 0, 0] + g[..., 1, 1])
        a, b = self._v_matrix(theta)
        t = g[..., :2, 2]
        det = a * a + b * b
        # V^-1 = (a I - b J) / (a^2 + b^2)
        u = torch.stack([a * t[..., 0] + b * t[..., 1], -b * t[..., 0] + a * t[..., 1]], -1)
        return torch.cat([theta[..., None], u / det[..., None]], -1)

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        num = _check_num(num)
        device = _device_of(generator, device)
        out = torch.zeros(num, 3, 3, dtype=torch.float64, device=device)
        theta = math.pi * (
            2 * torch.rand(num, generator=generator, dtype=torch.float64, device=device) - 1
        )
        out[:, :2, :2] = _rotation2(theta)
        out[:, :2, 2] = self.sample_scale * torch.randn(
            num, 2, generator=generator, dtype=torch.float64, device=device
        )
        out[:, 2, 2] = 1.0
        return out.to(dtype)


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class Translation(Group):
    r"""Translations of :math:`\mathbb{R}^n` as ``(n+1) x (n+1)`` homogeneous matrices.

    ``exp`` and ``log`` are exact (the algebra is nilpotent); ``sample`` draws the translation
    from :math:`N(0, \mathrm{sample\_scale}^2 I)`.
    """

    def __init__(self, n: int = 2, sample_scale: float = 0.5) -> None:
        self.space_dim = _positive_int(n, "n")
        gens = torch.stack([_unit(n + 1, i, n) for i in range(n)])
        self._set_generators(gens, None)
        self.sample_scale = _positive(sample_scale, "sample_scale")

    def _params(self) -> tuple[Hashable, ...]:
        return (self.space_dim,)

    def exp(self, coeffs: Tensor) -> Tensor:
        a = self.algebra_element(coeffs)
        return torch.eye(self.n, dtype=a.dtype, device=a.device) + a

    def log(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        k = self.space_dim
        eye = torch.eye(k, dtype=g.dtype, device=g.device)
        if (
            float((g[..., :k, :k] - eye).abs().amax()) > 1e-10
            or float((g[..., k, :k]).abs().amax() if k else 0.0) > 1e-10
        ):
            raise LogUndefinedError("log: the element is not a pure translation")
        return g[..., :k, k]

    def inverse(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        out = g.clone()
        out[..., : self.space_dim, self.space_dim] = -g[..., : self.space_dim, self.space_dim]
        return out


class Scaling(Group):
    r"""Isotropic dilations :math:`x \mapsto s x`, :math:`s > 0`, of :math:`\mathbb{R}^n`.

    One generator, the identity: ``exp(c) = e^c I``, ``log(g) = log(g_00)``. ``sample`` draws
    :math:`c \sim N(0, \mathrm{sample\_scale}^2)` (log-normal scale factors).
    """

    def __init__(self, n: int = 2, sample_scale: float = 0.5) -> None:
        self.space_dim = _positive_int(n, "n")
        self._set_generators(torch.eye(n, dtype=torch.float64)[None], None)
        self.sample_scale = _positive(sample_scale, "sample_scale")

    def _params(self) -> tuple[Hashable, ...]:
        return (self.space_dim,)

    def exp(self, coeffs: Tensor) -> Tensor:
        self.algebra_element(coeffs)
        eye = torch.eye(self.n, dtype=coeffs.dtype, device=coeffs.device)
        return torch.exp(coeffs[..., 0])[..., None, None] * eye

    def log(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        s = g[..., 0, 0]
        eye = torch.eye(self.n, dtype=g.dtype, device=g.device)
        if bool((s <= 0).any()) or float((g - s[..., None, None] * eye).abs().amax()) > 1e-10:
            raise LogUndefinedError("log: the element is not a positive multiple of the identity")
        return torch.log(s)[..., None]

    def inverse(self, g: Tensor) -> Tensor:
        self.check_elements(g)
        return g / (g[..., :1, :1] ** 2)


class Affine2(Group):
    r"""Affine maps of the plane as 3x3 homogeneous matrices (003 eq. 2).

    The six generators, in the order of 003 eq. 2, are the vector fields
    :math:`\partial_x, x\partial_x, y\partial_x, \partial_y, x\partial_y, y\partial_y` written as
    homogeneous matrices. ``exp`` is :func:`torch.linalg.matrix_exp`, ``log`` the principal matrix
    logarithm. ``sample`` draws all six coefficients from :math:`N(0, \mathrm{sample\_scale}^2)`.
    """

    def __init__(self, sample_scale: float = 0.3) -> None:
        gens = [_unit(3, 0, 2), _unit(3, 0, 0), _unit(3, 0, 1)]
        gens += [_unit(3, 1, 2), _unit(3, 1, 0), _unit(3, 1, 1)]
        self._set_generators(torch.stack(gens), None)
        self.sample_scale = _positive(sample_scale, "sample_scale")


class SL2(Group):
    r"""Area- and orientation-preserving linear maps of the plane, :math:`\det g = 1`.

    Lie algebra :math:`H = \mathrm{diag}(1,-1)`, :math:`E = e_{12}`, :math:`F = e_{21}`. ``exp``
    uses the closed form :math:`\cosh(s) I + \sinh(s)/s\,A` with :math:`s^2 = -\det A`; ``log`` the
    principal matrix logarithm (undefined where the trace is :math:`\le -2`); ``sample`` draws
    the three coefficients from :math:`N(0, \mathrm{sample\_scale}^2)`.
    """

    def __init__(self, sample_scale: float = 0.3) -> None:
        h = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
        self._set_generators(torch.stack([h, _unit(2, 0, 1), _unit(2, 1, 0)]), None)
        self.sample_scale = _positive(sample_scale, "sample_scale")

    def exp(self, coeffs: Tensor) -> Tensor:
        a = self.algebra_element(coeffs)
        s2 = -torch.linalg.det(a)
        # cosh(sqrt(s2)) and sinh(sqrt(s2))/sqrt(s2) are entire in s2: evaluate both branches.
        s = s2.abs().sqrt()
        small = s < 1e-4
        safe = torch.where(small, torch.ones_like(s), s)
        pos = s2 >= 0
        ch = torch.where(pos, torch.cosh(safe), torch.cos(safe))
        sh = torch.where(pos, torch.sinh(safe) / safe, torch.sin(safe) / safe)
        ch = torch.where(small, 1 + s2 / 2 + s2 * s2 / 24, ch)
        sh = torch.where(small, 1 + s2 / 6 + s2 * s2 / 120, sh)
        eye = torch.eye(2, dtype=a.dtype, device=a.device)
        return ch[..., None, None] * eye + sh[..., None, None] * a


# --------------------------------------------------------------------------- finite groups
class _FiniteGroup(Group):
    compact = True

    def elements(self) -> Tensor:
        r"""All elements ``(|G|, n, n)``, generated by closing the generators under products."""
        eye = self.identity()
        found = [eye]
        keys = {tuple(eye.round(decimals=9).reshape(-1).tolist())}
        frontier = [eye]
        while frontier:
            nxt = []
            for g in frontier:
                for h in self.discrete_generators:
                    p = h @ g
                    key = tuple(p.round(decimals=9).reshape(-1).tolist())
                    if key not in keys:
                        keys.add(key)
                        found.append(p)
                        nxt.append(p)
            frontier = nxt
        return torch.stack(found)

    def testing_elements(self) -> Tensor:
        els = self.elements()
        return (
            els
            if els.shape[0] <= 64
            else torch.cat([els[:32], self.sample(32, torch.Generator().manual_seed(0))])
        )

    def inverse(self, g: Tensor) -> Tensor:
        return self.check_elements(g).transpose(-1, -2)

    def log(self, g: Tensor) -> Tensor:
        raise LogUndefinedError(f"log is undefined for the finite group {self!r}")


class Cyclic(_FiniteGroup):
    r"""The cyclic group :math:`C_k` of rotations of the plane by multiples of :math:`2\pi/k`.

    Acts on :math:`\mathbb{R}^2` (a subgroup of SO(2)); ``sample`` is uniform over the ``k``
    rotations.
    """

    def __init__(self, k: int) -> None:
        self.order = _positive_int(k, "k")
        rot = _rotation2(torch.tensor(2 * math.pi / k, dtype=torch.float64))
        self._set_generators(None, rot[None])

    def _params(self) -> tuple[Hashable, ...]:
        return (self.order,)

    def elements(self) -> Tensor:
        angles = 2 * math.pi * torch.arange(self.order, dtype=torch.float64) / self.order
        return _rotation2(angles)

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        num = _check_num(num)
        device = _device_of(generator, device)
        j = torch.randint(0, self.order, (num,), generator=generator, device=device)
        return _rotation2(2 * math.pi * j.to(torch.float64) / self.order).to(dtype)


class Dihedral(_FiniteGroup):
    r"""The dihedral group :math:`D_k`: ``k`` rotations and ``k`` reflections of the plane.

    Generated by the rotation by :math:`2\pi/k` and the reflection ``diag(1, -1)``; ``sample`` is
    uniform over the ``2k`` elements.
    """

    def __init__(self, k: int) -> None:
        self.order = _positive_int(k, "k")
        rot = _rotation2(torch.tensor(2 * math.pi / k, dtype=torch.float64))
        self._set_generators(None, torch.stack([rot, _REFLECT]))

    def _params(self) -> tuple[Hashable, ...]:
        return (self.order,)

    def elements(self) -> Tensor:
        rots = Cyclic(self.order).elements()
        return torch.cat([rots, rots @ _REFLECT])

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        num = _check_num(num)
        device = _device_of(generator, device)
        j = torch.randint(0, self.order, (num,), generator=generator, device=device)
        g = _rotation2(2 * math.pi * j.to(torch.float64) / self.order)
        flip = torch.randint(0, 2, (num,), generator=generator, device=device).bool()
        return torch.where(flip[:, None, None], g @ _REFLECT.to(device), g).to(dtype)


class Permutation(_FiniteGroup):
    r"""The symmetric group :math:`S_n` as ``n x n`` permutation matrices.

    Generated by the transposition ``(0 1)`` and the cycle ``(0 1 ... n-1)``; ``sample`` is uniform
    (argsort of i.i.d. uniforms).
    """

    def __init__(self, n: int) -> None:
        self.size = _positive_int(n, "n", minimum=2)
        eye = torch.eye(n, dtype=torch.float64)
        swap = eye[[1, 0, *range(2, n)]]
        cycle = eye[[*range(1, n), 0]]
        self._set_generators(None, torch.stack([swap, cycle]))

    def _params(self) -> tuple[Hashable, ...]:
        return (self.size,)

    def elements(self) -> Tensor:
        if math.factorial(self.size) > 5040:
            raise ValueError(f"Permutation({self.size}) has too many elements to enumerate")
        eye = torch.eye(self.size, dtype=torch.float64)
        return torch.stack([eye[list(p)] for p in itertools.permutations(range(self.size))])

    def testing_elements(self) -> Tensor:
        if self.size <= 4:
            return self.elements()
        gen = torch.Generator().manual_seed(0)
        return torch.cat([self.identity()[None], self.discrete_generators, self.sample(16, gen)])

    def sample(self, num, generator=None, *, dtype=torch.float64, device=None):
        num = _check_num(num)
        device = _device_of(generator, device)
        perm = torch.rand(num, self.size, generator=generator, device=device).argsort(-1)
        eye = torch.eye(self.size, dtype=dtype, device=device)
        return eye[perm]
