import math

import pytest
import torch

from symprior.groups import (
    O2,
    O3,
    SL2,
    SO2,
    SO3,
    Cyclic,
    Dihedral,
    Permutation,
    Scalar,
    V,
    _basis,
    equivariant_basis,
    equivariant_basis_blocks,
)
from symprior.groups._basis import BlockBasis
from tests.conftest import ALL_GROUPS, DEVICES, GROUP_IDS


def _constraint_error(q, rep_in, rep_out, G):
    w = q.T.reshape(-1, rep_out.size, rep_in.size)
    g = G.testing_elements()
    lhs = rep_out.rho(g)[:, None] @ w[None]
    rhs = w[None] @ rep_in.rho(g)[:, None]
    return float((lhs - rhs).abs().max()) if q.numel() else 0.0


KNOWN_DIMENSIONS = [
    ("SO2 V->V", SO2(), lambda G: (V(G), V(G)), 2),
    ("SO2 VxV->S", SO2(), lambda G: (V(G) * V(G), Scalar(G)), 2),
    ("O2 VxV->S", O2(), lambda G: (V(G) * V(G), Scalar(G)), 1),
    ("O2 V->V", O2(), lambda G: (V(G), V(G)), 1),
    ("SO3 V->V", SO3(), lambda G: (V(G), V(G)), 1),
    ("SO3 VxV->V (cross product)", SO3(), lambda G: (V(G) * V(G), V(G)), 1),
    ("SO3 VxV->S", SO3(), lambda G: (V(G) * V(G), Scalar(G)), 1),
    ("SO3 VxVxV->VxVxV", SO3(), lambda G: (V(G) ** 3, V(G) ** 3), 15),
    ("O3 VxV->V", O3(), lambda G: (V(G) * V(G), V(G)), 0),
    ("O3 VxV->S", O3(), lambda G: (V(G) * V(G), Scalar(G)), 1),
    ("S3 V->V", Permutation(3), lambda G: (V(G), V(G)), 2),
    ("S5 V->V", Permutation(5), lambda G: (V(G), V(G)), 2),
    ("S4 VxV->S", Permutation(4), lambda G: (V(G) * V(G), Scalar(G)), 2),
    ("S4 V->S", Permutation(4), lambda G: (V(G), Scalar(G)), 1),
    ("C4 V->V", Cyclic(4), lambda G: (V(G), V(G)), 2),
    ("C2 V->V", Cyclic(2), lambda G: (V(G), V(G)), 4),
    ("D4 V->V", Dihedral(4), lambda G: (V(G), V(G)), 1),
    ("D2 V->V", Dihedral(2), lambda G: (V(G), V(G)), 2),
    ("D4 VxV->VxV (four 1-d irreps)", Dihedral(4), lambda G: (V(G) * V(G), V(G) * V(G)), 4),
    ("SL2 V->V", SL2(), lambda G: (V(G), V(G)), 1),
    ("SL2 VxV->S (area form)", SL2(), lambda G: (V(G) * V(G), Scalar(G)), 1),
]


@pytest.mark.parametrize(
    ("G", "reps", "dim"), [c[1:] for c in KNOWN_DIMENSIONS], ids=[c[0] for c in KNOWN_DIMENSIONS]
)
def test_known_dimensions_constraints_and_orthonormality(G, reps, dim):
    rep_in, rep_out = reps(G)
    q = equivariant_basis(rep_in, rep_out)
    assert q.shape == (rep_out.size * rep_in.size, dim)
    assert _constraint_error(q, rep_in, rep_out, G) <= 1e-10
    assert torch.allclose(q.T @ q, torch.eye(dim, dtype=torch.float64), atol=1e-12)


def test_cross_product_is_recovered():
    G = SO3()
    q = equivariant_basis(V(G) * V(G), V(G))[:, 0].reshape(3, 3, 3)
    eps = torch.zeros(3, 3, 3, dtype=torch.float64)
    for i, j, k in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        eps[i, j, k] = eps[j, k, i] = eps[k, i, j] = 1.0
        eps[i, k, j] = eps[k, j, i] = eps[j, i, k] = -1.0
    # W[k, (i, j)] proportional to the Levi-Civita symbol eps_{ijk}
    expected = eps.permute(2, 0, 1) / eps.norm()
    assert torch.allclose(q.abs(), expected.abs(), atol=1e-12)
    assert torch.allclose(
        q / q.flatten()[5].sign(), expected / expected.flatten()[5].sign(), atol=1e-12
    )


