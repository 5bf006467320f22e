r"""The ``symprior`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(_: argparse.Namespace) -> int:
    import torch

    from symprior.groups import O3, SO2, SO3, Permutation, Scalar, V, equivariant_basis

    torch.set_printoptions(precision=4, sci_mode=False)
    cases = [
        ("SO(2): V -> V", SO2(), lambda G: (V(G), V(G))),
        ("SO(3): V ⊗ V -> V", SO3(), lambda G: (V(G) * V(G), V(G))),
        ("SO(3): V ⊗ V -> Scalar", SO3(), lambda G: (V(G) * V(G), Scalar(G))),
        ("O(3): V ⊗ V -> V", O3(), lambda G: (V(G) * V(G), V(G))),
        ("S_4: V -> V", Permutation(4), lambda G: (V(G), V(G))),
    ]
    for title, G, reps in cases:
        rep_in, rep_out = reps(G)
        q = equivariant_basis(rep_in, rep_out)
        print(f"{title}: {q.shape[1]} basis element(s)")
        for j in range(q.shape[1]):
            w = q[:, j].reshape(rep_out.size, rep_in.size)
            w = w / w.abs().max()
            print(f"  W_{j} (scaled to max |entry| = 1) =\n{w}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    r"""Entry point of the ``symprior`` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="symprior", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print the equivariant bases of a few representations")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
