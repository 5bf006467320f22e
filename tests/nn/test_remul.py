"""Tests of the REMUL objective (001): equivariance loss, REMUL/augmentation, GradNorm."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symprior.groups import SO2, SO3, Cyclic, Group, Rep, Scalar, V, transform_image
from symprior.nn.remul import (
    GradNorm,
    augmentation_loss,
    equivariance_loss,
    equivariance_pairs,
    remul_objective,
)
from symprior.testing import assert_equivariant

DT = torch.float64
Action = Rep | Callable[[Tensor, Tensor], Tensor]


def image_action(g: Tensor, x: Tensor) -> Tensor:
    return transform_image(x, g)


def rotation(theta: float) -> Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=DT)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(n_in: int, n_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 6), nn.Tanh(), nn.Linear(6, n_out)).to(DT)


# --------------------------------------------------------------- exactly equivariant -> 0
def _so3_double() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor]:
    G = SO3()
    return (lambda v: 2 * v), G, V(G), V(G), torch.randn(6, 3, dtype=DT)


def _so2_invariant() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor]:
    G = SO2()
    return (
        (lambda v: v.square().sum(-1, keepdim=True)),
        G,
        V(G),
        Scalar(G),
        torch.randn(6, 2, dtype=DT),
    )


def _so3_outer() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor]:
    G = SO3()
    f = lambda v: (v[..., :, None] * v[..., None, :]).flatten(-2)  # noqa: E731
    return f, G, V(G), V(G) * V(G), torch.randn(5, 3, dtype=DT)


def _c4_image_sum() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor]:
    G = Cyclic(4)
    x = torch.randn(4, 2, 5, 5, dtype=DT)
    return (lambda im: im.sum((-3, -2, -1))[:, None]), G, image_action, Scalar(G), x


def _c4_image_square() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor]:
    G = Cyclic(4)
    return (lambda im: im.square()), G, image_action, image_action, torch.randn(3, 5, 5, dtype=DT)


EXACT = {
    "SO3-V-double": _so3_double,
    "SO2-norm-invariant": _so2_invariant,
    "SO3-outer-product": _so3_outer,
    "C4-image-sum": _c4_image_sum,
    "C4-image-pointwise": _c4_image_square,
}


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("case", list(EXACT), ids=list(EXACT))
def test_zero_for_exactly_equivariant_functions(case: str, norm: str) -> None:
    torch.manual_seed(0)
    f, G, rep_in, rep_out, x = EXACT[case]()
    assert_equivariant(f, G, x, rep_in=rep_in, rep_out=rep_out, dtypes=None, generator=seeded(1))
    loss = equivariance_loss(
        f, x, G, rep_in, rep_out, num_samples=3, norm=norm, generator=seeded(2)
    )
    assert loss.dtype == DT
    assert float(loss) <= 1e-12
    terms = equivariance_loss(f, x, G, rep_in, rep_out, num_samples=3, reduction="none")
    assert terms.shape == (3, x.shape[0])
    assert float(terms.abs().max()) <= 1e-12


# ------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_translation_by_c_matches_closed_form_per_element(norm: str) -> None:
    c = torch.tensor([0.7, -1.3], dtype=DT)
    angles = [0.0, 0.4, -2.0, math.pi / 2, math.pi]
    elements = torch.stack([rotation(a) for a in angles])
    x = torch.randn(3, 2, dtype=DT, generator=seeded(0))
    G = SO2()
    terms = equivariance_loss(
        lambda v: v + c, x, G, V(G), V(G), norm=norm, reduction="none", elements=elements
    )
    for j, a in enumerate(angles):
        d = c - rotation(a) @ c
        expected = float(d.square().sum()) if norm == "l2" else float(d.abs().sum())
        if norm == "l2":  # ||c - R c||^2 = 2|c|^2 (1 - cos a)
            assert expected == pytest.approx(2 * float(c @ c) * (1 - math.cos(a)), abs=1e-12)
        torch.testing.assert_close(terms[j], torch.full((3,), expected, dtype=DT))
    mean = equivariance_loss(lambda v: v + c, x, G, V(G), V(G), norm=norm, elements=elements)
    total = equivariance_loss(
        lambda v: v + c, x, G, V(G), V(G), norm=norm, reduction="sum", elements=elements
    )
    torch.testing.assert_close(mean, terms.mean())
    torch.testing.assert_close(total, terms.sum())


def test_translation_by_c_haar_expectation() -> None:
    # E_g ||c - R(g) c||^2 = 2|c|^2 - 2 c^T E[R] c = 2|c|^2 under Haar (E[R] = 0); the terms
    # have standard deviation sqrt(2)|c|^2.
    c = torch.tensor([0.7, -1.3], dtype=DT)
    x = torch.randn(4, 2, dtype=DT, generator=seeded(0))
    G = SO2()
    loss = equivariance_loss(
        lambda v: v + c, x, G, V(G), V(G), num_samples=2000, generator=seeded(3)
    )
    n = 2000 * 4
    sq = float(c @ c)
    assert abs(float(loss) - 2 * sq) < 4 * math.sqrt(2) * sq / math.sqrt(n)


# ---------------------------------------------------------------------- fresh samples
def test_fresh_elements_every_call_and_seed_reproduces() -> None:
    c = torch.tensor([0.5, 1.0], dtype=DT)
    x = torch.randn(3, 2, dtype=DT, generator=seeded(0))
    G = SO2()

    def loss(gen: torch.Generator) -> Tensor:
        return equivariance_loss(lambda v: v + c, x, G, V(G), V(G), num_samples=2, generator=gen)

    gen = seeded(11)
    first, second = loss(gen), loss(gen)
    assert abs(float(first) - float(second)) > 1e-6
    torch.testing.assert_close(loss(seeded(11)), first, rtol=0, atol=0)
    replay = seeded(11)
    loss(replay)
    torch.testing.assert_close(loss(replay), second, rtol=0, atol=0)


FRESH_ENTRY_POINTS = ["equivariance_loss", "remul_objective", "augmentation_loss"]


@pytest.mark.parametrize("source", ["generator", "global-rng"])
@pytest.mark.parametrize("entry_point", FRESH_ENTRY_POINTS)
def test_fresh_elements_in_every_entry_point(entry_point: str, source: str) -> None:
    # Every call draws new elements (001 sec. 3.1), from the generator or, without one, from
    # the global torch RNG; the draws are the first and second 2 x B = 6 elements of the stream.
    G = SO2()
    net = mlp(2, 2, 12)
    x = torch.randn(3, 2, dtype=DT, generator=seeded(0))
    y = torch.randn(3, 2, dtype=DT, generator=seeded(1))

    def call(**kwargs: Any) -> Tensor:
        if entry_point == "equivariance_loss":
            return equivariance_loss(net, x, G, V(G), V(G), **kwargs)
        if entry_point == "remul_objective":
            return remul_objective(
                net, x, y, F.mse_loss, G, V(G), V(G), alpha=0.5, beta=2.0, **kwargs
            ).total
        return augmentation_loss(net, x, y, F.mse_loss, G, V(G), V(G), **kwargs)

    stream = seeded(11)
    expected = [call(elements=G.sample(6, stream).reshape(2, 3, G.n, G.n)) for _ in range(2)]
    if source == "generator":
        gen = seeded(11)
        first, second = call(num_samples=2, generator=gen), call(num_samples=2, generator=gen)
    else:
        torch.manual_seed(11)
        first, second = call(num_samples=2), call(num_samples=2)
        torch.manual_seed(11)
        torch.testing.assert_close(call(num_samples=2), first, rtol=0, atol=0)
    torch.testing.assert_close(first, expected[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(second, expected[1], rtol=0, atol=1e-15)
    # Measured differences between the two calls: 0.043, 0.087 and 0.25.
    assert abs(float((first - second).detach())) > 0.01


# ------------------------------------------------------------- batched == naive loop
def _naive(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    elements: Tensor,
    act_in: Callable[[Tensor, Tensor], Tensor],
    act_out: Callable[[Tensor, Tensor], Tensor],
    norm: str,
    y: Tensor | None = None,
) -> Tensor:
    terms = []
    for j in range(elements.shape[0]):
        for i in range(x.shape[0]):
            g = elements[j, i]
            lhs = f(act_in(g, x[i : i + 1]))[0]
            base = f(x[i : i + 1])[0] if y is None else y[i]
            d = lhs - act_out(g, base[None])[0]
            terms.append(d.square().sum() if norm == "l2" else d.abs().sum())
    return torch.stack(terms).mean()


def _vector_case() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor, Tensor]:
    G = SO3()
    return mlp(3, 3, 0), G, V(G), V(G), torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)


def _particles_case() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor, Tensor]:
    G = SO3()
    net = mlp(3, 3, 1)
    x, y = torch.randn(3, 4, 3, dtype=DT), torch.randn(3, 4, 3, dtype=DT)
    return net, G, V(G), V(G), x, y


def _sum_rep_case() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor, Tensor]:
    G = SO2()
    rep = 2 * V(G) + Scalar(G)
    return mlp(5, 5, 2), G, rep, rep, torch.randn(4, 5, dtype=DT), torch.randn(4, 5, dtype=DT)


def _image_case() -> tuple[Callable[[Tensor], Tensor], Group, Action, Action, Tensor, Tensor]:
    torch.manual_seed(3)
    conv = nn.Conv2d(1, 1, 3, padding=1).to(DT)
    x, y = torch.randn(3, 1, 6, 6, dtype=DT), torch.randn(3, 1, 6, 6, dtype=DT)
    return conv, SO2(), image_action, image_action, x, y


BATCHED = {
    "SO3-V-mlp": _vector_case,
    "SO3-particles": _particles_case,
    "SO2-sum-rep": _sum_rep_case,
    "SO2-image-conv": _image_case,
}


def _action(rep: Action) -> Callable[[Tensor, Tensor], Tensor]:
    if isinstance(rep, Rep):
        return rep.act
    assert callable(rep)
    return rep


@pytest.mark.parametrize("target", ["prediction", "labels"])
@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("case", list(BATCHED), ids=list(BATCHED))
def test_batched_equals_naive_loop(case: str, norm: str, target: str) -> None:
    torch.manual_seed(0)
    f, G, rep_in, rep_out, x, y = BATCHED[case]()
    labels = y if target == "labels" else None
    m, b = 3, x.shape[0]
    loss = equivariance_loss(
        f, x, G, rep_in, rep_out, num_samples=m, norm=norm, generator=seeded(5), y=labels
    )
    elements = G.sample(m * b, seeded(5)).reshape(m, b, G.n, G.n)
    with torch.no_grad():
        ref = _naive(f, x, elements, _action(rep_in), _action(rep_out), norm, labels)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-10, atol=1e-12)


def test_model_called_once_on_all_draws() -> None:
    G = SO3()
    net = mlp(3, 3, 0)
    calls: list[tuple[int, ...]] = []

    def f(v: Tensor) -> Tensor:
        calls.append(tuple(v.shape))
        return net(v)

    x = torch.randn(4, 3, dtype=DT)
    equivariance_loss(f, x, G, V(G), V(G), num_samples=5, generator=seeded(0))
    assert sorted(calls) == [(4, 3), (20, 3)]
    calls.clear()
    augmentation_loss(f, x, x, F.mse_loss, G, V(G), V(G), num_samples=5, generator=seeded(0))
    assert calls == [(20, 3)]


def test_shared_elements_equal_per_sample_copies() -> None:
    G = SO3()
    net = mlp(3, 3, 4)
    x = torch.randn(5, 3, dtype=DT)
    shared = G.sample(2, seeded(0))
    a = equivariance_loss(net, x, G, V(G), V(G), elements=shared, reduction="none")
    b = equivariance_loss(
        net, x, G, V(G), V(G), elements=shared[:, None].expand(2, 5, 3, 3), reduction="none"
    )
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradient_matches_finite_differences() -> None:
    G = SO2()
    x = torch.randn(3, 2, dtype=DT, generator=seeded(0))
    elements = G.sample(4, seeded(1))
    weight = torch.randn(2, 2, dtype=DT, generator=seeded(2), requires_grad=True)
    bias = torch.randn(2, dtype=DT, generator=seeded(3), requires_grad=True)

    def loss(w: Tensor, b: Tensor) -> Tensor:
        def f(v: Tensor) -> Tensor:
            return torch.tanh(v @ w.T + b)

        return equivariance_loss(f, x, G, V(G), V(G), elements=elements)

    assert torch.autograd.gradcheck(loss, (weight, bias))


def test_pairs_give_pointwise_error_of_eq13() -> None:
    # E' (001 eq. 13) is the mean unsquared L2 norm of the same pairs: sqrt of the l2 terms.
    G = SO3()
    net = mlp(3, 3, 5)
    x = torch.randn(4, 3, dtype=DT)
    elements = G.sample(6, seeded(0))
    lhs, rhs = equivariance_pairs(net, x, elements, G, V(G), V(G))
    terms = equivariance_loss(net, x, G, V(G), V(G), elements=elements, reduction="none")
    for j in range(6):
        for i in range(4):
            g = elements[j]
            torch.testing.assert_close(lhs[j, i], net(g @ x[i]))
            torch.testing.assert_close(rhs[j, i], g @ net(x[i]))
            # Each l2 term is the squared norm of its own pair (j, i), not just on average.
            torch.testing.assert_close(terms[j, i], (net(g @ x[i]) - g @ net(x[i])).square().sum())
    e_prime = (lhs - rhs).norm(dim=-1).mean()
    torch.testing.assert_close(e_prime, terms.sqrt().mean())


def test_pairs_give_error_of_eq12_for_translation_by_c() -> None:
    # For f(x) = x + c: mean_g R c - c -> -c under Haar, so E (001 eq. 12) -> |c|; the mean of
    # m Haar rotations of c has per-coordinate standard deviation |c| / sqrt(2 m).
    c = torch.tensor([0.7, -1.3], dtype=DT)
    G = SO2()
    m = 4000
    x = torch.randn(3, 2, dtype=DT, generator=seeded(0))
    lhs, rhs = equivariance_pairs(lambda v: v + c, x, G.sample(m, seeded(1)), G, V(G), V(G))
    e = (rhs.mean(0) - lhs.mean(0)).flatten(1).norm(dim=-1).mean()
    assert abs(float(e) - float(c.norm())) < 4 * float(c.norm()) / math.sqrt(m)


# ------------------------------------------------------------- REMUL and augmentation
def test_remul_objective_is_weighted_sum_of_tasks() -> None:
    G = SO3()
    net = mlp(3, 3, 6)
    x, y = torch.randn(5, 3, dtype=DT), torch.randn(5, 3, dtype=DT)
    out = remul_objective(
        net,
        x,
        y,
        F.mse_loss,
        G,
        V(G),
        V(G),
        alpha=0.7,
        beta=2.5,
        num_samples=3,
        generator=seeded(9),
    )
    task = F.mse_loss(net(x), y)
    equi = equivariance_loss(net, x, G, V(G), V(G), num_samples=3, generator=seeded(9))
    assert out.objective is not None
    torch.testing.assert_close(out.objective, task)
    torch.testing.assert_close(out.equivariance, equi)
    torch.testing.assert_close(out.total, 0.7 * task + 2.5 * equi)
    labels = remul_objective(
        net,
        x,
        y,
        F.mse_loss,
        G,
        V(G),
        V(G),
        alpha=1.0,
        beta=1.0,
        num_samples=3,
        generator=seeded(9),
        equivariance_target="labels",
        norm="l1",
    )
    elements = G.sample(15, seeded(9)).reshape(3, 5, 3, 3)
    with torch.no_grad():
        ref = _naive(net, x, elements, V(G).act, V(G).act, "l1", y)
    torch.testing.assert_close(labels.equivariance.detach(), ref)
    weights = torch.tensor([0.3, 1.7], dtype=DT)
    tensor_w = remul_objective(
        net,
        x,
        y,
        F.mse_loss,
        G,
        V(G),
        V(G),
        alpha=weights[0],
        beta=weights[1],
        generator=seeded(1),
    )
    equi1 = equivariance_loss(net, x, G, V(G), V(G), generator=seeded(1))
    torch.testing.assert_close(tensor_w.total, 0.3 * task + 1.7 * equi1)


@pytest.mark.parametrize(
    ("group_name", "loss_name"),
    [("SO3-V", "mse"), ("SO3-V", "l1"), ("C4-image", "mse")],
    ids=["SO3-V-mse", "SO3-V-l1", "C4-image-mse"],
)
def test_augmentation_is_remul_with_alpha0_beta1(group_name: str, loss_name: str) -> None:
    task_loss = F.mse_loss if loss_name == "mse" else F.l1_loss
    if group_name == "SO3-V":
        G: Group = SO3()
        net: nn.Module = mlp(3, 3, 7)
        rep: Action = V(G)
        x, y = torch.randn(5, 3, dtype=DT), torch.randn(5, 3, dtype=DT)
    else:
        G = Cyclic(4)
        torch.manual_seed(8)
        net = nn.Conv2d(1, 1, 3, padding=1).to(DT)
        rep = image_action
        x, y = torch.randn(4, 1, 5, 5, dtype=DT), torch.randn(4, 1, 5, 5, dtype=DT)
    aug = augmentation_loss(net, x, y, task_loss, G, rep, rep, num_samples=2, generator=seeded(4))
    remul = remul_objective(
        net,
        x,
        y,
        task_loss,
        G,
        rep,
        rep,
        alpha=0.0,
        beta=1.0,
        num_samples=2,
        generator=seeded(4),
        equivariance_target="labels",
        norm=task_loss,
    )
    assert remul.objective is None
    torch.testing.assert_close(aug, remul.total, rtol=0, atol=0)
    # The reference: plain data augmentation, the task loss on a transformed copy of the data.
    b = x.shape[0]
    elements = G.sample(2 * b, seeded(4)).reshape(2, b, G.n, G.n)
    act = _action(rep)
    gx = torch.cat([act(elements[j, i], x[i : i + 1]) for j in range(2) for i in range(b)])
    gy = torch.cat([act(elements[j, i], y[i : i + 1]) for j in range(2) for i in range(b)])
    torch.testing.assert_close(aug, task_loss(net(gx), gy), rtol=1e-12, atol=1e-12)
    if loss_name == "mse":
        # With the task loss an MSE, REMUL's own l2 norm gives the same objective up to the
        # number of output entries per data point.
        l2 = remul_objective(
            net,
            x,
            y,
            task_loss,
            G,
            rep,
            rep,
            alpha=0.0,
            beta=1.0,
            num_samples=2,
            generator=seeded(4),
            equivariance_target="labels",
        )
        torch.testing.assert_close(l2.total, aug * y[0].numel(), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------- GradNorm
def _task_losses(weight: Tensor, x: Tensor, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
    pred = x @ weight.T
    return (pred - y1).square().mean(), (pred - y2).square().mean()


def _task_grads(weight: Tensor, x: Tensor, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
    # d/dW mean((x W^T - y)^2) = 2/N (x W^T - y)^T x
    pred = x @ weight.T
    n = x.shape[0]
    return 2 / n * (pred - y1).T @ x, 2 / n * (pred - y2).T @ x


def _hand_gradnorm_step(
    w: Tensor, losses: Tensor, l0: Tensor, norms: Tensor, gamma: float, lr: float
) -> tuple[Tensor, Tensor]:
    """Algorithm 1 of 001 written out for two tasks, then Chen et al.'s renormalisation."""
    g_obj, g_equi = w[0] * norms[0], w[1] * norms[1]  # lines 2-3
    l_obj, l_equi = losses[0] / l0[0], losses[1] / l0[1]  # lines 2-3
    g_bar, r = (g_obj + g_equi) / 2, (l_obj + l_equi) / 2  # line 4
    r_alpha, r_beta = l_obj / r, l_equi / r  # line 5
    t_alpha, t_beta = g_bar * r_alpha**gamma, g_bar * r_beta**gamma
    lg = (g_obj - t_alpha).abs() + (g_equi - t_beta).abs()  # line 6
    grad = torch.stack(
        [torch.sign(g_obj - t_alpha) * norms[0], torch.sign(g_equi - t_beta) * norms[1]]
    )
    new = w - lr * grad  # lines 7-8
    return new * 2 / new.sum(), lg


