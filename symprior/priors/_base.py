r"""Prior specifications over relaxation parameters, and hierarchical hyperparameters.

A *prior spec* is one of

* a Pyro distribution — a scalar distribution is expanded to the parameter's shape, any other must
  have ``batch_shape + event_shape`` equal to it;
* a :class:`Prior` object (the families' defaults: ``ResidualPrior``, ``FrequencyPrior``, ...);
* a callable ``(name, shape) -> Distribution``.

A scale, ``lam`` or precision of a prior object is a positive number or a Pyro distribution; a
distribution makes a hyperparameter *sample site* (a hierarchical prior), shared by every parameter
the prior object is used for (``shared=True``, site ``"<site_name>"``) or one per parameter
(``shared=False``, site ``"<parameter>:<site_name>"``, see :data:`SITE_SEPARATOR`).
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin as PyroDistribution
from torch import Tensor
from torch.distributions.transforms import Transform, _InverseTransform

from symprior.nn import Relaxation

__all__ = ["DistributionPrior", "Hyperparameter", "Prior", "PriorSpec", "as_prior", "expand_to"]

#: One sample per hyperparameter site and model call; SymmetryModel passes a fresh dict per call.
HyperCache = dict[str, Tensor]

#: Joins a parameter's name to its own hyperparameter's: ``"<parameter>:<site_name>"``. Not a dot:
#: ``"<parameter>"`` is itself a sample site, and Pyro's autoguides (``AutoNormal``, ``AutoDelta``)
#: store per-site parameters in nested modules along the dots of a site's name, so
#: ``"<parameter>.<site_name>"`` would nest under the parameter's own entry.
SITE_SEPARATOR = ":"


def _within_positive_reals(support: Any) -> bool:
    r"""Whether a scalar distribution's ``support`` lies in :math:`[0, \infty)`.

    A hyperparameter is a scale, precision or rate, so its prior must put no mass on negative
    numbers. Testing one negative point is not enough (``Uniform(-0.5, 0.5)`` holds no ``-1``
    but samples negative scales, whose densities are NaN), so the support is read off its
    constraint instead: continuous and bounded below by a ``lower_bound >= 0`` (``positive``,
    ``nonnegative``, ``greater_than(a)``, ``interval(a, b)`` and their half-open forms), possibly
    wrapped by ``independent`` with no reinterpreted dimension. ``nonnegative`` is accepted since
    a continuous distribution puts no mass on the point 0 (``HalfNormal``, ``HalfCauchy``,
    ``Exponential`` and, in recent PyTorch, ``Gamma`` have this support). Anything else (``real``,
    upper bounds only, supports that depend on other variables) is rejected.
    """
    constraints = torch.distributions.constraints
    while isinstance(support, constraints.independent) and support.reinterpreted_batch_ndims == 0:
        support = support.base_constraint
    if not isinstance(support, constraints.Constraint) or support.is_discrete:
        return False
    if support.event_dim != 0:
        return False
    lower = getattr(support, "lower_bound", None)
    if isinstance(lower, bool) or lower is None:
        return False
    if isinstance(lower, Tensor):
        return bool(lower.numel() > 0 and torch.all(lower.detach() >= 0))
    if isinstance(lower, int | float):
        return math.isfinite(lower) and lower >= 0
    return False


class Hyperparameter:
    r"""A positive hyperparameter: a fixed number or a distribution (then a sample site).

    Parameters
    ----------
    value : float or pyro.distributions.Distribution
    name : str
        What it is (``"scale"``, ``"lam"``, ...), used in error messages and site names.
    shared : bool
        One site for every parameter using it (``True``) or one site per parameter.
    site_name : str, optional
        Name of the shared site; defaults to ``name``.
    """

    def __init__(
        self, value: Any, name: str, *, shared: bool = True, site_name: str | None = None
    ) -> None:
        if isinstance(value, PyroDistribution):
            if value.batch_shape != () or value.event_shape != ():
                raise ValueError(f"{name}: a hyperprior must be a scalar distribution")
            try:
                support = value.support
            except NotImplementedError:  # a distribution that does not declare its support
                support = None
            if not _within_positive_reals(support):
                raise ValueError(
                    f"{name}: a hyperprior must have positive support (e.g. Gamma, LogNormal, "
                    f"HalfNormal, Uniform(a, b) with a >= 0), got {value!r} with support {support}"
                )
        elif isinstance(value, Tensor):
            # A tensor value is fixed in the model but may carry gradients (evidence-based
            # learning of hyperparameters differentiates through it).
            if value.numel() != 1 or not bool((value.detach() > 0).all()):
                raise ValueError(f"{name} must be a positive scalar, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"{name} must be a positive number or a pyro distribution, got "
                f"{type(value).__name__}"
            )
        elif not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")
        self.value = value
        self.name = name
        self.shared = shared
        self.site_name = site_name or name
        self._constants: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}

    @property
    def is_random(self) -> bool:
        return isinstance(self.value, PyroDistribution)

    def site(self, param_name: str) -> str:
        r"""The sample-site name used for the parameter ``param_name``."""
        return self.site_name if self.shared else f"{param_name}{SITE_SEPARATOR}{self.site_name}"

    def resolve(
        self, param_name: str, cache: HyperCache | None, *, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        r"""The value as a tensor; samples the site (once per model call) when random."""
        if isinstance(self.value, Tensor):
            return self.value.reshape(()).to(dtype=dtype, device=device)
        if not isinstance(self.value, PyroDistribution):
            # A number: one tensor per (value, dtype, device), so a training step on a GPU does
            # not copy the same constant from the host again and again.
            key = (float(self.value), dtype, device)
            constant = self._constants.get(key)
            if constant is None:
                constant = torch.tensor(key[0], dtype=dtype, device=device)
                self._constants = {key: constant}
            return constant
        site = self.site(param_name)
        if cache is not None and site in cache:
            return cache[site]
        value = pyro.sample(site, _on(self.value, dtype, device))
        if cache is not None:
            cache[site] = value
        return value

    def __repr__(self) -> str:
        return f"{self.name}={self.value!r}"


def _on(d: PyroDistribution, dtype: torch.dtype, device: torch.device) -> PyroDistribution:
    r"""The distribution ``d`` with its tensors in ``dtype`` and on ``device`` (Pyro has no ``.to``).

    Floating-point tensors are converted to ``dtype``, other tensors (masks, counts) only moved to
    ``device``, everywhere in ``d``: in its own attributes and in the distributions, transforms and
    constraints they hold (the ``base_dist`` of a wrapper such as ``Independent`` or a
    ``TransformedDistribution`` like ``LogNormal``, the ``transforms`` list, the ``parts`` of a
    composed transform, the transform an inverse inverts). A distribution whose constructor
    arguments are all stored under their own names (``Normal``, ``Gamma``, ``MultivariateNormal``
    with whichever of ``covariance_matrix``, ``precision_matrix`` and ``scale_tril`` it was given)
    is built again from the converted arguments, so quantities it derives (a Cholesky factor) are
    computed in ``dtype`` too; any other object is copied with its attributes converted (Delta's
    ``event_dim``, a mask, a wrapper's shapes carry over). A copied transform forgets its inverse
    and its cache, which it rebuilds from itself on demand.

    ``d`` is never modified, and is returned itself when nothing needs converting. A transform
    that is a ``torch.nn.Module`` (a learnable flow) is shared, not converted: converting it would
    change the user's module.
    """
    memo: dict[int, Any] = {}

    def convert(obj: Any) -> Any:
        key = id(obj)
        if key in memo:
            return memo[key]
        memo[key] = obj  # a reference cycle back to ``obj`` keeps the original
        out = converted(obj)
        memo[key] = out
        return out

    def converted(obj: Any) -> Any:
        if isinstance(obj, Tensor):
            return obj.to(dtype=dtype if obj.is_floating_point() else obj.dtype, device=device)
        if isinstance(obj, torch.nn.Module):
            return obj
        if isinstance(obj, _InverseTransform):
            forward = convert(obj._inv)
            return obj if forward is obj._inv else forward.inv
        if isinstance(obj, _COPIED):
            attrs = vars(obj)
            skip = _TRANSFORM_CACHES if isinstance(obj, Transform) else frozenset()
            changed = {}
            for name, value in attrs.items():
                if name not in skip:
                    new = convert(value)
                    if new is not value:
                        changed[name] = new
            if not changed:
                return obj
            if isinstance(obj, torch.distributions.Distribution):
                rebuilt = _rebuilt(obj, {**attrs, **changed})
                if rebuilt is not None:
                    return rebuilt
            copy = object.__new__(type(obj))
            copy.__dict__.update(attrs)
            copy.__dict__.update(changed)
            if isinstance(copy, Transform):
                copy.__dict__.update({k: v for k, v in _TRANSFORM_RESET.items() if k in attrs})
            return copy
        if type(obj) in (list, tuple):
            items = [convert(item) for item in obj]
            if any(new is not old for new, old in zip(items, obj, strict=True)):
                return type(obj)(items)
        elif type(obj) is dict:
            values = {k: convert(v) for k, v in obj.items()}
            if any(values[k] is not obj[k] for k in obj):
                return values
        return obj

    return convert(d)


#: What :func:`_on` converts inside: distributions (and the wrappers holding a ``base_dist``),
#: transforms and constraints (which may hold tensor bounds).
_COPIED = (
    torch.distributions.Distribution,
    torch.distributions.transforms.Transform,
    torch.distributions.constraints.Constraint,
)
#: A transform's reference to its inverse (which refers back to the original) and its cache of
#: the last call (keyed by identity): not converted; a copy starts without them.
_TRANSFORM_RESET: dict[str, Any] = {"_inv": None, "_cached_x_y": (None, None)}
_TRANSFORM_CACHES = frozenset(_TRANSFORM_RESET)


#: Constructor parameters by distribution class (reading a signature costs more than a rebuild).
_CONSTRUCTOR_PARAMETERS: dict[type, tuple[inspect.Parameter, ...] | None] = {}


def _constructor_parameters(cls: Any) -> tuple[inspect.Parameter, ...] | None:
    r"""The parameters of ``cls.__init__`` after ``self``; ``None`` with ``*args``/``**kwargs``
    or no readable signature."""
    if cls in _CONSTRUCTOR_PARAMETERS:
        return _CONSTRUCTOR_PARAMETERS[cls]
    try:
        parameters: tuple[inspect.Parameter, ...] | None = tuple(
            inspect.signature(cls.__init__).parameters.values()
        )[1:]
    except (TypeError, ValueError):
        parameters = None
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if parameters is not None and any(p.kind in variadic for p in parameters):
        parameters = None
    _CONSTRUCTOR_PARAMETERS[cls] = parameters
    return parameters


def _rebuilt(d: Any, attrs: Mapping[str, Any]) -> Any:
    r"""``type(d)`` called with the constructor arguments read from ``attrs`` (``d``'s attributes,
    converted), or ``None`` where they are not all there: an argument that is not stored under
    its own name, other than an alternative parametrisation left out (default ``None``)."""
    parameters = _constructor_parameters(type(d))
    if parameters is None:
        return None
    kwargs = {}
    for p in parameters:
        if p.name == "validate_args":
            if "_validate_args" in attrs:
                kwargs[p.name] = attrs["_validate_args"]
        elif p.name in attrs:
            kwargs[p.name] = attrs[p.name]
        elif p.default is not None:
            return None
    try:
        return type(d)(**kwargs)
    except (TypeError, ValueError):  # e.g. both probs and logits held (one of them derived)
        return None


def legacy_site_renames(shapes: Mapping[str, Sequence[int]]) -> dict[str, str]:
    r"""Old to current names of the per-parameter hyperparameter sites among saved sites.

    Earlier versions named the site of a per-parameter hyperparameter (``shared=False``)
    ``"<parameter>.<site_name>"``; it is now ``"<parameter>:<site_name>"``
    (:data:`SITE_SEPARATOR`). A saved site ``"A.B"`` is such an old name when ``"A"`` is also a
    saved site and ``"A.B"`` is scalar: hyperparameters are scalar, and no network parameter's
    name extends another's (a module attribute is a parameter or a submodule, not both). Meant
    for reading posterior files, so that files written under the old names keep loading.

    Parameters
    ----------
    shapes : mapping from str to sequence of int
        Every saved site name with its shape.

    Returns
    -------
    dict from str to str
        ``{old: current}`` for each old name (empty for files with current names).

    Examples
    --------
    >>> legacy_site_renames({"layer.residual": [2, 2], "layer.residual.residual_scale": []})
    {'layer.residual.residual_scale': 'layer.residual:residual_scale'}
    """
    renames = {}
    for name, shape in shapes.items():
        parent, dot, leaf = name.rpartition(".")
        if not (dot and parent in shapes and leaf and len(shape) == 0):
            continue
        current = f"{parent}{SITE_SEPARATOR}{leaf}"
        if current not in shapes:
            renames[name] = current
    return renames


def expand_to(d: PyroDistribution, shape: torch.Size, name: str) -> PyroDistribution:
    r"""Expand a distribution to a parameter of ``shape`` with all dims as event dims."""
    full = tuple(d.batch_shape) + tuple(d.event_shape)
    if full == ():
        return d.expand(shape).to_event(len(shape)) if len(shape) else d
    if full != tuple(shape):
        raise ValueError(
            f"the prior for {name!r} has shape {full}, but the parameter has shape {tuple(shape)}"
        )
    return d.to_event(len(d.batch_shape)) if len(d.batch_shape) else d


class Prior(abc.ABC):
    r"""A prior over a relaxation parameter (or any parameter), possibly hierarchical."""

    @abc.abstractmethod
    def distribution(
        self,
        name: str,
        param: Tensor,
        relaxation: Relaxation | None = None,
        cache: HyperCache | None = None,
    ) -> PyroDistribution:
        r"""The prior of parameter ``name`` (shape, dtype and device of ``param``).

        Random hyperparameters are sampled here (inside the model), at most once per ``cache``.
        """

    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        r"""The hyperparameters, fixed or random."""
        return ()


class DistributionPrior(Prior):
    r"""A fixed Pyro distribution used as a prior (scalar ones are expanded to the shape)."""

    def __init__(self, d: PyroDistribution) -> None:
        if not isinstance(d, PyroDistribution):
            raise TypeError(f"expected a pyro distribution, got {type(d).__name__}")
        self.d = d

    def distribution(self, name, param, relaxation=None, cache=None):
        return expand_to(_on(self.d, param.dtype, param.device), param.shape, name)

    def __repr__(self) -> str:
        return f"DistributionPrior({self.d!r})"


class CallablePrior(Prior):
    r"""A prior given by ``callable(name, shape) -> Distribution``."""

    def __init__(self, fn: Callable[[str, torch.Size], PyroDistribution]) -> None:
        self.fn = fn

    def distribution(self, name, param, relaxation=None, cache=None):
        d = self.fn(name, param.shape)
        if not isinstance(d, PyroDistribution):
            raise TypeError(
                f"the prior callable for {name!r} must return a pyro distribution, got "
                f"{type(d).__name__}"
            )
        return expand_to(d, param.shape, name)


PriorSpec = PyroDistribution | Prior | Callable[[str, torch.Size], PyroDistribution]


def as_prior(spec: PriorSpec, what: str = "prior") -> Prior:
    r"""Turn a prior spec into a :class:`Prior`."""
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, PyroDistribution):
        return DistributionPrior(spec)
    if callable(spec):
        return CallablePrior(spec)
    raise TypeError(
        f"{what} must be a pyro distribution, a symprior Prior or a callable (name, shape) -> "
        f"Distribution, got {type(spec).__name__}"
    )


class IsotropicNormal(dist.TorchDistribution):
    r""":math:`N(\mathrm{loc}, \mathrm{scale}^2 I)` over a whole parameter, with scalar ``loc`` and
    ``scale`` and ``event_shape`` the parameter's shape.

    The same density as ``Normal(loc, scale).expand(shape).to_event(len(shape))``, but its log
    density is one pass over the value,
    :math:`-\|v - \mathrm{loc}\|^2 / (2\,\mathrm{scale}^2) - k \log(\mathrm{scale}\sqrt{2\pi})`,
    which matters when it is evaluated at every step on large residual matrices.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {
        "loc": dist.constraints.real,
        "scale": dist.constraints.positive,
    }
    has_rsample = True

    def __init__(
        self, loc: Tensor, scale: Tensor, event_shape: torch.Size, *, zero_loc: bool = False
    ) -> None:
        self.loc, self.scale = loc, scale
        self._zero_loc = zero_loc  # the caller knows loc is 0: skip the subtraction
        self._numel = math.prod(event_shape)
        super().__init__(torch.Size(), torch.Size(event_shape), validate_args=False)

    @property
    def support(self) -> Any:
        return dist.constraints.independent(dist.constraints.real, len(self.event_shape))

    @property
    def mean(self) -> Tensor:
        return self.loc.expand(self.event_shape)

    @property
    def variance(self) -> Tensor:
        return (self.scale**2).expand(self.event_shape)

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.event_shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * eps

    def log_prob(self, value: Tensor) -> Tensor:
        centred = value if self._zero_loc else value - self.loc
        event_dims = len(self.event_shape)
        if centred.ndim == event_dims:
            flat = centred.reshape(-1)
            sq = torch.dot(flat, flat)  # one fused pass, no squared copy
        else:
            dims = tuple(range(-event_dims, 0))
            sq = centred.square().sum(dims) if dims else centred.square()
        return -0.5 * sq / self.scale.square() - self._numel * (
            self.scale.log() + 0.5 * math.log(2 * math.pi)
        )

    def expand(self, batch_shape: Any, _instance: Any = None) -> Any:
        if torch.Size(batch_shape) == torch.Size():
            return self
        return (
            dist.Normal(self.loc, self.scale)
            .expand(torch.Size(batch_shape) + self.event_shape)
            .to_event(len(self.event_shape))
        )


def isotropic_log_prob(value: Tensor, loc: float, scale: float) -> Tensor:
    r""":math:`\log N(v; \mathrm{loc}, \mathrm{scale}^2 I)` summed over every entry of ``value``,
    for numbers ``loc`` and ``scale``: a 0-d tensor."""
    centred = value if loc == 0.0 else value - loc
    flat = centred.reshape(-1)
    const = -value.numel() * (math.log(scale) + 0.5 * math.log(2 * math.pi))
    return torch.dot(flat, flat) * (-0.5 / scale**2) + const


class NormalPrior(Prior):
    r"""Shared machinery of the Gaussian priors :math:`N(\mathrm{loc}, \mathrm{scale}^2 I)`.

    ``loc`` defaults to the relaxation's strict value (zero for residuals and frequencies), so
    every Gaussian prior is centred on exact equivariance unless told otherwise.
    """

    def __init__(self, scale: Hyperparameter, loc: float | None = None) -> None:
        if loc is not None and (isinstance(loc, bool) or not isinstance(loc, int | float)):
            raise TypeError(f"loc must be a number or None, got {type(loc).__name__}")
        self.scale = scale
        self.loc_value = loc

    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        return (self.scale,)

    def fixed_isotropic(self, relaxation: Relaxation | None) -> tuple[float, float] | None:
        r"""``(loc, scale)`` as numbers when both are fixed scalars (no random or tensor scale,
        no tensor-valued strict setting), else ``None``: then the log density is
        :func:`isotropic_log_prob`, two operations on the parameter."""
        value = self.scale.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if self.loc_value is not None:
            return float(self.loc_value), float(value)
        strict = None if relaxation is None else relaxation.strict_value
        if isinstance(strict, Tensor):
            return None
        return (0.0 if strict is None else float(strict)), float(value)

    def loc(self, param: Tensor, relaxation: Relaxation | None) -> Tensor:
        r"""The centre: ``loc`` if given, else the strict value (else 0), shaped like ``param``."""
        if self.loc_value is not None:
            return param.new_full(param.shape, float(self.loc_value))
        strict = 0.0 if relaxation is None else relaxation.strict_value
        if isinstance(strict, Tensor):
            return strict.to(param).expand(param.shape)
        return param.new_full(param.shape, float(strict))

    def distribution(self, name, param, relaxation=None, cache=None):
        scale = self.scale.resolve(name, cache, dtype=param.dtype, device=param.device)
        strict = None if relaxation is None else relaxation.strict_value
        if self.loc_value is None and not isinstance(strict, Tensor):
            # A scalar centre: expand lazily, so the log density is one pass over the parameter
            # (it is evaluated at every MAP/SVI step on possibly large residual matrices).
            centre_value = 0.0 if strict is None else float(strict)
            centre = param.new_tensor(centre_value)
            if param.ndim:
                return IsotropicNormal(centre, scale, param.shape, zero_loc=centre_value == 0.0)
            base = dist.Normal(centre, scale)
        else:
            base = dist.Normal(self.loc(param, relaxation), scale.expand(param.shape))
        return base.to_event(param.ndim) if param.ndim else base

    def __repr__(self) -> str:
        loc = "" if self.loc_value is None else f"loc={self.loc_value}, "
        return f"{type(self).__name__}({loc}{self.scale!r})"
