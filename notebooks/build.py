r"""Write the example notebooks from their cell sources and execute them in place.

Run ``python notebooks/build.py`` from the repository root (or anywhere): each notebook is written
with :mod:`nbformat` and executed with :mod:`nbclient` in this directory, so the committed files
carry their outputs and figures. ``python notebooks/build.py 02`` rebuilds only the notebooks whose
file names start with ``02``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

#: Every notebook starts by quietening the one import-time notice of ArviZ (nothing to act on)
#: and by drawing figures inline, so PNG outputs land in the notebook.
PREAMBLE = """\
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message=r"\\s*ArviZ is undergoing", category=FutureWarning)
# No ipywidgets here: progress bars are off anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import torch
from IPython.display import display

torch.manual_seed(0)
torch.set_default_dtype(torch.float32)"""

Cell = tuple[str, str]

SOFT_SE2: list[Cell] = [
    (
        "md",
        """\
# How much rotation symmetry does each layer of a soft SE(2) CNN keep?

A soft SE(2) CNN (004) is built from *non-stationary* group convolutions: the kernel
$k(v^{-1}u, v)$ depends on the relative position $v^{-1}u$ (as in a group convolution) **and** on
the absolute position $v$ through random Fourier features with domain frequencies
$\\omega'$ (004 eq. 6-8). At $\\omega' = 0$ a layer is a strict SE(2) group convolution
(004 Remark 2); the norm $|\\omega'|$ is the layer's *equivariance level*.

004 app. B.2 reads the regulariser $\\lambda\\|\\omega'\\|^2$ as the Gaussian prior
$N(0, \\frac{1}{2\\lambda} I)$. symprior makes $\\omega'$ a random variable with that prior, finds
the MAP network and puts a **Laplace approximation** on the relaxation parameters: the posterior
over the equivariance level of every layer.

**The task** is the 6-vs-9 problem (004 sec. 6.1, MNIST6-180 analogue) built from scikit-learn's
bundled digits: the 6s, half of them rotated by 180 degrees and labelled "9". A strictly
rotation-invariant network cannot solve it (the two classes are rotations of each other), so the
data should push some $\\omega'$ away from zero. We fit the soft network and, for contrast, the
same network with every $\\omega'$ fixed at zero. Sizes are tiny (8x8 images, 200 digits) so the
notebook runs in about a minute on a laptop CPU.""",
    ),
    ("code", PREAMBLE),
    (
        "code",
        """\
from symprior.data import six_vs_nine

data = six_vs_nine(200, image_size=8, seed=0)
train, test = data.split(0.75, shuffle=True, seed=0)
# Standardise with one mean and one scale for all pixels (from the training images): an affine
# map of the grey levels, so it commutes with every rotation and keeps the task's symmetry.
pixel_mean, pixel_sd = train.x.mean(), train.x.std()
x_train, x_test = (train.x - pixel_mean) / pixel_sd, (test.x - pixel_mean) / pixel_sd
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}, "
      f"fraction labelled '9': {train.y.float().mean():.2f}")

fig, axes = plt.subplots(1, 8, figsize=(8, 1.4))
for ax, image, label in zip(axes, train.x[:8], train.y[:8]):
    ax.imshow(image[0], cmap="gray_r")
    ax.set_title("9" if label else "6")
    ax.axis("off")
plt.show()""",
    ),
    (
        "md",
        """\
## Model: soft SE(2) CNN with a Gaussian prior on $\\omega'$

