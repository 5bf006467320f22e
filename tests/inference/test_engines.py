import math
import os

import pyro
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import symprior
from symprior.groups import SO2, Scalar, V
from symprior.inference import MAP, SVI, DivergenceError, NoEvidenceError, Posterior
from symprior.inference import _posterior as posterior_module
from symprior.models import Gaussian, SymmetryModel
from symprior.nn import RPPMLP, RPPLinear, equivariance_levels
from symprior.priors import EquivariantPrior, ResidualPrior
from tests.conftest import DEVICES
from tests.inference.linear_gaussian import S_EQ, closed_form, make


def _mlp_model(seed=0):
    torch.manual_seed(seed)
    net = RPPMLP(V(SO2()), V(SO2()), 3 * V(SO2()) + 2 * Scalar(SO2()), 1).double()
    return SymmetryModel(net, Gaussian(0.2))


def _mlp_data(n=24, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x, 1.5 * x + 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def test_map_equals_the_closed_form_posterior_mode():
    model, x, y = make()
    _, mean, _, _, _, _, _ = closed_form(model, x, y)
    post = MAP(num_epochs=10, lr=1.0, optimizer="lbfgs", progress=False).fit(model, (x, y))
    assert torch.allclose(post.loc(), mean, rtol=1e-6, atol=1e-9)
    # the network holds the mode afterwards
    assert torch.allclose(model.network.residual.detach().reshape(-1), mean[:4], rtol=1e-6)


def _decay(steps):
    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.02, 1 - s / steps))


def test_full_rank_svi_recovers_mean_and_covariance():
    model, x, y = make(s_res=0.2)
    _, mean, cov, _, _, _, _ = closed_form(model, x, y, s_res=0.2)
    engine = SVI(
        "fullrank",
        num_epochs=1000,
        lr=0.05,
        scheduler=_decay(1000),
        num_particles=2,
        init_scale=0.05,
        progress=False,
    )
    post = engine.fit(model, (x, y))
    sd = cov.diagonal().sqrt()
    # Monte-Carlo error of the ELBO gradients, averaged by the decaying step size: the means
    # within 0.2 posterior sd, variances within 25%, correlations within 0.15
    assert float(((post.loc() - mean).abs() / sd).max()) < 0.2
    block_cov = post.covariance()
    assert torch.allclose(block_cov.diagonal(), cov.diagonal(), rtol=0.25)
    corr = block_cov / torch.outer(block_cov.diagonal().sqrt(), block_cov.diagonal().sqrt())
    true_corr = cov / torch.outer(sd, sd)
    assert float((corr - true_corr).abs().max()) < 0.15


def test_mean_field_svi_recovers_the_means():
    model, x, y = make(s_res=0.2)
    _, mean, cov, _, _, _, _ = closed_form(model, x, y, s_res=0.2)
    engine = SVI("normal", num_epochs=1000, lr=0.05, scheduler=_decay(1000), progress=False)
    post = engine.fit(model, (x, y))
    sd = cov.diagonal().sqrt()
    # mean-field recovers the means of a Gaussian posterior and underestimates its variances
    assert float(((post.loc() - mean).abs() / sd).max()) < 0.25
    assert bool((post.covariance().diagonal() <= cov.diagonal() * 1.3).all())


@pytest.mark.parametrize("guide", ["delta", "normal", "lowrank", "fullrank"])
def test_svi_guides_produce_their_block_kind(guide):
    model, x, y = make()
    post = SVI(guide, num_epochs=5, progress=False).fit(model, (x, y))
    kind = {"delta": "delta", "normal": "diagonal", "lowrank": "lowrank", "fullrank": "full"}[guide]
    assert [b.kind for b in post.blocks] == [kind]
    draws = post.sample(4, torch.Generator().manual_seed(0))
    assert set(draws) == {"residual", "bias_residual", "coeffs", "bias_coeffs"}