@pytest.mark.parametrize("G", ALL_GROUPS, ids=GROUP_IDS)
def test_every_group_mixed_rep_basis_satisfies_constraints(G):
    rep_in = 2 * V(G) + Scalar(G)
    rep_out = V(G) * V(G).T + Scalar(G)
    q = equivariant_basis(rep_in, rep_out)
    assert _constraint_error(q, rep_in, rep_out, G) <= 1e-10
    assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize(
    ("G", "rep_in", "rep_out"),
    [
        (
            SO3(),
            3 * V(SO3()) + 2 * Scalar(SO3()),
            2 * V(SO3()) + Scalar(SO3()) + V(SO3()) * V(SO3()),
        ),
        (Permutation(3), V(Permutation(3)) + Scalar(Permutation(3)), 2 * V(Permutation(3))),
        (O2(), 2 * V(O2()) + Scalar(O2()), V(O2()) * V(O2()) + Scalar(O2())),
    ],
    ids=["SO3", "S3", "O2"],
)
def test_blockwise_basis_spans_the_dense_nullspace(G, rep_in, rep_out):
    block = equivariant_basis(rep_in, rep_out)
    dense = _basis._nullspace_dense(_basis._generators(rep_in, rep_out), rep_out.size, rep_in.size)
    assert block.shape == dense.shape
    assert torch.allclose(block @ block.T, dense @ dense.T, atol=1e-10)


@pytest.mark.parametrize(
    ("G", "rep_in", "rep_out"),
    [
        (SO3(), (Scalar(SO3()) + V(SO3())) ** 2, V(SO3()) + Scalar(SO3())),
        (O2(), (2 * V(O2()) + Scalar(O2())).T * V(O2()), (V(O2()) + Scalar(O2())) * V(O2())),
        (
            Permutation(3),
            V(Permutation(3)) + Scalar(Permutation(3)),
            (2 * Scalar(Permutation(3))) ** 2,
        ),
    ],
    ids=["SO3-square-of-sum", "O2-dual-sum-times-V", "S3-square-of-scalars"],
)
def test_tensor_products_of_sums_distribute_and_span_the_dense_nullspace(G, rep_in, rep_out):
    """A tensor product of direct sums is solved pair of pieces by pair of pieces, in Kronecker
    coordinates: the same space as one dense solve of the whole constraint system."""
    assert len(_basis._pieces(rep_in)) > 1 or len(_basis._pieces(rep_out)) > 1
    _basis._block_basis_cached.cache_clear()
    _basis._blocks_cached.cache_clear()
    block = equivariant_basis(rep_in, rep_out)
    dense = _basis._nullspace_dense(_basis._generators(rep_in, rep_out), rep_out.size, rep_in.size)
    assert block.shape == dense.shape
    assert torch.allclose(block @ block.T, dense @ dense.T, atol=1e-10)
    assert torch.allclose(
        block.T @ block, torch.eye(block.shape[1], dtype=torch.float64), atol=1e-12
    )


def test_quadratic_features_of_a_wide_sum_distribute():
    """(4S + 8V) + (4S + 8V)^2 -> 4V + 4S for SO(3) (the quadratic features of 4 bodies): one
    144 x 144 tensor-product block without distributing (a Krylov solve), 144 small pieces with."""
    G = SO3()
    first = 4 * Scalar(G) + 8 * V(G)
    rep_in, rep_out = first + first * first, 4 * V(G) + 4 * Scalar(G)
    q = equivariant_basis(rep_in, rep_out)
    # per output copy: S->S 4 + V->V 8 (linear); S(x)S 16 + V(x)V 64 to S; S(x)V 32 + V(x)S 32
    # + V(x)V 64 (cross product) to V
    assert q.shape == (rep_out.size * rep_in.size, 4 * (4 + 16 + 64) + 4 * (8 + 32 + 32 + 64))
    w = q.T.reshape(-1, rep_out.size, rep_in.size)
    for g in G.sample(3, torch.Generator().manual_seed(0)).double():
        lhs, rhs = rep_out.rho(g) @ w, w @ rep_in.rho(g)
        assert float((lhs - rhs).abs().max()) <= 1e-10
    assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-12)