def test_gradnorm_two_steps_match_hand_computation() -> None:
    gen = seeded(0)
    x = torch.randn(6, 2, dtype=DT, generator=gen)
    y1 = torch.randn(6, 1, dtype=DT, generator=gen)
    y2 = 3 * torch.randn(6, 1, dtype=DT, generator=gen)
    w0 = torch.tensor([[0.4, -0.2]], dtype=DT)
    gamma, lr = 1.5, 0.05
    layer = nn.Linear(2, 1, bias=False).to(DT)
    balance = GradNorm(2, lr=lr, asymmetry=gamma).to(DT)
    weights = torch.ones(2, dtype=DT)

    for weight_value in (w0, w0 + torch.tensor([[0.3, 0.5]], dtype=DT)):
        with torch.no_grad():
            layer.weight.copy_(weight_value)
        losses = torch.stack(_task_losses(layer.weight, x, y1, y2))
        grads = _task_grads(weight_value, x, y1, y2)
        norms = torch.stack([grads[0].norm(), grads[1].norm()])
        if torch.isnan(balance.initial_losses).all():
            l0 = losses.detach().clone()
        expected, lg = _hand_gradnorm_step(weights, losses.detach(), l0, norms, gamma, lr)
        torch.testing.assert_close(balance.loss(losses, [layer.weight]), lg)
        total = balance.weighted_loss(losses)
        new = balance.step(losses, layer)
        torch.testing.assert_close(balance.initial_losses, l0)
        torch.testing.assert_close(new, expected)
        torch.testing.assert_close(balance.weights.detach(), expected)
        assert float(new.sum()) == pytest.approx(2.0, abs=1e-12)
        # The network's gradient uses the weights from before the update.
        total.backward()
        assert layer.weight.grad is not None
        torch.testing.assert_close(layer.weight.grad, weights[0] * grads[0] + weights[1] * grads[1])
        layer.weight.grad = None
        weights = expected
    assert not torch.allclose(weights, torch.ones(2, dtype=DT))