@pytest.mark.parametrize("shared", [True, False], ids=["shared-scale", "per-parameter-scales"])
@pytest.mark.parametrize("guide", ["delta", "normal", "lowrank", "fullrank"])
def test_direct_elbo_equals_pyro_trace_elbo_draw_for_draw(guide, shared, monkeypatch):
    """The SVI objective computed from the guide's distribution (no tracing) is Pyro's
    Trace_ELBO: same random draws, same losses and same optimised guide, step for step, on a
    model with a random (positive) residual scale, shared or one per residual, and random noise
    (log-Jacobian terms)."""

    def run():
        torch.manual_seed(0)
        net = RPPMLP(V(SO2()), V(SO2()), 2 * V(SO2()) + 2 * Scalar(SO2()), 1).double()
        model = SymmetryModel(
            net,
            Gaussian(pyro.distributions.LogNormal(0.0, 1.0)),
            priors={"*": ResidualPrior(pyro.distributions.HalfNormal(0.5), shared=shared)},
        )
        x, y = _mlp_data(n=16)
        engine = SVI(guide, num_epochs=3, batch_size=8, lr=0.02, num_particles=2, progress=False)
        post = engine.fit(model, (x, y))
        return post, engine.losses

    from symprior.inference import _svi

    fused_draws = []
    apply = _svi._MeanFieldDraw.apply

    def counted(*args):
        fused_draws.append(1)
        return apply(*args)

    # The mean-field guide's draws go through the fused draw (Pyro's softplus scale transform).
    monkeypatch.setattr(_svi._MeanFieldDraw, "apply", counted)
    direct, direct_losses = run()
    assert bool(fused_draws) == (guide == "normal")
    monkeypatch.setattr(SymmetryModel, "fast_log_joint_supported", lambda self: False)
    traced, traced_losses = run()
    relaxations = [f"layers.{i}.{p}" for i in range(2) for p in ("residual", "bias_residual")]
    scales = ["residual_scale"] if shared else [f"{r}:residual_scale" for r in relaxations]
    assert set(direct.mean()) == {"noise_scale", *scales, *relaxations}
    assert torch.allclose(torch.tensor(direct_losses), torch.tensor(traced_losses), rtol=1e-10)
    assert torch.allclose(direct.loc(), traced.loc(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(direct.covariance(), traced.covariance(), rtol=1e-9, atol=1e-14)


def _interrupting(model, after_calls):
    """The network raises KeyboardInterrupt on its call number ``after_calls + 1``."""
    calls = {"n": 0}
    net = model.network
    original = net.forward

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    net.forward = forward
    return model


@pytest.mark.parametrize("engine", ["map", "svi"])
@pytest.mark.parametrize("data_kind", ["tensors", "loader"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, engine, data_kind):
    x, y = _mlp_data(n=24)

    def data():
        if data_kind == "tensors":
            return (x, y)
        return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)

    def make_engine(**kw):
        batch = {"batch_size": 8} if data_kind == "tensors" else {}
        common = dict(num_epochs=4, lr=0.02, progress=False, seed=3, **batch, **kw)
        return MAP(**common) if engine == "map" else SVI("normal", **common)

    torch.manual_seed(123)
    full = make_engine().fit(_mlp_model(), data())
    ckpt = tmp_path / "run"
    interrupted = _interrupting(_mlp_model(), after_calls=8)
    torch.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        make_engine(checkpoint_dir=ckpt, checkpoint_every=2).fit(interrupted, data())
    assert (ckpt / "checkpoint.pt").exists()
    torch.manual_seed(123)
    resumed = make_engine(checkpoint_dir=ckpt, checkpoint_every=2).fit(
        _mlp_model(), data(), resume=True
    )
    assert torch.equal(resumed.loc(), full.loc())
    for name, value in full.point.items():
        assert torch.equal(resumed.point[name], value), name


def test_checkpoint_is_never_half_written(tmp_path, monkeypatch):
    x, y = _mlp_data()
    ckpt = tmp_path / "run"
    MAP(num_epochs=2, progress=False, checkpoint_dir=ckpt, checkpoint_every=1).fit(
        _mlp_model(), (x, y)
    )
    good = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        MAP(num_epochs=4, progress=False, checkpoint_dir=ckpt, checkpoint_every=1).fit(
            _mlp_model(), (x, y)
        )
    monkeypatch.setattr(torch, "save", real_save)
    after = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    assert after["step"] == good["step"]
    assert os.listdir(ckpt) == ["checkpoint.pt"]  # no temporary file left behind


def test_nan_in_data_is_a_clear_error():
    x, y = _mlp_data()
    y[5, 1] = float("nan")
    with pytest.raises(ValueError, match=r"y contains NaN or inf \(first at index 5\)"):
        MAP(num_epochs=1, progress=False).fit(_mlp_model(), (x, y))


def test_diverging_step_stops_with_the_last_finite_parameters():
    model = _mlp_model()
    x, y = _mlp_data()
    calls = {"n": 0}
    original = model.network.forward

    def forward(inp):
        calls["n"] += 1
        out = original(inp)
        return out * float("nan") if calls["n"] > 4 else out  # the 4th training step diverges

    model.network.forward = forward
    with pytest.raises(DivergenceError, match=r"^MAP: step 3 produced a non-finite") as info:
        MAP(num_epochs=10, progress=False).fit(model, (x, y))
    post = info.value.posterior
    assert info.value.step == 3
    assert post is not None and bool(torch.isfinite(post.loc()).all())
    assert all(bool(torch.isfinite(v).all()) for v in post.point.values())


def test_posterior_save_load_round_trip(tmp_path):
    model, x, y = make()
    post = SVI("fullrank", num_epochs=20, progress=False).fit(model, (x, y))
    path = tmp_path / "posterior.pt"
    post.save(path)
    loaded = Posterior.load(path, model=model)
    a = post.sample(5, torch.Generator().manual_seed(4))
    b = loaded.sample(5, torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(post.mean()[k], loaded.mean()[k]) for k in a)
    assert torch.equal(
        post.predict(x, 8, torch.Generator().manual_seed(0)),
        loaded.predict(x, 8, torch.Generator().manual_seed(0)),
    )
    # the file holds plain data only: it loads with weights_only and has no pickled classes
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "symprior.posterior/1"
    with pytest.raises(RuntimeError, match="no model attached"):
        Posterior.load(path).predict(x)
    for call in (lambda: post.sample(3, 5), lambda: post.predict(x, 3, 5)):
        with pytest.raises(
            TypeError, match=r"generator must be a torch\.Generator or None, got int"
        ):
            call()


def test_posteriors_saved_with_old_per_parameter_site_names_still_load(tmp_path):
    """Files written when per-parameter scale sites were "<parameter>.residual_scale" load with
    the current "<parameter>:residual_scale" names and the same values."""
    x, y = _mlp_data()
    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), V(SO2()), 3 * V(SO2()) + 2 * Scalar(SO2()), 1).double()
    prior = ResidualPrior(pyro.distributions.HalfNormal(1.0), shared=False)
    model = SymmetryModel(net, Gaussian(0.2), priors={"*residual": prior})
    post = SVI("normal", num_epochs=3, progress=False).fit(model, (x, y))
    state = post.state()

    def old(name):
        return name.replace(":", ".")

    for site in state["sites"]:
        site["name"] = old(site["name"])
    for block in state["blocks"]:
        block["names"] = [old(n) for n in block["names"]]
    assert "layers.0.residual.residual_scale" in [s["name"] for s in state["sites"]]
    path = tmp_path / "old.pt"
    torch.save(state, path)
    for loaded in (Posterior.load(path), Posterior.load(path, model=model)):
        assert loaded.site_names == post.site_names
        assert all(torch.equal(v, loaded.mean()[k]) for k, v in post.mean().items())