def test_krylov_solver_agrees_with_dense_svd():
    G = SO3()
    r = V(G) ** 3
    ops = _basis._generators(r, r)
    dense = _basis._nullspace_dense(ops, r.size, r.size)
    krylov = _basis._nullspace_krylov(ops, r.size, r.size)
    assert dense.shape == krylov.shape == (729, 15)
    assert torch.allclose(dense @ dense.T, krylov @ krylov.T, atol=1e-10)
    # A finite group (discrete constraints only) through the same solver.
    D = Dihedral(4)
    r = V(D) * V(D) * V(D)
    ops = _basis._generators(r, r)
    dense = _basis._nullspace_dense(ops, r.size, r.size)
    krylov = _basis._nullspace_krylov(ops, r.size, r.size)
    assert torch.allclose(dense @ dense.T, krylov @ krylov.T, atol=1e-10)


def test_large_single_block_uses_krylov_and_is_exact():
    G = SO3()
    r = V(G) ** 4  # vec(W) has 6561 entries: above the dense limit
    assert r.size**2 > _basis.DENSE_LIMIT
    q = equivariant_basis(r, r)
    assert q.shape[1] == 91  # dim End(V^4) for SO(3): sum of squared multiplicities 3^2+6^2+3^2+1^2
    assert _constraint_error(q, r, r, G) <= 1e-10
    assert torch.allclose(q.T @ q, torch.eye(91, dtype=torch.float64), atol=1e-12)


def _sparse_kron(a, b):
    ia, ja = a.nonzero(as_tuple=True)
    ib, jb = b.nonzero(as_tuple=True)
    rows = (ia[:, None] * b.shape[0] + ib[None, :]).reshape(-1)
    cols = (ja[:, None] * b.shape[1] + jb[None, :]).reshape(-1)
    vals = (a[ia, ja][:, None] * b[ib, jb][None, :]).reshape(-1)
    shape = (a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])
    # Opt in explicitly (the global switch too): torch 2.11 warns when the switch was never set.
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape)


def test_wide_blockwise_basis_equals_group_average_projector():
    """50V+20S -> 30V+10S for SO(2), against the dense projector onto the equivariant maps.

    For representations whose frequencies are at most 2, averaging over the 5 rotations of C_5 is
    the exact Haar average, so P = (1/5) sum_g rho_out(g) (x) rho_in(g^-1)^T is the orthogonal
    projector onto Hom_G (the dense solution); the block basis Q spans its range iff P Q = Q and
    trace P = rank Q. Both products use the sparsity of the Kronecker factors only for speed.
    """
    G = SO2()
    rep_in = 50 * V(G) + 20 * Scalar(G)
    rep_out = 30 * V(G) + 10 * Scalar(G)
    q = equivariant_basis_blocks(rep_in, rep_out).dense()
    assert q.shape == (rep_out.size * rep_in.size, 50 * 30 * 2 + 20 * 10)
    q_sparse = q.to_sparse()  # exact conversion of a dense tensor
    gram = torch.sparse.mm(q_sparse.t(), q)
    assert torch.allclose(gram, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-12)
    els = SO2().exp(2 * math.pi * torch.arange(5, dtype=torch.float64)[:, None] / 5)
    pq = torch.zeros_like(q)
    trace = 0.0
    for g in els:
        ro, ri = rep_out.rho(g), rep_in.rho(g)
        # vec(rho_out W rho_in^-1) = (rho_out (x) rho_in) vec(W) for orthogonal rho_in
        pq += torch.sparse.mm(_sparse_kron(ro, ri), q) / 5
        trace += float(torch.trace(ro) * torch.trace(ri)) / 5
    assert torch.allclose(pq, q, atol=1e-12)
    assert round(trace) == q.shape[1]