def test_gradnorm_adam_first_step_and_clamp() -> None:
    gen = seeded(1)
    x = torch.randn(5, 2, dtype=DT, generator=gen)
    y1, y2 = torch.randn(5, 1, dtype=DT, generator=gen), torch.randn(5, 1, dtype=DT, generator=gen)
    weight = torch.tensor([[0.1, 0.9]], dtype=DT, requires_grad=True)
    losses = torch.stack(_task_losses(weight, x, y1, y2))
    grads = _task_grads(weight.detach(), x, y1, y2)
    norms = torch.stack([grads[0].norm(), grads[1].norm()])
    g = torch.tensor([1.0, 3.0], dtype=DT) * norms
    sign = torch.sign(g - g.mean())
    # Adam's first step moves each weight by lr * grad / (|grad| + eps).
    adam = GradNorm(2, lr=0.2, optimizer="adam", initial_weights=[1.0, 3.0]).to(DT)
    new = adam.step(losses, [weight])
    grad = sign * norms
    moved = torch.tensor([1.0, 3.0], dtype=DT) - 0.2 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(new, moved * 4 / moved.sum())
    # A step past zero is clamped at min_weight before renormalising to the initial sum.
    sgd = GradNorm(2, lr=50.0, min_weight=0.01, initial_weights=[1.0, 3.0]).to(DT)
    new = sgd.step(losses, [weight])
    raw = torch.tensor([1.0, 3.0], dtype=DT) - 50.0 * grad
    clamped = raw.clamp(min=0.01)
    assert float(raw.min()) < 0.01
    torch.testing.assert_close(new, clamped * 4 / clamped.sum())


