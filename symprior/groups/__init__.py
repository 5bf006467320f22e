r"""Matrix Lie groups and finite groups, representations, equivariant bases and actions."""

from symprior.groups._basis import (
    BasisBlock,
    BlockBasis,
    equivariant_basis,
    equivariant_basis_blocks,
)
from symprior.groups._group import (
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
from symprior.groups._image import image_coordinates, transform_image
from symprior.groups._rep import DualRep, Rep, Scalar, SumRep, TensorRep, V

__all__ = [
    "O2",
    "O3",
    "SE2",
    "SL2",
    "SO2",
    "SO3",
    "Affine2",
    "BasisBlock",
    "BlockBasis",
    "Cyclic",
    "Dihedral",
    "DualRep",
    "Group",
    "LogUndefinedError",
    "MatrixGroup",
    "Permutation",
    "Rep",
    "Scalar",
    "Scaling",
    "SumRep",
    "TensorRep",
    "Translation",
    "V",
    "equivariant_basis",
    "equivariant_basis_blocks",
    "image_coordinates",
    "transform_image",
]