def test_block_weight_matches_dense_basis():
    G = SO3()
    rep_in, rep_out = 2 * V(G) + Scalar(G), V(G) + 2 * Scalar(G) + V(G) * V(G)
    blocks = equivariant_basis_blocks(rep_in, rep_out)
    c = torch.randn(
        blocks.num_coeffs, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    expected = (blocks.dense() @ c).reshape(rep_out.size, rep_in.size)
    assert torch.allclose(blocks.weight(c), expected, atol=1e-13)


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("group", ["SO2", "SO3"])
def test_block_weight_and_its_gradient_match_dense_basis(shuffled, group):
    """Both assemblies of ``W``: band by band (the blocks as ``equivariant_basis_blocks`` lays
    them out, rank-0 blocks and bands of one block included) and block by block into place (any
    other order, here the blocks reversed); blocks formed row by row (SO(2)'s ``V``) and with
    one product (SO(3)'s ``V`` and ``V x V``); the gradient is ``Q^T`` applied to the output's."""
    G = SO2() if group == "SO2" else SO3()
    rep_in, rep_out = 3 * V(G) + 2 * Scalar(G), 2 * Scalar(G) + V(G)
    if group == "SO3":
        rep_out = rep_out + V(G) * V(G)
    blocks = equivariant_basis_blocks(rep_in, rep_out)
    assert blocks._bands == (((0, 2), (2, 4)) if group == "SO2" else ((0, 2), (2, 4), (4, 6)))
    if shuffled:  # the same basis with its blocks (and so its coefficients) in reverse order
        blocks = BlockBasis(rep_in, rep_out, blocks.blocks[::-1])
        assert blocks._bands is None
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(blocks.num_coeffs, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(rep_out.size, rep_in.size, generator=gen, dtype=torch.float64)
    dense = blocks.dense()
    w = blocks.weight(c)
    assert w.is_contiguous()
    assert torch.allclose(w, (dense @ c).reshape(w.shape), atol=1e-14)
    (grad,) = torch.autograd.grad(w, c, g)
    assert torch.allclose(grad, dense.t() @ g.reshape(-1), atol=1e-14)


def test_block_weight_with_no_equivariant_maps_is_zero():
    G = SO2()
    blocks = equivariant_basis_blocks(2 * Scalar(G), V(G))  # no invariant maps Scalar -> V
    w = blocks.weight(torch.zeros(0))
    assert torch.equal(w, torch.zeros(2, 2)) and w.is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
def test_cached_and_returned_on_requested_device_and_dtype(device):
    G = SO3()
    before = _basis._blocks_cached.cache_info().hits
    a = equivariant_basis(V(G) * V(G), V(G), dtype=torch.float32, device=device)
    b = equivariant_basis(V(G) * V(G), V(G))
    assert _basis._blocks_cached.cache_info().hits >= before + 1
    assert a.dtype == torch.float32 and a.device.type == device
    assert torch.allclose(a.cpu().double(), b, atol=1e-7)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="different groups"):
        equivariant_basis(V(SO2()), V(SO3()))
    with pytest.raises(TypeError, match="rep_in"):
        equivariant_basis("V", V(SO3()))  # type: ignore[arg-type]


# ------------------------------------------------------------------- dual representation as output
def _brute_force_nullity(rep_in, rep_out, G):
    """The dimension of the space of equivariant maps, by a slow reference: the constraint map
    ``W -> (M_out W - W M_in)`` for every generator is applied to each matrix unit ``E_ij``, the
    results stacked as the columns of one matrix, and its rank read off a full SVD."""
    n_out, n_in = rep_out.size, rep_in.size
    ops = [(rep_out.drho(a), rep_in.drho(a)) for a in G.lie_algebra]
    ops += [(rep_out.rho(h), rep_in.rho(h)) for h in G.discrete_generators]
    if not ops:
        return n_out * n_in
    columns = []
    for i in range(n_out):
        for j in range(n_in):
            e = torch.zeros(n_out, n_in, dtype=torch.float64)
            e[i, j] = 1.0
            columns.append(
                torch.cat(
                    [(m_out.double() @ e - e @ m_in.double()).flatten() for m_out, m_in in ops]
                )
            )
    s = torch.linalg.svd(torch.stack(columns, 1)).S
    rank = int((s > 1e-9 * max(1.0, float(s[0]))).sum())
    return n_out * n_in - rank


def _generator_constraint_error(q, rep_in, rep_out, G):
    """The largest entry of ``drho_out(A) W - W drho_in(A)`` over the Lie-algebra generators and
    of ``rho_out(h) W - W rho_in(h)`` over the discrete generators, for every basis matrix."""
    w = q.T.reshape(-1, rep_out.size, rep_in.size)
    err = 0.0
    ops = [(rep_out.drho(a), rep_in.drho(a)) for a in G.lie_algebra]
    ops += [(rep_out.rho(h), rep_in.rho(h)) for h in G.discrete_generators]
    for m_out, m_in in ops:
        if q.numel():
            err = max(err, float((m_out.double() @ w - w @ m_in.double()).abs().max()))
    return err


#: Known dimensions of Hom_G(V, V*), i.e. of the invariant bilinear forms on V: every rotation-
#: or reflection-invariant form on R^2 is a x I + b x J for SO(2) (J the rotation generator), the
#: symmetric a x I alone once a reflection is added; the Euclidean inner product for SO(3), O(3);
#: the area form for SL(2); none for the scalings, since s^-1 W = s W forces W = 0.
DUAL_KNOWN = {"SO2()": 2, "O2()": 1, "SO3()": 1, "O3()": 1, "SL2()": 1, "Scaling(2)": 0}


@pytest.mark.parametrize("G", ALL_GROUPS, ids=GROUP_IDS)
def test_basis_into_the_dual_rep_is_equivariant_and_complete(G):
    """``V -> V.T`` (whose matrices are transposes) satisfies every generator's constraint to
    1e-10, and spans the whole nullspace of the brute-force constraint matrix."""
    rep_in, rep_out = V(G), V(G).T
    for a in G.lie_algebra:  # the dual's Lie-algebra action is -A^T
        assert torch.allclose(rep_out.drho(a), -a.T)
    q = equivariant_basis(rep_in, rep_out)
    assert q.shape == (rep_out.size * rep_in.size, _brute_force_nullity(rep_in, rep_out, G))
    if repr(G) in DUAL_KNOWN:
        assert q.shape[1] == DUAL_KNOWN[repr(G)]
    assert _generator_constraint_error(q, rep_in, rep_out, G) <= 1e-10
    assert _constraint_error(q, rep_in, rep_out, G) <= 1e-10
    assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("G", [SO2(), O3(), SL2(), Dihedral(4)], ids=repr)
def test_basis_between_sums_with_duals_matches_brute_force(G):
    rep_in = V(G) + V(G).T + Scalar(G)
    rep_out = 2 * V(G).T + V(G)
    q = equivariant_basis(rep_in, rep_out)
    assert q.shape == (rep_out.size * rep_in.size, _brute_force_nullity(rep_in, rep_out, G))
    assert _generator_constraint_error(q, rep_in, rep_out, G) <= 1e-10


def test_dual_rep_matrices_are_contiguous():
    G = SO3()
    a = G.lie_algebra[0]
    g = G.sample(4, generator=torch.Generator().manual_seed(0))
    assert V(G).T.drho(a).is_contiguous() and V(G).T.rho(g).is_contiguous()
    assert torch.allclose(V(G).T.rho(g), torch.linalg.inv(g).mT)


@pytest.mark.parametrize("G", [SO2(), O2(), SO3(), SL2(), Dihedral(4)], ids=repr)
def test_equivariant_linear_into_the_dual_rep_is_equivariant(G):
    from symprior.nn import EquivariantLinear
    from symprior.testing import assert_equivariant

    rep_in, rep_out = V(G) + Scalar(G), V(G).T
    torch.manual_seed(0)
    layer = EquivariantLinear(rep_in, rep_out)
    assert layer.coeffs.numel() > 0
    x = torch.randn(6, rep_in.size, generator=torch.Generator().manual_seed(1))
    assert_equivariant(layer, G, x, rep_in=rep_in, rep_out=rep_out)