# ------------------------------------------------------------------------- bad input
def _setup() -> tuple[nn.Module, Group, Tensor, Tensor]:
    G = SO3()
    return mlp(3, 3, 0), G, torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)


BAD_LOSS_CALLS: dict[str, tuple[dict[str, object], type[Exception], str]] = {
    "norm-l3": ({"norm": "l3"}, ValueError, "norm"),
    "norm-int": ({"norm": 3}, TypeError, "norm"),
    "num_samples-0": ({"num_samples": 0}, ValueError, "num_samples"),
    "num_samples-neg": ({"num_samples": -2}, ValueError, "num_samples"),
    "num_samples-float": ({"num_samples": 1.5}, ValueError, "num_samples"),
    "reduction": ({"reduction": "max"}, ValueError, "reduction"),
    "callable-norm-with-sum": ({"norm": F.mse_loss, "reduction": "sum"}, ValueError, "reduction"),
    "generator-type": ({"generator": 3}, TypeError, "generator"),
    "y-trailing-dim": ({"y": torch.randn(4, 2)}, ValueError, "y"),
    "elements-and-generator": (
        {"elements": torch.eye(3, dtype=DT)[None], "generator": torch.Generator()},
        ValueError,
        "elements",
    ),
    "elements-shape": ({"elements": torch.eye(2, dtype=DT)[None]}, ValueError, "elements"),
}


