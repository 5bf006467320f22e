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
    Permutation,
    Scaling,
    Translation,
)

#: Every shipped group, with readable ids (one list, EMLP-style).
ALL_GROUPS = [
    SO2(),
    O2(),
    SO3(),
    O3(),
    SE2(),
    Translation(2),
    Translation(3),
    Scaling(2),
    Affine2(),
    SL2(),
    Cyclic(4),
    Cyclic(5),
    Dihedral(3),
    Dihedral(4),
    Permutation(4),
]
GROUP_IDS = [repr(g) for g in ALL_GROUPS]

CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ],
)
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=ALL_GROUPS, ids=GROUP_IDS)
def group(request):
    return request.param
