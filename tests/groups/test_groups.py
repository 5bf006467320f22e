import math

import pytest
import torch

from symprior.groups import (
    O2,
    O3,
    SE2,
    SL2,
    SO2,
    SO3,
    Affine2,
    Cyclic,
    Dihedral,
    Group,
    LogUndefinedError,
    MatrixGroup,
    Permutation,
    Scaling,
    Translation,
)
from tests.conftest import ALL_GROUPS, DEVICES, GROUP_IDS


def _in_group(G: Group, g: torch.Tensor) -> bool:
    """Membership checks that do not use the group's own code paths."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype)
    det = torch.linalg.det(g)
    if isinstance(G, SO2 | SO3):
        return bool(
            torch.allclose(g.mT @ g, eye, atol=1e-12)
            and torch.allclose(det, det.new_ones(()), atol=1e-12)
        )
    if isinstance(G, O2 | O3 | Cyclic | Dihedral):
        return bool(torch.allclose(g.mT @ g, eye, atol=1e-12))
    if isinstance(G, SE2):
        r = g[..., :2, :2]
        return bool(
            torch.allclose(r.mT @ r, torch.eye(2, dtype=g.dtype), atol=1e-12)
            and torch.allclose(g[..., 2, :], torch.tensor([0.0, 0.0, 1.0], dtype=g.dtype))
        )
    if isinstance(G, Translation):
        k = G.space_dim
        return bool(
            torch.allclose(g[..., :k, :k], torch.eye(k, dtype=g.dtype))
            and torch.allclose(g[..., k, :], eye[k])
        )
    if isinstance(G, Scaling):
        s = g[..., 0, 0]
        return bool((s > 0).all() and torch.allclose(g, s[..., None, None] * eye))
    if isinstance(G, SL2):
        return bool(torch.allclose(det, det.new_ones(()), atol=1e-10))
    if isinstance(G, Affine2):
        return bool(
            torch.allclose(g[..., 2, :], torch.tensor([0.0, 0.0, 1.0], dtype=g.dtype))
            and (det > 0).all()
        )
    if isinstance(G, Permutation):
        return bool(
            ((g == 0) | (g == 1)).all() and (g.sum(-1) == 1).all() and (g.sum(-2) == 1).all()
        )
    raise AssertionError(f"no membership test for {G!r}")


@pytest.mark.parametrize("G", ALL_GROUPS, ids=GROUP_IDS)
def test_group_axioms_on_testing_elements(G):
    els = G.testing_elements()
    assert els.dtype == torch.float64
    assert _in_group(G, els)
    eye = torch.eye(G.n, dtype=torch.float64)
    # closure, identity, inverses, associativity
    prod = els[:, None] @ els[None, :]
    assert _in_group(G, prod.reshape(-1, G.n, G.n))
    assert torch.allclose(eye @ els, els)
    inv = G.inverse(els)
    assert torch.allclose(inv @ els, eye.expand_as(els), atol=1e-10)
    assert _in_group(G, inv)
    a, b, c = els[:3]
    assert torch.allclose((a @ b) @ c, a @ (b @ c), atol=1e-12)


@pytest.mark.parametrize(
    "G", [g for g in ALL_GROUPS if g.dim > 0], ids=[repr(g) for g in ALL_GROUPS if g.dim > 0]
)
def test_exp_matches_matrix_exp_and_lies_in_group(G):
    gen = torch.Generator().manual_seed(1)
    c = 0.7 * torch.randn(16, G.dim, generator=gen, dtype=torch.float64)
    ref = torch.linalg.matrix_exp(torch.einsum("bd,dij->bij", c, G.lie_algebra))
    assert torch.allclose(G.exp(c), ref, atol=1e-12, rtol=0)
    assert _in_group(G, G.exp(c))
    # small-angle branches of the closed forms
    tiny = 1e-6 * torch.randn(4, G.dim, generator=gen, dtype=torch.float64)
    ref = torch.linalg.matrix_exp(torch.einsum("bd,dij->bij", tiny, G.lie_algebra))
    assert torch.allclose(G.exp(tiny), ref, atol=1e-15, rtol=0)


def _principal_coeffs(G, num, gen):
    """Coefficients inside the principal domain of each group."""
    c = torch.randn(num, G.dim, generator=gen, dtype=torch.float64)
    if isinstance(G, SO2 | SE2):
        c[:, 0] = (2 * torch.rand(num, generator=gen, dtype=torch.float64) - 1) * (math.pi - 1e-3)
    if isinstance(G, SO3):
        c = (
            c
            / c.norm(dim=-1, keepdim=True)
            * torch.rand(num, 1, generator=gen, dtype=torch.float64)
            * (math.pi - 1e-3)
        )
    if isinstance(G, SL2 | Affine2):
        c = 0.4 * c
    return c


@pytest.mark.parametrize(
    "G", [g for g in ALL_GROUPS if g.dim > 0], ids=[repr(g) for g in ALL_GROUPS if g.dim > 0]
)
def test_log_exp_round_trips(G):
    gen = torch.Generator().manual_seed(2)
    c = _principal_coeffs(G, 32, gen)
    assert torch.allclose(G.log(G.exp(c)), c, atol=1e-9, rtol=0)
    g = G.exp(c)
    assert torch.allclose(G.exp(G.log(g)), g, atol=1e-10, rtol=0)


def test_so3_log_near_pi_and_zero():
    G = SO3()
    axis = torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64)
    axis = axis / axis.norm()
    for theta in (math.pi - 1e-7, math.pi - 1e-4, 1e-9, 0.0):
        c = axis * theta
        assert torch.allclose(G.exp(G.log(G.exp(c))), G.exp(c), atol=1e-10)


def test_log_raises_outside_principal_domain():
    with pytest.raises(LogUndefinedError, match="reflection"):
        O2().log(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)))
    with pytest.raises(LogUndefinedError):
        Cyclic(4).log(torch.eye(2, dtype=torch.float64))
    with pytest.raises(LogUndefinedError, match="negative real axis"):
        SL2().log(torch.diag(torch.tensor([-2.0, -0.5], dtype=torch.float64)))
    with pytest.raises(ValueError):
        O3().log(-torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("G", ALL_GROUPS, ids=GROUP_IDS)
def test_sampling_uses_only_the_explicit_generator(G):
    a = G.sample(5, torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    b = G.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert _in_group(G, a)
    assert G.sample(3, torch.Generator().manual_seed(3), dtype=torch.float32).dtype == torch.float32


def test_haar_sampling_statistics():
    gen = torch.Generator().manual_seed(4)
    # SO(2): the angle is uniform, so E[cos k theta] = 0 for k >= 1.
    g = SO2().sample(20000, gen)
    theta = SO2().log(g)[:, 0]
    for k in (1, 2, 3):
        assert abs(float(torch.cos(k * theta).mean())) < 0.03
    # SO(3): Haar measure gives E[R] = 0 and E[trace R] = 0, E[trace(R)^2] = 1.
    r = SO3().sample(20000, gen)
    assert float(r.mean(0).abs().max()) < 0.03
    tr = r.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(float(tr.mean())) < 0.03
    assert abs(float((tr**2).mean()) - 1.0) < 0.05
    # Finite groups: uniform over the elements.
    p = Dihedral(3).sample(6000, gen)
    els = Dihedral(3).elements()
    counts = ((p[:, None] - els[None]).abs().sum((-1, -2)) < 1e-9).sum(0).double()
    assert float((counts / 6000 - 1 / 6).abs().max()) < 0.02


def test_finite_group_orders():
    assert Cyclic(5).elements().shape[0] == 5
    assert Dihedral(4).elements().shape[0] == 8
    assert Permutation(4).elements().shape[0] == 24
    # closure of the generators agrees with the closed-form enumeration
    for G in (Cyclic(6), Dihedral(5)):
        closed = type(G).__mro__[1].elements(G)  # generic closure in _FiniteGroup
        assert closed.shape[0] == G.elements().shape[0]


@pytest.mark.parametrize("device", DEVICES)
def test_results_follow_input_device_and_dtype(device):
    G = SE2()
    c = torch.tensor([[0.3, 1.0, -2.0]], dtype=torch.float32, device=device)
    g = G.exp(c)
    assert g.dtype == torch.float32 and g.device.type == device
    assert torch.allclose(G.log(g.double()).float(), c, atol=1e-5)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="lie_algebra must have shape"):
        MatrixGroup(lie_algebra=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="discrete_generators must have shape"):
        MatrixGroup(discrete_generators=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="expected 2x2"):
        MatrixGroup(lie_algebra=torch.zeros(1, 2, 2), discrete_generators=torch.eye(3)[None])
    with pytest.raises(ValueError, match=r"coeffs must have shape \(\.\.\., 3\)"):
        SO3().exp(torch.zeros(2))
    with pytest.raises(ValueError, match="another group"):
        SO3().log(torch.eye(2, dtype=torch.float64)[None])
    with pytest.raises(ValueError, match="k must be"):
        Cyclic(0)
    with pytest.raises(ValueError, match="num must be"):
        SO2().sample(-1)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        SO3().sample(2, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SO2().check_elements([[1.0, 0.0], [0.0, 1.0]])


def test_user_defined_group_from_generators():
    # SO(2) written as a MatrixGroup behaves like the shipped one.
    G = MatrixGroup(lie_algebra=SO2().lie_algebra, name="rot")
    c = torch.tensor([[0.4], [-2.0]], dtype=torch.float64)
    assert torch.allclose(G.exp(c), SO2().exp(c), atol=1e-14)
    assert torch.allclose(G.log(G.exp(c)), c, atol=1e-10)
    assert G == MatrixGroup(lie_algebra=SO2().lie_algebra, name="rot")
    assert G != SO2()