@pytest.mark.parametrize("name", list(BAD_LOSS_CALLS), ids=list(BAD_LOSS_CALLS))
def test_equivariance_loss_rejects_bad_input(name: str) -> None:
    net, G, x, _ = _setup()
    kwargs, error, match = BAD_LOSS_CALLS[name]
    with pytest.raises(error, match=match):
        equivariance_loss(net, x, G, V(G), V(G), **kwargs)  # type: ignore[arg-type]


def test_bad_positional_arguments() -> None:
    net, G, x, y = _setup()
    with pytest.raises(ValueError, match="x must have shape"):
        equivariance_loss(net, torch.randn(4, 2, dtype=DT), G, V(G), V(G))
    with pytest.raises(ValueError, match="x must have shape"):
        remul_objective(net, torch.randn(4, 2), y, F.mse_loss, G, V(G), V(G), alpha=1, beta=1)
    with pytest.raises(ValueError, match="rep_in"):
        equivariance_loss(net, x, G, V(SO2()), V(G))
    with pytest.raises(TypeError, match="group"):
        equivariance_loss(net, x, "SO3", V(G), V(G))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rep_out"):
        equivariance_loss(net, x, G, V(G), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        equivariance_pairs(net, x, G.sample(2), G, V(G), V(G), y=y, fx=net(x))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1, "beta": 1.0}, "alpha"),
        ({"alpha": 1.0, "beta": -1.0}, "beta"),
        ({"alpha": 1.0, "beta": torch.tensor(-2.0)}, "beta"),
        ({"alpha": math.nan, "beta": 1.0}, "alpha"),
    ],
    ids=["alpha-negative", "beta-negative", "beta-tensor-negative", "alpha-nan"],
)
def test_remul_rejects_negative_weights(kwargs: dict[str, object], name: str) -> None:
    net, G, x, y = _setup()
    with pytest.raises(ValueError, match=name):
        remul_objective(net, x, y, F.mse_loss, G, V(G), V(G), **kwargs)  # type: ignore[arg-type]


