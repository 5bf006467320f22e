r"""Shared machinery of the optimisation engines: options, the step loop, checkpoints, NaN guards.

The loop keeps everything on the engine's device. Finiteness of the loss and gradients is
accumulated on the device and read back only every ``check_every`` steps (every step on CPU); a
checkpoint of the last checked state is kept so a divergence restores the last finite parameters
and names the first bad step. Checkpoints are written atomically (temporary file, then rename) and
resuming restores parameters, optimiser, scheduler and RNG states, so a resumed run reproduces the
uninterrupted one exactly (same seed, same data).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyro
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from tqdm.auto import tqdm

from symprior.inference._data import Batches, as_batches
from symprior.inference._posterior import Posterior, atomic_save

__all__ = ["DivergenceError", "Engine", "TrainOptions", "latent_sites"]

CHECKPOINT_NAME = "checkpoint.pt"


def _adam(tensors: list[Tensor], lr: float) -> torch.optim.Adam:
    r"""Adam with torch's fused kernel where it applies, else the default implementation.

    The fused kernel performs the same update as the per-tensor loop in one pass over each
    tensor (about 4x faster on CPU for the many small tensors of a network, where the loop's
    per-operation overhead dominates). It needs floating tensors on one CPU or CUDA device, and
    a torch that has it for that device (CPU since torch 2.4): elsewhere the default is used.
    """
    devices = {t.device.type for t in tensors}
    if (
        len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(t.is_floating_point() for t in tensors)
    ):
        try:
            return torch.optim.Adam(tensors, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            pass  # no fused kernel for this device in this torch version
    return torch.optim.Adam(tensors, lr=lr)


class DivergenceError(RuntimeError):
    r"""A step produced a non-finite loss or gradient.

    Attributes
    ----------
    step : int
        The first bad step (0-based).
    posterior : Posterior or None
        The posterior at the last finite parameters.
    """

    def __init__(self, message: str, *, step: int, posterior: Posterior | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.posterior = posterior


@dataclass(frozen=True)
class TrainOptions:
    r"""Options of the optimisation loop shared by :class:`MAP`, :class:`SVI` and Laplace's MAP.

    Attributes
    ----------
    num_epochs : int
        Passes over the data.
    batch_size : int or None
        Minibatch size (``None``: full batch). The likelihood is scaled by N / batch.
    lr : float
        Learning rate (Adam), or initial step length (L-BFGS; 1 is usual).
    optimizer : {"adam", "lbfgs"}
        Adam over minibatches, or L-BFGS with a strong-Wolfe line search (full batch; one
        "step" is one L-BFGS iteration) for small models where an exact mode matters.
    scheduler : callable or None
        ``scheduler(optimizer) -> torch.optim.lr_scheduler.LRScheduler``, stepped every step.
    clip_norm : float or None
        Clip the gradient norm to this value.
    progress : bool
        Show a progress bar.
    checkpoint_dir : str, Path or None
        Where ``checkpoint.pt`` is written every ``checkpoint_every`` steps.
    checkpoint_every : int or None
    check_every : int or None
        Read the finiteness flag back from the device every this many steps (default: 1 on CPU,
        25 on CUDA).
    seed : int
        Seeds the data order and Pyro's RNG.
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:0"``...): model, data and optimiser state live there.
    """

    num_epochs: int = 100
    batch_size: int | None = None
    lr: float = 1e-2
    optimizer: str = "adam"
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    clip_norm: float | None = None
    progress: bool = True
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    check_every: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        _positive_int(self.num_epochs, "num_epochs")
        if self.batch_size is not None:
            _positive_int(self.batch_size, "batch_size")
        if not (isinstance(self.lr, int | float) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.optimizer == "lbfgs" and self.batch_size is not None:
            raise ValueError("optimizer='lbfgs' needs full-batch steps: leave batch_size=None")
        if self.clip_norm is not None and not (
            isinstance(self.clip_norm, int | float) and self.clip_norm > 0
        ):
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm!r}")
        for name in ("checkpoint_every", "check_every"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(value, name)
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but no CUDA device is available")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def latent_sites(trace: pyro.poutine.Trace) -> list[str]:
    r"""Names of the unobserved sample sites of a model trace (plates excluded)."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def check_values(model: Any, trace: Any, batches: Batches) -> None:
    r"""Let each likelihood check the values of all observations once per fit (e.g. class
    labels within the network's outputs), given the prototype ``trace`` of the first batch.
    Skipped for a DataLoader, whose observations are not all at hand."""
    if batches.y is None:
        return
    for likelihood in getattr(model, "likelihood_list", ()):
        likelihood.check_values(trace.nodes["_RETURN"]["value"], batches.y)