`soft_se2_cnn(soft="both")` relaxes rotations and translations (004 Table 1): every layer (the
lifting layer `lift` and the group convolution `convs.0`) has a learnable $\\omega'$ with
components on the domain coordinates $(x, y, \\theta)$ of the absolute element $v$: horizontal
position, vertical position, rotation angle. `FrequencyPrior(lam=0.5)` is the prior $N(0, 1)$ on
each component ($\\lambda = 0.5$ is among 004 Table 2's best settings). $\\omega'$ starts at
zero, the prior mean and the strict network: wherever it ends up, the data moved it there.

Three choices make this small network learn the task at all:

* `pool="max"`: the readout max-pools over the rotation and spatial axes (004 app. A.1). A *mean*
  over all positions of a convolution is (sum of the kernel) x (sum of the image), whatever the
  kernel's orientation, so a mean-pooled readout sees orientation only through the curvature of
  the nonlinearities, and a 6 and a rotated 6 give almost the same features.
* `random_grid=False`: the rotation grid is fixed at $0, 90, 180, 270$ degrees in training as
  in evaluation. Four rotations are exact quarter turns of the pixel grid, so the strict network
  is exactly invariant to the 180-degree flip that defines the labels; and the function whose
  curvature the Laplace approximation measures is the one that makes the predictions. (A random
  grid offset in training, the default, fits a relaxed network to an average over grid angles,
  and its evaluation at angle zero can be much worse than that average.)
* standardised pixels (above), so activations are of order one.""",
    ),
    (
        "code",
        """\
from symprior.models import Categorical, SymmetryModel
from symprior.models.zoo import soft_se2_cnn
from symprior.priors import FrequencyPrior

architecture = dict(channels=(4, 4), num_rotations=4, radius=1.5, pool="max", random_grid=False)
torch.manual_seed(0)
net = soft_se2_cnn(soft="both", **architecture)
model = SymmetryModel(net, Categorical(), priors={"*omega_prime": FrequencyPrior(lam=0.5)})
model.site_names()""",
    ),
    (
        "md",
        """\
## Laplace over the relaxation parameters

`Laplace(subset="relaxation")` first finds the MAP point of every weight (60 full-batch Adam
steps), then takes the exact Hessian of the negative log joint over the six $\\omega'$
components, with the other weights held at their MAP values. The Gaussian it defines is the
posterior below.

*About warnings:* where the Hessian is not positive definite (a flat or saddle direction at an
approximate mode), symprior raises its eigenvalues to a small floor and emits a
`CurvatureWarning`. We record such warnings instead of printing them and report how many
eigenvalues were repaired (`info["repaired_eigenvalues"]`); a repaired direction has a broad
posterior, i.e. the data say little about it.

We report two held-out accuracies: the MAP network's, and that of the posterior predictive.
For Laplace posteriors `predict` uses the linearised (GLM) predictive (Immer et al. 2021): the
network is linearised in $\\omega'$ at the fitted values, so its logits are Gaussian, and the
class probabilities are averaged over 100 draws of those logits (the other weights at their MAP
values). `method="montecarlo"` would instead average the network over draws of $\\omega'$.""",
    ),
    (
        "code",
        """\
from symprior.inference import CurvatureWarning, Laplace


def fit(model):
    engine = Laplace(optimizer="adam", num_epochs=60, lr=0.02, newton_steps=0, seed=0,
                     progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CurvatureWarning)
        posterior = engine.fit(model, (x_train, train.y))
    repairs = sum(issubclass(w.category, CurvatureWarning) for w in caught)
    return posterior, repairs


def map_probabilities(network, x):
    with torch.no_grad():
        return torch.softmax(network.eval()(x), -1)


def accuracy(probabilities, y):
    return float((probabilities.argmax(-1) == y).float().mean())


posterior, repairs = fit(model)
print(f"log evidence {float(posterior.log_evidence()):.2f}; "
      f"repaired eigenvalues: {posterior.info['repaired_eigenvalues']} "
      f"({repairs} CurvatureWarning)")
map_accuracy = accuracy(map_probabilities(net, x_test), test.y)
predictive = posterior.predict(x_test, 100, torch.Generator().manual_seed(1))
print(f"held-out accuracy (chance: 0.5): MAP network {map_accuracy:.3f}, "
      f"posterior predictive {accuracy(predictive, test.y):.3f}")""",
    ),
    (
        "md",
        """\
## The strict network for contrast

The same architecture with `soft="none"` has no $\\omega'$ at all: every layer is a strict
SE(2) group convolution. It is fitted the same way (its Laplace approximation has nothing to
integrate, so its "evidence" is the log joint at the MAP point). A 9 here *is* a 6 rotated by 180
degrees, so the strict network must give every image and its 180-degree rotation the same class
probabilities; the cell checks that on the held-out images (`torch.rot90` rotates exactly).""",
    ),
    (
        "code",
        """\
import pandas as pd

torch.manual_seed(0)
strict_net = soft_se2_cnn(soft="none", **architecture)
strict_posterior, _ = fit(SymmetryModel(strict_net, Categorical()))

flipped = torch.rot90(x_test, 2, (-2, -1))
rows = {}
for name, network, post in (("soft SE(2)", net, posterior),
                            ("strict SE(2)", strict_net, strict_posterior)):
    probabilities = map_probabilities(network, x_test)
    gap = (probabilities - map_probabilities(network, flipped)).abs().max()
    rows[name] = {"held-out accuracy": accuracy(probabilities, test.y),
                  "max |p(x) - p(rot180 x)|": float(gap),
                  "log evidence": float(post.log_evidence())}
contrast = pd.DataFrame.from_dict(rows, orient="index")
contrast""",
    ),
    (
        "md",
        """\
## Posterior equivariance levels

`summary` exports the posterior to ArviZ and reports, per layer, the mean, standard deviation and
94% HDI of the equivariance level $|\\omega'|$, and of every component of $\\omega'$.""",
    ),
    (
        "code",
        """\
from symprior.diagnostics import plot_equivariance_levels, plot_relaxation_posteriors, summary

table = summary(posterior, num_samples=400, generator=torch.Generator().manual_seed(2))
table""",
    ),
    (
        "code",
        """\
display(plot_equivariance_levels(posterior, num_samples=400,
                                 generator=torch.Generator().manual_seed(2)))
display(plot_relaxation_posteriors(posterior, num_samples=400,
                                   generator=torch.Generator().manual_seed(2)))""",
    ),
    (
        "md",
        """\
## Which layers relax?

Compare each component's posterior with its prior $N(0, 1)$: a posterior mean several standard
deviations from zero means the data *require* that layer to break the symmetry along that
coordinate; a posterior much narrower than the prior around zero means the data keep that
coordinate close to strict; a posterior as wide as the prior means the data do not inform it.
The cell below reads that off the table (the prior standard deviation is
$1/\\sqrt{2\\lambda} = 1$; components are named by their coordinate).""",
    ),
    (
        "code",
        """\
prior_sd = (1.0 / (2 * 0.5)) ** 0.5
coordinates = ("x", "y", "theta")
levels = posterior.equivariance_levels(400, torch.Generator().manual_seed(3))
for layer, draws in levels.items():
    print(f"{layer:>8s}: level mean {draws.mean():.2f}, sd {draws.std():.2f}")
components = table.loc[[i for i in table.index if "omega_prime" in i]]
z = (components["mean"] / components["sd"]).abs()
shrink = components["sd"] / prior_sd
relaxed_components = []
for name in components.index:
    label = f"{name} ({coordinates[int(name[-2])]})"
    if z[name] > 2:
        verdict = "relaxed by the data"
        relaxed_components.append(label)
    elif shrink[name] < 0.5:
        verdict = "kept near the strict value"
    else:
        verdict = "not informed by the data"
    print(f"{label:>30s}: |mean|/sd = {z[name]:4.1f}, sd/prior sd = {shrink[name]:.2f} -> {verdict}")
print("components the data move away from zero:", ", ".join(relaxed_components) or "none")""",
    ),
    (
        "md",
        """\
## Does the MAP network need its $\\omega'$?

A direct check that the fitted network uses its relaxation: shrink every $\\omega'$ towards zero,
$\\omega' \\to t\\,\\omega'_{MAP}$ for $t$ from 1 (the MAP network) to 0 (its strict version), with
all other weights fixed, and follow the training log-likelihood and the held-out accuracy.""",
    ),
    (
        "code",
        """\
mode = posterior.mean()
ts = torch.linspace(0, 1, 11)
path_loglik, path_accuracy = [], []
with torch.no_grad():
    net.eval()
    for t in ts:
        values = {k: t * v if "omega_prime" in k else v for k, v in mode.items()}
        logits = model.run(values, x_train)
        path_loglik.append(float(-torch.nn.functional.cross_entropy(logits, train.y,
                                                                    reduction="sum")))
        path_accuracy.append(accuracy(torch.softmax(model.run(values, x_test), -1), test.y))
fig, (ax_ll, ax_acc) = plt.subplots(1, 2, figsize=(9, 3), layout="constrained")
ax_ll.plot(ts, path_loglik, "o-")
ax_ll.set_ylabel("training log-likelihood")
ax_acc.plot(ts, path_accuracy, "o-")
ax_acc.axhline(0.5, color="gray", linestyle=":", label="chance")
ax_acc.set_ylabel("held-out accuracy")
ax_acc.legend()
for ax in (ax_ll, ax_acc):
    ax.set_xlabel("t  (omega' = t * omega'_MAP)")
plt.show()
print(f"held-out accuracy at t = 0 (strict): {path_accuracy[0]:.2f}, "
      f"at t = 1 (MAP): {path_accuracy[-1]:.2f}")""",
    ),
    (
        "md",
        """\
**Reading.** The strict network is at chance and its predictions do not change under the
180-degree flip (the contrast table: the gap is zero up to float rounding), exactly as the
symmetry argument says; the soft network separates 6s from 9s on held-out digits, and its log
evidence is far above the strict one's. The path plot shows that the fitted network *relies* on
its relaxation: set its $\\omega'$ to zero and it falls back to chance.

The posterior over $\\omega'$ says *where* the symmetry is broken. The equivariance level of a
layer is the norm of its three components, so it is positive even under the prior (about 1.6
for three $N(0,1)$ components); what matters is how each component's posterior differs from the
prior. The verdict cell lists the components whose posterior mean is more than two standard
deviations from zero; the others are either kept near zero or left at their prior, so the
relaxation the data call for is carried by the listed components alone. Position components
($x$, $y$) break rotation symmetry as well, because a rotation moves positions: a network can
tell a 6 from a 9 by *where* its strokes are (a 6 has its loop at the bottom). Two caveats of the method: the Laplace posterior describes
$\\omega'$ with the other weights fixed at their MAP values, and it is local, so draws of
$\\omega'$ can stray into regions the fitted weights were not adapted to; this is why the
predictive above linearises the network instead of averaging it over such draws. The example `examples/six_vs_nine_soft_se2.toml`
(`symprior fit`) trains a larger model for longer.""",
    ),
]