def test_loading_a_file_that_is_no_posterior_is_a_clear_error(tmp_path):
    garbage, other, truncated = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    garbage.write_bytes(b"not a torch file")
    torch.save([1, 2], other)
    model, x, y = make()
    post = MAP(num_epochs=1, progress=False).fit(model, (x, y))
    post.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    for path in (garbage, other, truncated):
        with pytest.raises(ValueError, match=r"is not a symprior posterior file"):
            Posterior.load(path)
    with pytest.raises(FileNotFoundError):
        Posterior.load(tmp_path / "missing.pt")


def test_point_posterior_views_match_the_network():
    model, x, y = make()
    post = MAP(num_epochs=5, lr=1.0, optimizer="lbfgs", progress=False).fit(model, (x, y))
    with torch.no_grad():
        assert torch.allclose(post.predict(x), model.network(x), atol=1e-12)
    levels = post.equivariance_levels()
    net_levels = equivariance_levels(model.network)
    assert set(levels) == set(net_levels)
    for k in levels:
        assert torch.allclose(levels[k][0], net_levels[k].detach(), atol=1e-12)
    with pytest.raises(NoEvidenceError, match="'map' engine gives no log evidence"):
        post.log_evidence()


def test_gaussian_posterior_levels_spread_with_the_posterior():
    model, x, y = make()
    post = SVI("normal", num_epochs=200, lr=0.02, progress=False).fit(model, (x, y))
    levels = post.equivariance_levels(50, torch.Generator().manual_seed(0))
    assert levels["RPPLinear"].shape == (50,)
    assert float(levels["RPPLinear"].std()) > 0


