import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from symprior.cli import main
from symprior.inference import Posterior

TINY = """
[data]
name = "synthetic"
num_samples = 48
epsilon = {epsilon}
noise_std = 0.05

[model]
name = "rpp_mlp"
group = "SO2"
rep_in = "V"
rep_out = "Scalar"
hidden = "2V + 2Scalar"
depth = 1

[likelihood]
name = "gaussian"
scale = 0.1

[priors."*residual"]
name = "residual"
scale = 0.3

[engine]
name = "{engine}"
num_epochs = {epochs}
lr = 0.01
{engine_extra}

[run]
seed = 0
num_samples = 20
test_fraction = 0.25
"""


def _config(tmp_path: Path, name="cfg.toml", epsilon=0.5, engine="map", epochs=30, extra=""):
    path = tmp_path / name
    path.write_text(TINY.format(epsilon=epsilon, engine=engine, epochs=epochs, engine_extra=extra))
    return path


def test_fit_summarize_compare_end_to_end(tmp_path, capsys):
    runs = []
    for eps in (0.0, 0.8):
        cfg = _config(tmp_path, f"eps{eps}.toml", epsilon=eps, engine="map")
        out = tmp_path / f"run{eps}"
        assert main(["fit", str(cfg), "--output", str(out), "--quiet"]) == 0
        for name in (
            "config.toml",
            "config.json",
            "posterior.pt",
            "posterior.nc",
            "summary.csv",
            "levels.png",
            "result.json",
        ):
            assert (out / name).exists(), name
        assert (out / "checkpoints" / "checkpoint.pt").exists()
        runs.append(out)
    result = json.loads((runs[0] / "result.json").read_text())
    assert [row["layer"] for row in result["levels"]] == ["mlp.layers.0", "mlp.layers.1"]
    # the saved posterior reproduces the summary's levels
    post = Posterior.load(runs[0] / "posterior.pt")
    assert post.engine == "map"
    assert main(["summarize", str(runs[0])]) == 0
    out = capsys.readouterr().out
    assert "layers.0" in out and "94% HDI" in out
    assert main(["compare", *map(str, runs)]) == 0
    table = capsys.readouterr().out
    assert str(runs[0]) in table and str(runs[1]) in table


def test_a_finished_run_is_never_overwritten(tmp_path, capsys):
    cfg = _config(tmp_path, epochs=5)
    out = tmp_path / "run"
    assert main(["fit", str(cfg), "--output", str(out), "--quiet"]) == 0
    before = (out / "posterior.pt").read_bytes()
    assert main(["fit", str(cfg), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a finished run" in err[0]
    assert (out / "posterior.pt").read_bytes() == before


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    extra = "checkpoint_every = 1"
    cfg = _config(tmp_path, epochs=400, extra=extra)
    full = tmp_path / "full"
    assert main(["fit", str(cfg), "--output", str(full), "--quiet"]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "symprior.cli", "fit", str(cfg), "--output", str(killed), "--quiet"],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    ckpt = killed / "checkpoints" / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                step = torch.load(ckpt, weights_only=True)["step"]
            except Exception:
                step = 0
            if step >= 50:
                break
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed; raise num_epochs")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "posterior.pt").exists()
    assert main(["fit", str(killed), "--resume", "--quiet"]) == 0
    a = Posterior.load(full / "posterior.pt")
    b = Posterior.load(killed / "posterior.pt")
    assert torch.equal(a.loc(), b.loc())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[data]\nname='synthetic'\n[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n[enigne]\nname='map'\n",
            "unknown key 'enigne'",
        ),
        (
            "[data]\nname='synthetic'\nepsilonn=1\n[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n",
            "[data]: unknown key 'epsilonn'",
        ),
        (
            "[data]\nname='synthetic'\n[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n[engine]\nname='map'\nnum_epochs='ten'\n",
            "num_epochs must be an int",
        ),
        (
            "[data]\nname='synthetic'\n[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n[run]\nseed='zero'\n",
            "[run] seed must be int",
        ),
        (
            "[data]\nname='mnist'\n[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n",
            "[data] name 'mnist' is not one of",
        ),
        ("[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n", "missing table [data]"),
        ("[data\nname='synthetic'\n", "invalid TOML"),
        (
            "[data]\nname='synthetic'\n[model]\nname='rpp_mlp'\n[likelihood]\nname='gaussian'\n[priors.'*residual']\nname='residual'\nscale=-1\n",
            "scale must be > 0",
        ),
    ],
    ids=[
        "unknown-table",
        "unknown-data-key",
        "wrong-type",
        "wrong-run-type",
        "unknown-dataset",
        "missing-table",
        "bad-toml",
        "bad-prior",
    ],
)
def test_bad_configs_exit_2_with_one_clear_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["fit", str(path), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]