HYPOTHESES: list[Cell] = [
    (
        "md",
        """\
# Strict, relaxed or no symmetry? Comparing hypotheses on the N-body task

The question of this notebook: given data, should a model be **strictly** rotation-equivariant,
**approximately** equivariant, or have **no** built-in symmetry? We fit three models to the same
data and compare them

* by the **Laplace log evidence** $\\log p(\\mathcal D \\mid \\mathcal M)$,
* by **PSIS-LOO**, the leave-one-out predictive density estimated from posterior draws, where
  its diagnostics say it can be trusted,
* on held-out data, in distribution and under **out-of-distribution rotations**,

then look at the posterior of the equivariance errors $E$ and $E'$ (001 eq. 12-13).

**Data.** The gravitational N-body task of 001 (app. C.2, `symprior.data.nbody`): from the
masses, positions and velocities of the bodies (centre-of-mass frame), predict the positions
after 100 Euler steps. Newton's equations are exactly SO(3)-equivariant, so the expected answer
is that the data **support the symmetry**: the strict and relaxed models should beat the
unconstrained one, above all on rotations the training set never showed, and the relaxed model
should stay close to equivariant. Training samples are rotated by at most $10°$
(`rotation="in_distribution"`); the out-of-distribution test set by $90°$ to $180°$ about a
random axis.

*Small sizes, so the notebook runs in about a minute on a CPU:* **two bodies** (a star and one
planet; 001 uses four), 200 training samples, 200 samples in each test set. With four bodies the
quadratic features of the equivariant networks below have $28 + 28^2 = 812$ dimensions, and the
relaxed model's residual weights grow with that square. For a contrast with a *known*
symmetry-breaking strength, use `symprior.data.synthetic(epsilon=...)` (notebook 3 does).""",
    ),
    ("code", PREAMBLE),
    (
        "code",
        """\
from symprior.data import nbody
from symprior.diagnostics import equivariance_error
from symprior.models.zoo import make_group, parse_rep

BODIES, TIME = 2, 0.1  # total simulated time: 100 steps of 0.001


def features(data):
    \"\"\"Inputs: log masses (scalars), positions and v * TIME (vectors); target: displacements.\"\"\"
    x = torch.cat([data.masses.log(), data.positions.flatten(1),
                   (TIME * data.velocities).flatten(1)], dim=1)
    return x, (data.y - data.positions).flatten(1)


options = dict(num_bodies=BODIES, dtype=torch.float64)
train = features(nbody(200, rotation="in_distribution", seed=0, **options))
test_id = features(nbody(200, rotation="in_distribution", seed=1, **options))
test_ood = features(nbody(200, rotation="out_of_distribution", seed=2, **options))
group = make_group("SO3")
rep_in = parse_rep(f"{BODIES}Scalar + {2 * BODIES}V", group)
rep_out = parse_rep(f"{BODIES}V", group)
# 64 fixed rotations, shared by every E and E' in this notebook.
rotations = group.sample(64, torch.Generator().manual_seed(3), dtype=torch.float64)


def rmse(prediction, y):
    return float(((prediction - y) ** 2).mean().sqrt())


inertial = train[0][:, -3 * BODIES:]  # v * TIME: the displacement without gravity
print(f"inputs {tuple(train[0].shape)} ({rep_in.size} = {BODIES} scalars + {2 * BODIES} vectors), "
      f"targets {tuple(train[1].shape)}")
print(f"training RMSE of predicting no displacement: {rmse(0 * train[1], train[1]):.4f}; "
      f"of the inertial displacement v * t: {rmse(inertial, train[1]):.4f}")""",
    ),
    (
        "md",
        """\
**Representation.** Each sample is one vector of $2 + 4 \\times 3 = 14$ numbers: the log masses
(scalars: any function of a mass is invariant), then the positions and the velocities of both
bodies (vectors, rep `2Scalar + 4V` of SO(3)). The velocities are multiplied by the simulated
time $t = 0.1$, so that they read as the *inertial displacement* $v t$, of the same scale as the
positions. The target is the **displacement** (final minus initial position) of each body, rep
`2V`, rather than the final position: the final position is mostly the initial one, and a small
network fits the difference more easily. Both transformations commute with rotations, so the
task stays exactly equivariant. The two printed baselines show how much of the target is
gravity, i.e. what the networks have to learn beyond $v t$.

## Three hypotheses

* `strict`: an equivariant MLP for SO(3) (`equivariant_mlp`, EMLP layers with gated
  nonlinearities after the quadratic features $x \\oplus x \\otimes x$). It has no relaxation
  parameters: it is exactly equivariant whatever its weights.
* `relaxed`: the same network with a residual pathway (`rpp_mlp`, Finzi et al. 2021): every
  weight is $W = \\mathrm{unvec}(Qa) + B$ with $Q$ spanning the equivariant maps and a Gaussian
  prior of scale $0.02$ on every residual entry of $B$.
* `unconstrained`: a plain MLP on the same 14 numbers.

Every weight that is not a residual (the equivariant coefficients $a$, the MLP's weights) gets
the same prior $N(0, 1)$, and each model gets a Laplace approximation over **all** its weights
with the Kronecker-factored generalised Gauss-Newton curvature (`subset="all"`,
`structure="kron"`). The three evidences are then of one kind, and the GGN is positive
semi-definite by construction, so no eigenvalue needs repairing. The simulator has no noise;
the Gaussian likelihood's scale $0.05$ is a modelling choice, the size of misfit we tolerate
(about a third of the typical displacement).

*Why not a relaxed model with a small residual scale as the "strict" one?* A small residual
scale keeps the residual *entries* small, not their effect: with point-estimated equivariant
weights the fit can grow those weights and amplify the residuals. Strictness is a property of
the architecture, so the strict hypothesis is the network without residuals.""",
    ),
    (
        "code",
        """\
import pyro.distributions as dist

from symprior.inference import CurvatureWarning, Laplace
from symprior.models import Gaussian, SymmetryModel
from symprior.models.zoo import equivariant_mlp, rpp_mlp, unconstrained_mlp
from symprior.priors import ResidualPrior

NOISE = 0.05
weight_prior = dist.Normal(0.0, 1.0)
reps = ("SO3", f"{BODIES}Scalar + {2 * BODIES}V", f"{BODIES}V")
builders = {
    "strict": lambda: equivariant_mlp(*reps, hidden="3V + 3Scalar", depth=1),
    "relaxed": lambda: rpp_mlp(*reps, hidden="3V + 3Scalar", depth=1),
    "unconstrained": lambda: unconstrained_mlp(rep_in.size, rep_out.size, hidden=32, depth=1),
}
models = {}
for name, build in builders.items():
    torch.manual_seed(0)
    priors = {"*residual": ResidualPrior(0.02)} if name == "relaxed" else None
    models[name] = SymmetryModel(build().double(), Gaussian(NOISE), priors=priors,
                                 weight_prior=weight_prior)

posteriors, repaired = {}, {}
for name, model in models.items():
    engine = Laplace(subset="all", structure="kron", optimizer="lbfgs", num_epochs=30, lr=1.0,
                     seed=0, progress=False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", CurvatureWarning)
        posteriors[name] = engine.fit(model, train)
    repaired[name] = posteriors[name].info["repaired_eigenvalues"]
print("weights per model:",
      {name: sum(p.numel() for p in m.network.parameters()) for name, m in models.items()})
print("eigenvalues repaired by the Laplace floor:", repaired)""",
    ),
    (
        "md",
        """\
*About warnings:* a precision that is not positive definite at the (approximate) mode has its
eigenvalues raised to a small floor, with a `CurvatureWarning`; we record those warnings and
print the count above instead.

## Comparison

The table ranks the hypotheses by log evidence (higher is better), with the posterior
probability of each under equal prior odds (`evidence_weight`). Next to it is PSIS-LOO on the
training data from 200 draws of each posterior (`elpd_loo`, its standard error `se`) with its
own diagnostic: the Pareto shape $\\hat k$ of every point's importance weights (`pareto_k_max`,
and `share_k_bad`, the share of points with $\\hat k > 0.7$). Above 0.7 the importance-sampling
estimate of that point's leave-one-out density is not reliable (Vehtari et al. 2017), so a
model with any such point gets NaN for `elpd_loo` and `se` instead of a number that means
nothing.
(`symprior.diagnostics.compare` builds such a table for models with relaxed layers; the strict
EMLP and the plain MLP have none, so we assemble it from `to_arviz` and `arviz.loo`.)""",
    ),
    (
        "code",
        """\
import arviz as az
import numpy as np
import pandas as pd

from symprior.diagnostics import to_arviz

rows = {}
for name, post in posteriors.items():
    idata = to_arviz(post, data=train, num_samples=200, weights=True,
                     generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        # Reported in the pareto_k columns instead.
        warnings.filterwarnings("ignore", category=UserWarning, module="arviz")
        loo = az.loo(idata, pointwise=True, var_name="obs")
    k_hat = np.asarray(loo.pareto_k)
    rows[name] = {"log_evidence": float(post.log_evidence()), "elpd_loo": float(loo.elpd_loo),
                  "se": float(loo.se), "pareto_k_max": float(k_hat.max()),
                  "share_k_bad": float((k_hat > 0.7).mean())}
table = pd.DataFrame.from_dict(rows, orient="index").sort_values("log_evidence", ascending=False)
weights = np.exp(table["log_evidence"] - table["log_evidence"].max())
table.insert(1, "evidence_weight", weights / weights.sum())
unreliable = table["share_k_bad"] > 0
# An importance-sampling estimate with Pareto k above 0.7 is not an estimate: not shown.
table.loc[unreliable, ["elpd_loo", "se"]] = np.nan
print("PSIS-LOO unreliable (some Pareto k > 0.7), shown as NaN, for:",
      ", ".join(table.index[unreliable]) or "none")
table""",
    ),
    (
        "md",
        """\
Held-out samples give what LOO tries to estimate without the importance sampling: below, the
RMSE of each model's MAP prediction (the mean of the linearised Laplace predictive, Immer et
al. 2021) on the training samples, on the in-distribution test set and on the
out-of-distribution (strongly rotated) test set, and the held-out log predictive density of
each test set under that Gaussian predictive (`symprior.inference.linearized_predict`: output
variance $J\\Sigma J^\\top$ plus the noise $0.05^2$).""",
    ),
    (
        "code",
        """\
from symprior.inference import linearized_predict


def log_density(post, x, y):
    mean, variance = linearized_predict(post, x)
    return float(torch.distributions.Normal(mean, (variance + NOISE**2).sqrt()).log_prob(y).sum())


held_out = {}
for name, post in posteriors.items():
    held_out[name] = {
        "train_rmse": rmse(linearized_predict(post, train[0])[0], train[1]),
        "id_rmse": rmse(linearized_predict(post, test_id[0])[0], test_id[1]),
        "ood_rmse": rmse(linearized_predict(post, test_ood[0])[0], test_ood[1]),
        "id_log_density": log_density(post, *test_id),
        "ood_log_density": log_density(post, *test_ood),
    }
held_out = pd.DataFrame.from_dict(held_out, orient="index")
print("RMSE of the displacements (likelihood scale 0.05) and held-out log predictive density:")
display(held_out)
print(f"best by evidence: {table.index[0]}; "
      f"best by in-distribution RMSE: {held_out['id_rmse'].idxmin()}; "
      f"best by out-of-distribution RMSE: {held_out['ood_rmse'].idxmin()}; "
      f"best by out-of-distribution log density: {held_out['ood_log_density'].idxmax()}")
ratio = held_out["ood_rmse"] / held_out["id_rmse"]
print("out-of-distribution / in-distribution RMSE:",
      ", ".join(f"{name} {r:.2f}" for name, r in ratio.items()))""",
    ),
    (
        "md",
        """\
## How equivariant is each fitted model?

`posterior_equivariance_errors` scores each posterior draw of the network with the equivariance
error $E$ (001 eq. 12, error of the group-averaged outputs) and the pointwise error $E'$
(001 eq. 13, average error per group element), with the same 64 rotations for every draw, on the
in-distribution test inputs; we also score the MAP network. The strict model is exactly
equivariant, so its errors are zero up to float rounding for every draw. The target function is
exactly equivariant too: any error above zero is a departure the data did not ask for.""",
    ),
    (
        "code",
        """\
from symprior.diagnostics import plot_equivariance_errors, posterior_equivariance_errors

eq_errors, map_E = {}, {}
for name, post in posteriors.items():
    eq_errors[name] = posterior_equivariance_errors(
        post, test_id[0], group, rep_in, rep_out, num_samples=50, num_elements=64,
        generator=torch.Generator().manual_seed(3))
    mode, model = post.mean(), models[name]
    with torch.no_grad():
        map_E[name] = float(equivariance_error(lambda z, m=mode, f=model: f.run(m, z), test_id[0],
                                               group, rep_in, rep_out, elements=rotations))
print(f"RMS of the target displacements: {float(test_id[1].pow(2).mean().sqrt()):.4f}")
for name, e in eq_errors.items():
    pointwise = e["E'"]
    print(f"{name:>13s}: E at the MAP = {map_E[name]:.4f}; posterior draws: "
          f"E = {e['E'].mean():.4f} (sd {e['E'].std():.4f}), E' = {pointwise.mean():.4f}")
print("relaxed / unconstrained posterior mean E: "
      f"{eq_errors['relaxed']['E'].mean() / eq_errors['unconstrained']['E'].mean():.2f}")
display(plot_equivariance_errors(eq_errors))""",
    ),
    (
        "md",
        """\
**Reading.** The printed "best by ..." line and the ratios are the checks of what follows. The
physics is exactly equivariant and the evidence prefers the strict model: with every model's
misfit within the likelihood scale, the Occam factor decides, and the strict network has by far
the fewest weights. Out of distribution the held-out sets agree: the strict model predicts
best. In distribution the strict and relaxed models come close to each other, and which of
the two has the lower RMSE depends on the optimisation run (it has changed with rounding-level
changes of the library between versions): one fit to 200 samples does not rank them there.
The unconstrained MLP, which has to learn rotations from samples rotated by at most $10°$, does
worst, and its error grows when the test samples are rotated by $90°$ to $180°$ (the
out-of-distribution / in-distribution ratio above 1), because nothing ties its predictions on
rotated inputs to those on the training orbits. The strict model carries the symmetry to
every rotation by construction, so its error does not grow (the two test sets are different
draws of the simulation, so a ratio can also fall below 1). The relaxed model sits between the
two (its ratio is close to 1): its residuals (prior scale 0.02 on each of its many residual weights) let it depart from
equivariance, but its $E$ at the MAP stays small next to the size of the displacements, and its
posterior $E$ a fraction of the unconstrained MLP's (printed ratio; the draws of a Gaussian
over all weights lie further from equivariance than the MAP, for every non-strict model). It
fits the training samples less well than the strict model, and its extra weights cost it
evidence.
With data that do not ask for a departure from the symmetry, building it in exactly
is the better hypothesis.

**Why PSIS-LOO does not rank the models here.** The printed line names the models whose
importance weights have Pareto $\\hat k > 0.7$ somewhere: their leave-one-out estimates are
not usable, so the table shows NaN. The cause is the posterior, not the data: a Gaussian over
*all* the weights of a nonlinear network, sampled and pushed through the network, puts many
draws where the network fits badly (the Laplace evidence and the linearised predictive use the
Gaussian only locally, which is why they behave). PSIS-LOO suits posteriors whose draws are good
fits (e.g. NUTS, or a Laplace posterior over a few relaxation parameters); here the held-out
sets play its role.""",
    ),
]