def test_positive_latent_sites_are_optimised_in_log_space():
    import pyro.distributions as dist

    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), V(SO2()), 2 * V(SO2()) + Scalar(SO2()), 1).double()
    model = SymmetryModel(net, Gaussian(dist.LogNormal(0.0, 1.0)))
    x, y = _mlp_data()
    post = MAP(num_epochs=200, lr=0.05, progress=False).fit(model, (x, y))
    site = {s.name: s for s in post.sites}["noise_scale"]
    assert site.constraint == "positive"
    assert float(post.mean()["noise_scale"]) > 0


def test_fit_front_door():
    x, y = _mlp_data()
    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), V(SO2()), 2 * V(SO2()) + Scalar(SO2()), 1).double()
    post = symprior.fit(net, (x, y), Gaussian(0.2), engine="map", num_epochs=3, progress=False)
    assert post.engine == "map"
    with pytest.raises(ValueError, match="needs likelihood"):
        symprior.fit(net, (x, y))
    with pytest.raises(ValueError, match="engine must be one of"):
        symprior.fit(net, (x, y), Gaussian(0.2), engine="nuts")
    with pytest.raises(TypeError, match="training options are"):
        MAP(epochs=3)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        MAP(lr=-1.0)
    with pytest.raises(ValueError, match="guide must be one of"):
        SVI("laplace")
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        MAP(checkpoint_every=3)
    with pytest.raises(TypeError, match="data must be"):
        MAP(num_epochs=1, progress=False).fit(_mlp_model(), [1, 2, 3])


@pytest.mark.parametrize("device", DEVICES)
def test_engines_run_on_the_requested_device(device):
    model, x, y = make()
    post = MAP(num_epochs=3, progress=False, device=device).fit(model, (x, y))
    assert next(model.network.parameters()).device.type == device
    assert post.loc().device.type == device
    if device == "cuda":
        cpu_model, _, _ = make()
        cpu = MAP(num_epochs=3, progress=False).fit(cpu_model, (x, y))
        assert torch.allclose(post.loc().cpu(), cpu.loc(), atol=1e-8)


def test_the_global_rng_and_param_store_are_left_alone():
    model, x, y = make()
    pyro.clear_param_store()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    SVI("normal", num_epochs=3, progress=False).fit(model, (x, y))
    assert torch.equal(torch.get_rng_state(), before)
    assert list(pyro.get_param_store().keys()) == []
    assert math.isfinite(1.0) and posterior_module.FORMAT.startswith("symprior")


def _gradnorm_fit(dtype):
    from torch import nn

    from symprior.models import SymmetryLikelihood
    from symprior.nn import GradNorm

    torch.manual_seed(0)
    G = SO2()
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)
    model = SymmetryModel(net, [Gaussian(0.1), SymmetryLikelihood(G, V(G), Scalar(G), beta=10.0)])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=gen, dtype=torch.float64).to(dtype)
    y = (x**2).sum(-1, keepdim=True)
    balance = GradNorm(2, lr=0.01)
    post = MAP(num_epochs=20, lr=0.01, progress=False, gradnorm=balance).fit(model, (x, y))
    return post, balance