def test_remul_rejects_bad_options() -> None:
    net, G, x, y = _setup()
    with pytest.raises(ValueError, match="equivariance_target"):
        remul_objective(
            net, x, y, F.mse_loss, G, V(G), V(G), alpha=1, beta=1, equivariance_target="foo"
        )
    with pytest.raises(ValueError, match="reduction"):
        remul_objective(net, x, y, F.mse_loss, G, V(G), V(G), alpha=1, beta=1, reduction="none")
    with pytest.raises(ValueError, match="y must"):
        remul_objective(net, x, y[:2], F.mse_loss, G, V(G), V(G), alpha=1, beta=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_tasks": 0, "lr": 0.1}, "num_tasks"),
        ({"lr": 0.0}, "lr"),
        ({"lr": 0.1, "asymmetry": -1.0}, "asymmetry"),
        ({"lr": 0.1, "optimizer": "rmsprop"}, "optimizer"),
        ({"lr": 0.1, "initial_weights": [1.0, -1.0]}, "initial_weights"),
        ({"lr": 0.1, "initial_weights": [1.0]}, "initial_weights"),
        ({"lr": 0.1, "min_weight": -1.0}, "min_weight"),
    ],
    ids=["num_tasks", "lr", "asymmetry", "optimizer", "weights-negative", "weights-count", "min"],
)
def test_gradnorm_rejects_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradNorm(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": True}, r"lr must be a number, got bool"),
        ({"lr": "0.1"}, r"lr must be a number, got str"),
        ({"lr": 0.1, "asymmetry": False}, r"asymmetry must be a number, got bool"),
        ({"lr": 0.1, "min_weight": True}, r"min_weight must be a number, got bool"),
        ({"lr": 0.1, "min_weight": None}, r"min_weight must be a number, got NoneType"),
    ],
    ids=["lr-bool", "lr-str", "asymmetry-bool", "min-bool", "min-none"],
)
def test_gradnorm_rejects_options_that_are_not_numbers(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        GradNorm(2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": math.inf}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"lr": 0.1, "asymmetry": math.nan}, "asymmetry"),
        ({"lr": 0.1, "min_weight": math.inf}, "min_weight"),
    ],
    ids=["lr-inf", "lr-nan", "asymmetry-nan", "min-inf"],
)
def test_gradnorm_rejects_non_finite_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradNorm(2, **kwargs)  # type: ignore[arg-type]


