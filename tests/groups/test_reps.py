import pytest
import torch

from symprior.groups import SO2, SO3, Permutation, Scalar, SumRep, V
from tests.conftest import ALL_GROUPS, GROUP_IDS

REP_BUILDERS = {
    "V": lambda G: V(G),
    "Scalar": lambda G: Scalar(G),
    "V*V": lambda G: V(G) * V(G),
    "V.T": lambda G: V(G).T,
    "V*V.T": lambda G: V(G) * V(G).T,
    "2V+S": lambda G: 2 * V(G) + Scalar(G),
    "(V+S)*V.T": lambda G: (V(G) + Scalar(G)) * V(G).T,
}


@pytest.mark.parametrize("G", ALL_GROUPS, ids=GROUP_IDS)
@pytest.mark.parametrize("name", list(REP_BUILDERS))
def test_rho_is_a_homomorphism(G, name):
    rep = REP_BUILDERS[name](G)
    els = G.testing_elements()[:8]
    rg = rep.rho(els)
    prod = rep.rho(els[:, None] @ els[None, :])
    assert torch.allclose(prod, rg[:, None] @ rg[None, :], atol=1e-10, rtol=1e-10)
    eye = torch.eye(rep.size, dtype=torch.float64)
    assert torch.allclose(rep.rho(G.identity()), eye, atol=1e-12)
    assert torch.allclose(rep.rho(G.inverse(els)) @ rg, eye.expand_as(rg), atol=1e-9)


LIE_GROUPS = [g for g in ALL_GROUPS if g.dim > 0]


@pytest.mark.parametrize("G", LIE_GROUPS, ids=[repr(g) for g in LIE_GROUPS])
@pytest.mark.parametrize("name", list(REP_BUILDERS))
def test_drho_is_the_derivative_of_rho(G, name):
    rep = REP_BUILDERS[name](G)
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(3, G.dim, generator=gen, dtype=torch.float64)
    a = G.algebra_element(c)
    h = 1e-5
    fd = (rep.rho(G.exp(h * c)) - rep.rho(G.exp(-h * c))) / (2 * h)
    assert torch.allclose(rep.drho(a), fd, atol=1e-8, rtol=0)


def test_tensor_sum_dual_layouts():
    G = SO3()
    g = G.sample(2, torch.Generator().manual_seed(1))
    r = V(G) * V(G)
    assert torch.allclose(r.rho(g), torch.stack([torch.kron(x, x) for x in g]))
    s = 2 * V(G) + Scalar(G)
    assert isinstance(s, SumRep) and s.size == 7
    expected = torch.block_diag(g[0], g[0], torch.ones(1, 1, dtype=torch.float64))
    assert torch.allclose(s.rho(g[0]), expected)
    # Sums merge adjacent equal summands and flatten nesting.
    assert (V(G) + V(G)) == 2 * V(G)
    assert ((V(G) + Scalar(G)) + Scalar(G)).summands() == [(V(G), 1), (Scalar(G), 2)]
    # The dual of an orthogonal representation has the same matrices.
    assert torch.allclose(V(G).T.rho(g), g)
    assert V(G).T.T == V(G)
    assert (V(G) ** 3).size == 27


def test_dual_of_non_orthogonal_rep():
    from symprior.groups import SL2

    G = SL2()
    g = G.sample(3, torch.Generator().manual_seed(2))
    assert torch.allclose(V(G).T.rho(g), torch.linalg.inv(g).mT, atol=1e-12)
    # contraction of a vector with a covector is invariant
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    before = (x * y).sum(-1)
    after = (V(G).act(g, x) * V(G).T.act(g, y)).sum(-1)
    assert torch.allclose(before, after, atol=1e-12)


def test_act_applies_rho_on_the_last_axis_with_broadcasting():
    G = SO2()
    rep = 3 * V(G) + Scalar(G)
    gen = torch.Generator().manual_seed(5)
    g = G.sample(4, gen)
    x = torch.randn(4, rep.size, generator=gen, dtype=torch.float64)
    expected = torch.stack([rep.rho(g[i]) @ x[i] for i in range(4)])
    assert torch.allclose(rep.act(g, x), expected)
    # one element acting on a batch of points / trajectories (..., T, size)
    traj = torch.randn(2, 5, rep.size, generator=gen, dtype=torch.float32)
    out = rep.act(g[0], traj)
    assert out.dtype == torch.float32
    assert torch.allclose(out, traj @ rep.rho(g[0]).float().T, atol=1e-6)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="different groups"):
        V(SO2()) * V(SO3())
    with pytest.raises(ValueError, match="different groups"):
        V(SO2()) + Scalar(Permutation(3))
    with pytest.raises(ValueError, match="another group"):
        V(SO3()).rho(SO2().sample(1))
    with pytest.raises(ValueError, match="last dimension 3"):
        V(SO3()).act(SO3().sample(1)[0], torch.zeros(5, 2, dtype=torch.float64))
    with pytest.raises(TypeError):
        V("SO3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiplicities"):
        SumRep([(V(SO2()), -1)])