def test_map_with_gradnorm_runs_in_float32_as_in_float64():
    # GradNorm steps its weights in place after the loss has used them: the loss must use a
    # copy (without one, float32 failed in backward).
    post64, _ = _gradnorm_fit(torch.float64)
    post32, _ = _gradnorm_fit(torch.float32)
    for key in ("gradnorm.obs", "gradnorm.symmetry"):
        assert post32.info[key] == pytest.approx(post64.info[key], rel=1e-3)
    losses32, losses64 = post32.info["losses"], post64.info["losses"]
    assert losses32 == pytest.approx(losses64, rel=1e-3)


def test_map_balances_task_and_symmetry_likelihoods_with_gradnorm():
    from symprior.nn import GradNorm

    post, balance = _gradnorm_fit(torch.float64)
    w_task, w_sym = post.info["gradnorm.obs"], post.info["gradnorm.symmetry"]
    # GradNorm keeps the weights summing to the number of tasks and moves them off (1, 1)
    assert w_task + w_sym == pytest.approx(2.0, rel=1e-6)
    assert abs(w_task - 1.0) > 1e-4
    assert torch.equal(
        balance.weights.detach().cpu(), torch.tensor([w_task, w_sym]).to(balance.weights.dtype)
    )
    with pytest.raises(ValueError, match="gradnorm weighs 2 tasks but gradnorm_sites names 1"):
        MAP(gradnorm=GradNorm(2, lr=0.01), gradnorm_sites=("obs",))


def test_predictions_use_eval_mode_and_restore_the_training_mode():
    from symprior.models import Categorical
    from symprior.models.zoo import soft_se2_cnn

    torch.manual_seed(0)
    net = soft_se2_cnn(channels=(2,), num_rotations=4, radius=1.5, soft="rotation").double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 7, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (6,), generator=gen)
    model = SymmetryModel(net, Categorical())
    post = MAP(num_epochs=2, progress=False).fit(model, (x, y))
    net.train()
    first = post.predict(x)
    second = post.predict(x)
    assert torch.equal(first, second)  # no random rotation grid in predictions
    with torch.no_grad():
        expected = torch.softmax(net.eval()(x), -1)
    assert torch.allclose(first, expected, atol=1e-12)
    net.train()
    post.predict(x)
    assert net.training