def test_gradnorm_rejects_bad_losses() -> None:
    weight = torch.tensor([[0.5, 0.5]], dtype=DT, requires_grad=True)
    x = torch.randn(3, 2, dtype=DT, generator=seeded(0))
    balance = GradNorm(2, lr=0.1).to(DT)
    good = (x @ weight.T).square().mean()
    with pytest.raises(ValueError, match="losses"):
        balance.step([good, good, good], [weight])
    with pytest.raises(ValueError, match="L\\(0\\)"):
        balance.step([good, 0 * good], [weight])
    with pytest.raises(ValueError, match="shared_parameters"):
        balance.step([good, good], [])
    with pytest.raises(TypeError, match="losses"):
        balance.step([1.0, 2.0], [weight])  # type: ignore[list-item]


# ------------------------------------------------------------------------------ device
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    G = SO3()
    net = mlp(3, 3, 0)
    x, y = torch.randn(6, 3, dtype=DT), torch.randn(6, 3, dtype=DT)
    cpu = remul_objective(
        net,
        x,
        y,
        F.mse_loss,
        G,
        V(G),
        V(G),
        alpha=1.0,
        beta=0.5,
        num_samples=3,
        generator=seeded(2),
    )
    net_cuda = net.to("cuda")
    gpu = remul_objective(
        net_cuda,
        x.cuda(),
        y.cuda(),
        F.mse_loss,
        G,
        V(G),
        V(G),
        alpha=1.0,
        beta=0.5,
        num_samples=3,
        generator=seeded(2),
    )
    assert gpu.total.device.type == "cuda"
    torch.testing.assert_close(gpu.total.cpu(), cpu.total, rtol=1e-10, atol=1e-12)
    gpu_gen = torch.Generator(device="cuda").manual_seed(0)
    loss = equivariance_loss(net_cuda, x.cuda(), G, V(G), V(G), generator=gpu_gen)
    assert loss.device.type == "cuda" and math.isfinite(float(loss.detach()))