REMUL: list[Cell] = [
    (
        "md",
        """\
# REMUL: trading task error against equivariance error

REMUL (001) does not build symmetry into the network. It trains an *unconstrained* model on the
objective $\\mathcal L = \\alpha\\,\\mathcal L_{task} + \\beta\\,\\mathcal L_{equi}$ (001 eq. 8),
where $\\mathcal L_{equi}$ compares $f(\\rho_{in}(g)x)$ with $\\rho_{out}(g)f(x)$ for fresh group
samples $g$. symprior writes the equivariance term as a **symmetry likelihood**
(`SymmetryLikelihood`): $f(\\rho_{in}(g)x)$ is observed around $\\rho_{out}(g)f(x)$ with Gaussian
precision $\\beta$. Under MAP this is exactly REMUL's weighted objective.

**Question.** How do the task error and the equivariance error $E$ (001 eq. 12) move as $\\beta$
grows? The data are symprior's synthetic task with symmetry-breaking strength $\\epsilon = 0.3$,
so full invariance is *wrong*: a large $\\beta$ should buy a small $E$ at the price of a larger
*fitting* error (001 sec. 5 studies the same trade-off). Whether the *held-out* error pays that
price too is a separate question: with few points the symmetry also regularises the MLP.""",
    ),
    ("code", PREAMBLE),
    (
        "code",
        """\
from symprior.data import synthetic

data = synthetic(240, epsilon=0.3, noise_std=0.05, seed=0, dtype=torch.float64)
train, test = data.split(0.75, shuffle=True, seed=0)
group, rep_in, rep_out = data.group, data.rep_in, data.rep_out
true_E = data.expected_equivariance_error()
print(f"{train.num_samples} training points; E of the true function {true_E:.3f}")""",
    ),
    (
        "md",
        """\
## A sweep over $\\beta$

For every $\\beta$ a fresh MLP (same initial weights) is fitted by MAP under
`[Gaussian(0.05), SymmetryLikelihood(SO2, V, Scalar, beta=beta, num_samples=4)]`; $\\beta = 0$ is
the plain task likelihood. Task error is the RMSE on the training and held-out points (the target
$\\sin(\\|x\\|^2)$ oscillates fast at large $\\|x\\|$, so 180 points leave a sizeable held-out
error even at $\\beta = 0$); $E$ and $E'$ are measured with 100
fixed rotations on the held-out inputs.""",
    ),
    (
        "code",
        """\
from symprior.diagnostics import equivariance_error, equivariance_error_pointwise
from symprior.inference import MAP
from symprior.models import Gaussian, SymmetryLikelihood, SymmetryModel
from symprior.models.zoo import unconstrained_mlp

betas = [0.0, 10.0, 100.0, 1000.0]
elements = group.sample(100, torch.Generator().manual_seed(1), dtype=torch.float64)
rows = []
for beta in betas:
    torch.manual_seed(0)
    net = unconstrained_mlp(2, 1, hidden=32, depth=2).double()
    likelihood = [Gaussian(0.05)]
    if beta > 0:
        likelihood.append(SymmetryLikelihood(group, rep_in, rep_out, beta=beta, num_samples=4))
    model = SymmetryModel(net, likelihood)
    posterior = MAP(num_epochs=250, lr=0.03, seed=0, progress=False).fit(
        model, (train.x, train.y))
    values = posterior.mean()

    def f(z, values=values, model=model):
        return model.run(values, z)

    with torch.no_grad():
        fit_error = float(((f(train.x) - train.y) ** 2).mean().sqrt())
        task = float(((f(test.x) - test.y) ** 2).mean().sqrt())
        e = float(equivariance_error(f, test.x, group, rep_in, rep_out, elements=elements))
        e_pw = float(equivariance_error_pointwise(f, test.x, group, rep_in, rep_out,
                                                  elements=elements))
    rows.append({"beta": beta, "train_rmse": fit_error, "test_rmse": task, "E": e, "E'": e_pw})

import pandas as pd

results = pd.DataFrame(rows).set_index("beta")
results""",
    ),
    (
        "code",
        """\
x_pos = [b if b > 0 else 0.1 for b in betas]
fig, (ax_task, ax_equi) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
ax_task.plot(x_pos, results["train_rmse"], "o-", label="training")
ax_task.plot(x_pos, results["test_rmse"], "s--", label="held-out")
ax_task.axhline(0.05, color="gray", linestyle=":", label="noise level")
ax_task.set_ylabel("RMSE (task error)")
ax_equi.plot(x_pos, results["E"], "o-", label="E (001 eq. 12)")
ax_equi.plot(x_pos, results["E'"], "s--", label="E' (001 eq. 13)")
ax_equi.axhline(true_E, color="gray", linestyle=":", label="E of the true function")
ax_equi.set_ylabel("equivariance error")
for ax in (ax_task, ax_equi):
    ax.set_xscale("log")
    ax.set_xticks(x_pos, ["0"] + [f"{b:g}" for b in betas[1:]])
    ax.set_xlabel("beta (precision of the symmetry likelihood)")
    ax.legend()
fig.suptitle("REMUL trade-off on data with symmetry-breaking strength 0.3")
plt.show()""",
    ),
    (
        "md",
        """\
**Reading.** The cell below prints the checks of this paragraph. Two quantities behave as a
trade-off: from $\\beta = 0$ to the largest $\\beta$ the **training** RMSE rises (barely
moving at small $\\beta$) up to about the held-out RMSE of the best *invariant* predictor (the
orbit average of the true function, $\\sin(\\|x\\|^2)$, which cannot represent
$\\epsilon x_1$), and $E$ falls from about the true function's level towards zero. The symmetry
likelihood makes the MLP more symmetric than the data, and it pays in fit.

The **held-out** RMSE does not show that price here. It is several times the noise level at every
$\\beta$: with 180 points the MLP does not learn the fast oscillation of $\\sin(\\|x\\|^2)$ at
large $\\|x\\|$, and that generalisation error is larger than the $\\epsilon x_1$ term that
invariance gives up. The symmetry likelihood acts like data augmentation over rotations, so at
large $\\beta$ it can *lower* the held-out error while raising the training error, and the
held-out RMSE need not move monotonically with $\\beta$ (compare the printed values). A trade-off in held-out error needs a
model that generalises well without help (more data, or a smaller breaking term relative to the
generalisation error). A random $\\beta$ with a prior (`PrecisionPrior`) lets the data choose
$\\beta$ instead of a sweep.""",
    ),
    (
        "code",
        """\
# The best invariant predictor: the true function averaged over rotations (its orbit average).
with torch.no_grad():
    orbit_mean = torch.stack([data.target_function(test.x @ g.T) for g in elements]).mean(0)
invariant_rmse = float(((orbit_mean - test.y) ** 2).mean().sqrt())
first, last = results.iloc[0], results.iloc[-1]
print(f"held-out RMSE of the best invariant predictor: {invariant_rmse:.3f}")
print(f"training RMSE: {first.train_rmse:.3f} at beta = 0 -> {last.train_rmse:.3f} at "
      f"beta = {betas[-1]:g}")
print(f"E: {first.E:.3f} at beta = 0 -> {last.E:.3f} at beta = {betas[-1]:g} "
      f"(true function {true_E:.3f})")
print(f"held-out RMSE: {first.test_rmse:.3f} at beta = 0 -> {last.test_rmse:.3f} at "
      f"beta = {betas[-1]:g}; lowest at beta = {results.test_rmse.idxmin():g}")""",
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01_soft_se2_laplace.ipynb": SOFT_SE2,
    "02_compare_symmetry_hypotheses.ipynb": HYPOTHESES,
    "03_remul_tradeoff.ipynb": REMUL,
}


def make_notebook(cells: list[Cell]) -> nbformat.NotebookNode:
    r"""A notebook (nbformat 4) from ``(kind, source)`` pairs, ``kind`` in {"md", "code"}."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        for kind, src in cells
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    r"""Run every cell of ``nb`` in a fresh ``python3`` kernel with working directory ``cwd``.

    jupyter_client starts the ``python3`` kernel with the interpreter that runs this script
    (it replaces a bare ``python`` in the kernel command by :data:`sys.executable`), so no
    kernelspec has to be installed beyond ipykernel itself.
    """
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def main(argv: list[str]) -> int:
    r"""Write and execute the notebooks whose names start with one of ``argv`` (default: all)."""
    for name, cells in NOTEBOOKS.items():
        if argv and not any(name.startswith(prefix) for prefix in argv):
            continue
        nb = execute(make_notebook(cells), HERE)
        nbformat.write(nb, HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