def test_fused_adam_steps_equal_the_default_adam_and_fall_back_where_missing(monkeypatch):
    # The engines use torch's fused Adam kernel: the same update as the default implementation
    # (float64: equal to round-off), and the default where a torch has no fused kernel.
    from symprior.inference import _engine

    torch.manual_seed(0)
    params = [torch.randn(5, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    fused = [p.clone().requires_grad_(True) for p in params]
    plain = [p.clone().requires_grad_(True) for p in params]
    opt_fused = _engine._adam(fused, 0.05)
    assert opt_fused.defaults["fused"] is True
    opt_plain = torch.optim.Adam(plain, lr=0.05)
    for step in range(20):
        for group, opt in ((fused, opt_fused), (plain, opt_plain)):
            opt.zero_grad()
            loss = sum(((p - step / 10) ** 4).sum() for p in group)
            loss.backward()
            opt.step()
    for a, b in zip(fused, plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)

    original = torch.optim.Adam

    def no_fused(tensors, lr, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return original(tensors, lr=lr, **kw)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    fallback = _engine._adam([torch.zeros(2, requires_grad=True)], 0.1)
    assert not fallback.defaults.get("fused")


def test_mean_field_draw_has_the_values_and_gradients_of_its_separate_operations():
    from symprior.inference._svi import _MeanFieldDraw

    gen = torch.Generator().manual_seed(3)
    f64 = torch.float64
    locs = [torch.randn(shape, dtype=f64, generator=gen) for shape in ((6,), (2, 3))]
    # raw above softplus's threshold (20) too, where softplus is the identity
    raws = [
        torch.tensor([-3.0, -0.5, 0.0, 1.5, 19.0, 25.0], dtype=f64),
        torch.randn(2, 3, dtype=f64, generator=gen),
    ]
    noise = [torch.randn(v.shape, dtype=f64, generator=gen) for v in locs]
    params = [t.requires_grad_(True) for t in (*locs, *raws)]
    *draws, log_q = _MeanFieldDraw.apply(2, *params, *noise)
    # the reference: Normal(loc, softplus(raw)).log_prob at the draw, summed over both sites
    scales = [torch.nn.functional.softplus(raw) for raw in raws]
    want = [loc + scale * eps for loc, scale, eps in zip(locs, scales, noise, strict=True)]
    want_log_q = sum(
        torch.distributions.Normal(loc, scale).log_prob(z).sum()
        for loc, scale, z in zip(locs, scales, want, strict=True)
    )
    for z, w in zip(draws, want, strict=True):
        assert torch.allclose(z, w, rtol=1e-15, atol=1e-15)  # addcmul may fuse
    assert torch.allclose(log_q, want_log_q, rtol=1e-14)
    probes = [torch.randn(v.shape, dtype=f64, generator=gen) for v in locs]

    def objective(zs, lq):
        return sum((z * p).sum() for z, p in zip(zs, probes, strict=True)) - 0.7 * lq

    got = torch.autograd.grad(objective(draws, log_q), params)
    expected = torch.autograd.grad(objective(want, want_log_q), params)
    for g, w in zip(got, expected, strict=True):
        assert torch.allclose(g, w, rtol=1e-14, atol=1e-15)
    assert torch.autograd.gradcheck(
        lambda *p: _MeanFieldDraw.apply(2, *p, *noise), tuple(params), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("engine", ["map", "svi", "laplace"])
def test_class_labels_outside_the_outputs_are_reported_before_fitting(engine):
    """Labels 1..3 for three logits (a classic off-by-one) are a clear error from every engine,
    checked once on all the data; a DataLoader's labels are left to the log-likelihood."""
    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), 3 * Scalar(SO2()), hidden=V(SO2()) + 2 * Scalar(SO2()), depth=1)
    x = torch.randn(32, 2)
    labels = torch.arange(32) % 3
    options = {"num_epochs": 1, "progress": False}
    likelihood = symprior.models.Categorical()
    symprior.fit(net, (x, labels), likelihood=likelihood, engine=engine, **options)
    for bad, low, high in ((labels + 1, 1, 3), (labels - 1, -1, 1)):
        with pytest.raises(
            ValueError, match=rf"labels from {low} to {high}, but the network has 3"
        ):
            symprior.fit(net, (x, bad), likelihood=likelihood, engine=engine, **options)


def test_lbfgs_run_checkpoints_and_resumes_to_the_uninterrupted_result(tmp_path):
    x, y = _mlp_data(n=24)

    def engine(**kw):
        return MAP(num_epochs=6, optimizer="lbfgs", lr=0.5, progress=False, **kw)

    full = engine().fit(_mlp_model(), (x, y))
    ckpt = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        engine(checkpoint_dir=ckpt, checkpoint_every=1).fit(
            _interrupting(_mlp_model(), after_calls=30), (x, y)
        )
    saved = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    assert 0 < saved["step"] < 6 and saved["engine"] == "map"
    resumed = engine(checkpoint_dir=ckpt, checkpoint_every=1).fit(_mlp_model(), (x, y), resume=True)
    assert torch.equal(resumed.loc(), full.loc())
    assert resumed.info["losses"] == full.info["losses"]


def _noise_model():
    import pyro.distributions as dist

    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), V(SO2()), 3 * V(SO2()) + 2 * Scalar(SO2()), 1).double()
    return SymmetryModel(net, Gaussian(dist.LogNormal(-2.0, 1.0)))


