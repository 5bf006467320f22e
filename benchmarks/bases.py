"""Basis construction time (issue: foundation).

Each case is timed cold (cache cleared) and compared in the same process with the baseline that
EMLP's plain method would use: one dense SVD of the stacked constraint matrix of the whole
representation pair. Run: ``.venv/bin/python benchmarks/bases.py``.
"""

from __future__ import annotations

from _common import machine, median_time

from symprior.groups import SO2, SO3, Scalar, V, _basis, equivariant_basis_blocks


def cold_blockwise(rep_in, rep_out):
    _basis._block_basis_cached.cache_clear()
    _basis._blocks_cached.cache_clear()
    return equivariant_basis_blocks(rep_in, rep_out)


def dense_whole(rep_in, rep_out):
    ops = _basis._generators(rep_in, rep_out)
    return _basis._nullspace_dense(ops, rep_out.size, rep_in.size)


def main() -> None:
    print(machine())
    G3, G2 = SO3(), SO2()
    r3 = V(G3) ** 3
    cases = [
        ("SO(3) V⊗V⊗V -> V⊗V⊗V (729 unknowns)", r3, r3, True),
        (
            "SO(3) 8V+8S -> 8V+8S (1024 unknowns)",
            8 * V(G3) + 8 * Scalar(G3),
            8 * V(G3) + 8 * Scalar(G3),
            True,
        ),
        (
            "SO(2) 96V+64S -> 96V+64S (RPP hidden, 256 ch)",
            96 * V(G2) + 64 * Scalar(G2),
            96 * V(G2) + 64 * Scalar(G2),
            False,
        ),
        (
            "SO(3) 64V+64S -> 64V+64S (RPP hidden, 256 ch)",
            64 * V(G3) + 64 * Scalar(G3),
            64 * V(G3) + 64 * Scalar(G3),
            False,
        ),
    ]
    print(f"{'case':50s} {'symprior (s)':>13s} {'dense SVD (s)':>14s} {'ratio':>8s}")
    for name, rep_in, rep_out, with_dense in cases:
        t_ours = median_time(lambda a=rep_in, b=rep_out: cold_blockwise(a, b), repeats=3, warmup=0)
        if with_dense:
            t_dense = median_time(
                lambda a=rep_in, b=rep_out: dense_whole(a, b), repeats=3, warmup=0
            )
            print(f"{name:50s} {t_ours:13.4f} {t_dense:14.4f} {t_ours / t_dense:8.3f}")
        else:
            print(f"{name:50s} {t_ours:13.4f} {'(infeasible)':>14s} {'-':>8s}")


if __name__ == "__main__":
    main()