class Engine(abc.ABC):
    r"""Base class of inference engines: ``engine.fit(model, data) -> Posterior``."""

    name = "engine"

    def __init__(self, options: TrainOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError("give either options=TrainOptions(...) or keyword options, not both")
        try:
            self.options = options if options is not None else TrainOptions(**kwargs)
        except TypeError as err:
            fields = sorted(f.name for f in dataclasses.fields(TrainOptions))
            raise TypeError(f"{err}; the training options are {fields}") from None
        self.losses: list[float] = []

    @abc.abstractmethod
    def fit(self, model: Any, data: Any, *, resume: bool = False) -> Posterior:
        r"""Infer the posterior of ``model`` given ``data``."""

    # --------------------------------------------------------------------------- helpers
    @contextmanager
    def _session(
        self, model: Any, data: Any
    ) -> Iterator[tuple[Batches, Any, tuple[Tensor, Tensor | None]]]:
        r"""Move the model to the device and yield ``(batches, prototype trace, first batch)`` inside a private
        Pyro param store and a forked, seeded RNG (the caller's global state is left alone)."""
        o = self.options
        batches = self._batches(data)
        model.to(o.torch_device)
        devices = [o.torch_device.index or 0] if o.torch_device.type == "cuda" else []
        with pyro.get_param_store().scope(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(o.seed)
            x0, y0 = next(iter(batches.epoch(0)))
            trace = pyro.poutine.trace(model).get_trace(x0, y0, num_data=batches.num_data)
            check_values(model, trace, batches)
            yield batches, trace, (x0, y0)

    def _batches(self, data: Any) -> Batches:
        o = self.options
        return as_batches(data, batch_size=o.batch_size, seed=o.seed, device=o.torch_device)

    def _run(
        self,
        objective: Callable[[Tensor, Tensor | None], Tensor],
        params: Mapping[str, Tensor],
        batches: Batches,
        make_posterior: Callable[[], Posterior],
        *,
        resume: bool,
        description: str,
        evaluate: Callable[[Tensor, Tensor | None], Tensor] | None = None,
        engine: str | None = None,
    ) -> None:
        r"""The optimisation loop over epochs and batches of ``objective``.

        ``evaluate`` computes the same loss without side effects (``objective`` may step
        GradNorm's weights); it checks the parameters left by the last update, which no step
        evaluates (default: ``objective``). ``engine`` names the engine in checkpoints (default
        :attr:`name`), so that a checkpoint is resumed only by the engine that wrote it.
        """
        o = self.options
        engine_name = engine or self.name
        device = o.torch_device
        names = list(params)
        tensors = [params[n] for n in names]
        optimizer: torch.optim.Optimizer
        if o.optimizer == "lbfgs":
            optimizer = torch.optim.LBFGS(
                tensors,
                lr=o.lr,
                max_iter=20,
                tolerance_grad=1e-12,
                tolerance_change=1e-16,
                line_search_fn="strong_wolfe",
            )
        else:
            optimizer = _adam(tensors, o.lr)
        scheduler = o.scheduler(optimizer) if o.scheduler is not None else None
        check_every = o.check_every or (1 if device.type == "cpu" else 25)
        if o.optimizer == "lbfgs":
            check_every = 1
        total = o.num_epochs * batches.num_batches
        path = Path(o.checkpoint_dir) / CHECKPOINT_NAME if o.checkpoint_dir is not None else None

        step, start_epoch, skip = 0, 0, 0
        epoch_rng: dict[str, Tensor] | None = None
        step_rng: dict[str, Tensor] = {}
        self.losses = []
        if resume:
            if path is None:
                raise ValueError("resume=True needs checkpoint_dir")
            if path.exists():
                ckpt = torch.load(path, map_location=device, weights_only=True)
                if ckpt.get("engine") != engine_name or list(ckpt["params"]) != names:
                    raise ValueError(
                        f"the checkpoint {path} belongs to another engine or model "
                        f"({ckpt.get('engine')!r}, {len(ckpt['params'])} parameters)"
                    )
                with torch.no_grad():
                    for n, t in zip(names, tensors, strict=True):
                        t.copy_(ckpt["params"][n])
                optimizer.load_state_dict(ckpt["optimizer"])
                if scheduler is not None and ckpt.get("scheduler") is not None:
                    scheduler.load_state_dict(ckpt["scheduler"])
                step, start_epoch, skip = ckpt["step"], ckpt["epoch"], ckpt["batch"]
                self.losses = list(ckpt["losses"])
                epoch_rng = ckpt["epoch_rng"]
                step_rng = ckpt["rng"]

        # Snapshot of the last state known to be finite (restored on divergence).
        def snapshot() -> dict[str, Any]:
            return {
                "params": {n: t.detach().clone() for n, t in zip(names, tensors, strict=True)},
                "optimizer": _clone_state(optimizer.state_dict()),
            }

        # Taken at every check: a non-finite loss at step k is evaluated at the parameters of
        # update k - 1, so the last finite ones are those before that update.
        good = snapshot()
        bad = torch.zeros((), dtype=torch.bool, device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        pending: list[Tensor] = []
        last_batch: tuple[Tensor, Tensor | None] | None = None
        bar = tqdm(total=total, initial=step, desc=description, disable=not o.progress, leave=False)

        def check(current_step: int, take_snapshot: bool = True) -> None:
            nonlocal good
            if bool(bad):
                bad_step = int(first_bad)
                with torch.no_grad():
                    for n, t in zip(names, tensors, strict=True):
                        t.copy_(good["params"][n])
                optimizer.load_state_dict(good["optimizer"])
                bar.close()
                raise DivergenceError(
                    f"{description}: step {bad_step} produced a non-finite loss or gradient; the "
                    f"parameters were restored to their last finite values",
                    step=bad_step,
                    posterior=make_posterior(),
                )
            if pending:
                values = torch.stack(pending).tolist()
                self.losses.extend(values)
                pending.clear()
                bar.set_postfix(loss=f"{values[-1]:.4g}")
            if take_snapshot:
                good = snapshot()

        def save(epoch: int, b: int) -> None:
            next_batch = b + 1
            next_epoch = epoch
            if next_batch >= batches.num_batches:
                next_epoch, next_batch = epoch + 1, 0
            atomic_save(
                {
                    "engine": engine_name,
                    "step": step,
                    "epoch": next_epoch,
                    "batch": next_batch,
                    "params": {n: t.detach() for n, t in zip(names, tensors, strict=True)},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler else None,
                    "losses": list(self.losses),
                    "rng": _rng_state(device),
                    "epoch_rng": epoch_rng if next_batch and batches.is_loader else None,
                },
                cast(Path, path),
            )

        # Inside the loop NaNs must reach the finiteness check rather than trip Pyro's argument
        # validation (which raises a ValueError); validation already ran on the initial trace.
        validation = pyro.validation_enabled(False)
        validation.__enter__()
        try:
            for epoch in range(start_epoch, o.num_epochs):
                resuming = resume and epoch == start_epoch and step > 0
                mid_epoch = resuming and epoch_rng is not None
                if resuming:
                    # A loader's shuffle draws from the global RNG when iteration starts: replay
                    # it from the epoch start, then restore the RNG of the interrupted step.
                    _set_rng_state(epoch_rng if mid_epoch else step_rng, device)  # type: ignore[arg-type]
                if batches.is_loader:
                    epoch_rng = _rng_state(device)
                for b, (xb, yb) in enumerate(batches.epoch(epoch)):
                    if epoch == start_epoch and b < skip:
                        continue
                    if mid_epoch and b == skip:
                        _set_rng_state(step_rng, device)
                    if o.optimizer == "lbfgs":

                        def closure(xb: Tensor = xb, yb: Tensor | None = yb) -> Tensor:
                            optimizer.zero_grad(set_to_none=True)
                            value = objective(xb, yb)
                            value.backward()
                            return value

                        before = snapshot()
                        # L-BFGS returns the loss at the parameters it started from.
                        loss = cast(Tensor, optimizer.step(closure))
                        finite = torch.isfinite(loss.detach())
                        if bool(finite):
                            good = before
                        for t in tensors:
                            finite = finite & torch.isfinite(t.detach()).all()
                        first_bad = torch.where(
                            ~finite, torch.full_like(first_bad, step), first_bad
                        )
                        bad = bad | ~finite
                        pending.append(loss.detach())
                        check(step, take_snapshot=False)
                    else:
                        optimizer.zero_grad(set_to_none=True)
                        loss = objective(xb, yb)
                        loss.backward()
                        # One fused norm per gradient: a NaN or inf anywhere makes its norm
                        # non-finite.
                        grads = [t.grad for t in tensors if t.grad is not None]
                        finite = torch.isfinite(loss.detach())
                        if grads:
                            norms = torch.stack(torch._foreach_norm(grads))
                            finite = finite & torch.isfinite(norms).all()
                        first_bad = torch.where(
                            ~finite & ~bad, torch.full_like(first_bad, step), first_bad
                        )
                        bad = bad | ~finite
                        pending.append(loss.detach())
                        last = step + 1 == total
                        if (step + 1) % check_every == 0 or last or check_every == 1:
                            check(step)
                        if o.clip_norm is not None:
                            torch.nn.utils.clip_grad_norm_(tensors, o.clip_norm)
                        optimizer.step()  # type: ignore[call-arg]
                        if scheduler is not None:
                            scheduler.step()
                    step += 1
                    bar.update(1)
                    if (
                        path is not None
                        and o.checkpoint_every is not None
                        and step % o.checkpoint_every == 0
                    ):
                        # Not a snapshot: these parameters are the update's, not yet evaluated.
                        check(step, take_snapshot=False)
                        save(epoch, b)
                    last_batch = (xb, yb)
                skip = 0
            check(step, take_snapshot=False)  # keeps the parameters before the last update
            if last_batch is not None:
                # The last update's parameters: evaluated once, outside the global RNG stream.
                devices = [device] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    final = (evaluate or objective)(*last_batch)
                if not bool(torch.isfinite(final)):
                    first_bad = torch.full_like(first_bad, step - 1)
                    bad = torch.ones_like(bad)
                    check(step)
        finally:
            validation.__exit__(None, None, None)
            bar.close()


def _clone_state(state: Any) -> Any:
    if isinstance(state, Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _clone_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_clone_state(v) for v in state]
    return state