def test_divergence_restores_the_parameters_before_the_update_that_diverged():
    x, y = _mlp_data()
    y = y * 1e3
    seen, live = [], {}

    class Recording(MAP):
        def _run(self, objective, params, *args, **kwargs):
            live.update(params)

            def recorded(xb, yb):
                seen.append({n: t.detach().clone() for n, t in params.items()})
                return objective(xb, yb)

            return super()._run(recorded, params, *args, **kwargs)

    model = _noise_model()
    with pytest.raises(DivergenceError) as info:
        Recording(num_epochs=50, lr=1e4, progress=False).fit(model, (x, y))
    step = info.value.step
    # the loss of step k is computed at the parameters after update k - 1: restored are those
    # before that update, whose loss was finite
    assert step >= 1
    post = info.value.posterior
    assert post is not None
    before = seen[step - 1]
    assert torch.isfinite(-model.log_joint(post.mean(), x, y))
    for name, value in live.items():  # the optimised (unconstrained) tensors, restored
        assert torch.equal(value.detach(), before[name]), name


@pytest.mark.parametrize("engine", ["map", "svi", "laplace"])
def test_a_last_update_that_diverges_is_reported(engine):
    x, y = _mlp_data()
    options = {"newton_steps": 0} if engine == "laplace" else {}
    with pytest.raises(DivergenceError, match="step 0 produced a non-finite") as info:
        symprior.fit(
            _noise_model(),
            (x, y * 1e3),
            engine=engine,
            num_epochs=1,
            lr=1e4,
            progress=False,
            **options,
        )
    post = info.value.posterior
    assert post is not None and bool(torch.isfinite(post.loc()).all())


def test_laplace_does_not_resume_from_a_map_checkpoint(tmp_path):
    x, y = _mlp_data()
    options = dict(num_epochs=4, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2)
    symprior.fit(_noise_model(), (x, y), engine="map", **options)
    with pytest.raises(ValueError, match="belongs to another engine or model \\('map'"):
        symprior.fit(_noise_model(), (x, y), engine="laplace", resume=True, **options)


@pytest.mark.parametrize("shared", [True, False])
def test_predict_with_a_random_prior_scale_uses_the_network_parameters_only(shared):
    import pyro.distributions as dist

    x, y = _mlp_data()
    torch.manual_seed(0)
    net = RPPMLP(V(SO2()), V(SO2()), 3 * V(SO2()) + 2 * Scalar(SO2()), 1).double()
    prior = ResidualPrior(dist.HalfNormal(1.0), shared=shared)
    model = SymmetryModel(net, Gaussian(0.2), priors={"*residual": prior})
    post = MAP(num_epochs=3, progress=False).fit(model, (x, y))
    assert any("residual_scale" in name for name in post.mean())
    # MAP leaves its mode in the network: the point prediction is the network's output
    with torch.no_grad():
        assert torch.equal(post.predict(x[:5]), net.eval()(x[:5]))


# ----------------------------------------------- per-parameter random scales under SVI guides
SIGMA_H, S_BIAS, HYPER = 0.1, 0.5, 1.0