def test_missing_config_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_yaml_configs_read_like_toml(tmp_path):
    from symprior._config import load_config

    toml = _config(tmp_path, epochs=5)
    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text(
        "data: {name: synthetic, num_samples: 48, epsilon: 0.5, noise_std: 0.05}\n"
        "model: {name: rpp_mlp, group: SO2, rep_in: V, rep_out: Scalar, hidden: '2V + 2Scalar', depth: 1}\n"
        "likelihood: {name: gaussian, scale: 0.1}\n"
        "priors: {'*residual': {name: residual, scale: 0.3}}\n"
        "engine: {name: map, num_epochs: 5, lr: 0.01}\n"
        "run: {seed: 0, num_samples: 20, test_fraction: 0.25}\n"
    )
    assert load_config(yaml_path) == load_config(toml)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    from symprior._config import ConfigError

    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


@pytest.mark.parametrize("how", ["none", "scale", "center_scale"])
def test_standardize_rescales_inputs_by_training_statistics(tmp_path, how):
    from symprior._config import load_config
    from symprior._run import build

    path = _config(tmp_path, epochs=1)
    _, (raw_x, _), (raw_test, _) = build(load_config(path))
    path.write_text(path.read_text() + f'standardize = "{how}"\n')
    _, (x, _), (test_x, _) = build(load_config(path))
    train = raw_x.double()
    if how == "none":
        shift, scale = 0.0, 1.0
    elif how == "scale":  # the root mean square of the training inputs
        shift, scale = 0.0, math.sqrt(sum(v * v for v in train.flatten().tolist()) / train.numel())
    else:  # mean and (unbiased) standard deviation of every training entry
        values = train.flatten().tolist()
        shift = sum(values) / len(values)
        scale = math.sqrt(sum((v - shift) ** 2 for v in values) / (len(values) - 1))
    assert torch.allclose(x.double(), (train - shift) / scale, rtol=1e-6, atol=1e-6)
    # the held-out split uses the training statistics, not its own
    assert torch.allclose(
        test_x.double(), (raw_test.double() - shift) / scale, rtol=1e-6, atol=1e-6
    )
    if how != "none":
        assert x.double().square().mean().sqrt().item() == pytest.approx(
            1.0 if how == "scale" else math.sqrt(1 - 1 / x.numel()), rel=1e-5
        )


def test_scale_standardization_keeps_a_strict_model_equivariant(tmp_path):
    # One positive factor commutes with the group action: a strictly equivariant model on
    # rescaled inputs is still equivariant as a function of the raw inputs.
    from symprior._config import load_config
    from symprior._run import build, input_statistics
    from symprior.groups import SO2, Scalar, V
    from symprior.nn import set_strict
    from symprior.testing import assert_equivariant

    _, scale = input_statistics(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), "scale")
    assert scale == pytest.approx(math.sqrt(25 / 4))
    model, (x, _), _ = build(load_config(_config(tmp_path, epochs=1)))
    net = model.network.double()
    set_strict(net)
    _, factor = input_statistics(x, "scale")
    G = SO2()  # the TINY config: rpp_mlp, SO2, V -> Scalar
    error = assert_equivariant(
        lambda v: net(v / factor),
        G,
        x.double()[:8],
        rep_in=V(G),
        rep_out=Scalar(G),
        dtypes=None,
        atol=1e-10,
    )
    assert error < 1e-10


def test_bad_standardize_value_is_one_clear_line(tmp_path, capsys):
    path = _config(tmp_path, epochs=1)
    path.write_text(path.read_text() + 'standardize = "zscore"\n')
    assert main(["fit", str(path), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[run] standardize must be one of" in err[0]