def _hierarchical_linear_gaussian():
    """The linear-Gaussian model with a HalfNormal(1) scale of its own on the residual (site
    "residual:residual_scale") and data whose residual is far from zero."""
    torch.manual_seed(0)
    layer = RPPLinear(V(SO2()), V(SO2())).double()
    model = SymmetryModel(
        layer,
        Gaussian(SIGMA_H),
        priors={
            "residual": ResidualPrior(pyro.distributions.HalfNormal(HYPER), shared=False),
            "bias_residual": ResidualPrior(S_BIAS),
        },
        weight_prior=EquivariantPrior(S_EQ),
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    w = torch.tensor([[1.0, 0.5], [0.7, 1.2]], dtype=torch.float64)
    y = x @ w.T + 0.2 + SIGMA_H * torch.randn(40, 2, generator=gen, dtype=torch.float64)
    return model, x, y


def _prior_variances(model, names, scales):
    """Prior variances of the flattened parameters (site order) for residual scales ``(G,)``."""
    params = dict(model.network.named_parameters())
    is_residual = torch.cat([torch.full((params[n].numel(),), n == "residual") for n in names])
    fixed = torch.cat(
        [
            torch.full((params[n].numel(),), (S_BIAS if n == "bias_residual" else S_EQ) ** 2)
            for n in names
        ]
    ).double()
    return torch.where(is_residual, scales[:, None] ** 2, fixed), is_residual


def test_svi_fits_per_parameter_random_scales_with_autonormal_and_autodelta():
    """A random residual scale of its own (site "residual:residual_scale", nested under no other
    site's name, so Pyro's AutoDelta and AutoNormal can hold it). AutoDelta finds the joint mode
    of the closed-form fixed point (the Gaussian posterior mean given the scale, and the scale
    maximising N(B; 0, s^2 I) HalfNormal(s; 1) given B), as MAP does; the mean-field normal's
    log scale matches the exact marginal posterior of log s, from the closed-form evidence
    p(y | s) on a grid, in mean and (underestimated, as mean-field does) spread."""
    site = "residual:residual_scale"
    model, x, y = _hierarchical_linear_gaussian()
    names, _, _, _, phi, _, target = closed_form(model, x, y, sigma=SIGMA_H)
    k = model.network.residual.numel()

    # joint mode: coordinate ascent over (parameters, s) from s = 1
    s = torch.ones(1, dtype=torch.float64)
    for _ in range(500):
        prior_var, is_residual = _prior_variances(model, names, s)
        precision = torch.diag(1 / prior_var[0]) + phi.T @ phi / SIGMA_H**2
        theta = torch.linalg.solve(precision, phi.T @ target / SIGMA_H**2)
        b2 = float(theta[is_residual].square().sum())
        # d/ds [-k log s - |B|^2 / (2 s^2) - s^2 / (2 h^2)] = 0, a quadratic in s^2
        s = s.new_tensor([math.sqrt((math.sqrt(k**2 + 4 * b2 / HYPER**2) - k) * HYPER**2 / 2)])
    delta = SVI("delta", num_epochs=10, lr=1.0, optimizer="lbfgs", progress=False)
    delta_post = delta.fit(model, (x, y))
    assert delta_post.site_names == [site, "residual", "bias_residual", "coeffs", "bias_coeffs"]
    assert float(delta_post.mean()[site]) == pytest.approx(float(s), rel=1e-6)
    mode = torch.cat([delta_post.mean()[n].reshape(-1) for n in names])
    assert torch.allclose(mode, theta, rtol=1e-6, atol=1e-8)
    map_model, _, _ = _hierarchical_linear_gaussian()
    map_post = MAP(num_epochs=10, lr=1.0, optimizer="lbfgs", progress=False).fit(map_model, (x, y))
    assert float(map_post.mean()[site]) == pytest.approx(float(s), rel=1e-6)

    # exact marginal posterior of u = log s: p(y | s) HalfNormal(s) s on a grid
    u = torch.linspace(-4.0, 2.0, 601, dtype=torch.float64)
    prior_var, _ = _prior_variances(model, names, u.exp())
    cov = (phi * prior_var[:, None, :]) @ phi.T + SIGMA_H**2 * torch.eye(len(target)).double()
    evidence = torch.distributions.MultivariateNormal(torch.zeros_like(target), cov)
    log_post = (
        evidence.log_prob(target)
        + pyro.distributions.HalfNormal(torch.tensor(HYPER).double()).log_prob(u.exp())
        + u
    )
    density = (log_post - log_post.max()).exp()
    density = density / torch.trapezoid(density, u)
    mean = torch.trapezoid(density * u, u)
    sd = torch.trapezoid(density * (u - mean) ** 2, u).sqrt()
    model, x, y = _hierarchical_linear_gaussian()
    normal = SVI(
        "normal", num_epochs=400, lr=0.05, scheduler=_decay(400), init_scale=0.05, progress=False
    )
    post = normal.fit(model, (x, y))
    (block,) = post.blocks
    assert post.site_names[0] == site
    # Monte-Carlo error and the mean-field bias: seeds 0-3 gave |z| < 0.2, sd ratios 0.77-0.86
    assert abs(float(block.loc[0] - mean) / float(sd)) < 0.4
    assert 0.6 < float(block.scale[0] / sd) < 1.05
    assert float(post.mean()[site]) == pytest.approx(math.exp(float(block.loc[0])), rel=1e-12)
