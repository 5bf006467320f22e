r"""Checks of a layer's input against the layer: the same dtype and device as its parameters.

Without them a mismatch surfaces deep inside a product as a ``RuntimeError`` about ``mat1`` and
``mat2`` or an unexpected scalar type. With them the error says which argument is wrong and how
to fix it.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_device", "check_floating", "check_like_parameters"]


def check_floating(x: Tensor, name: str) -> None:
    r"""``TypeError`` unless ``x`` is a real floating-point tensor."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_like_parameters(x: Tensor, parameter: Tensor, name: str) -> None:
    r"""``TypeError`` unless ``x`` has ``parameter``'s dtype, ``ValueError`` unless it is on its
    device (``parameter`` stands for the layer's parameters, which share both)."""
    check_floating(x, name)
    if x.dtype != parameter.dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the layer's parameters are {parameter.dtype}: convert "
            f"the layer (layer.to({x.dtype})) or the input (.to({parameter.dtype}))"
        )
    check_device(x, parameter, name)


def check_device(x: Tensor, parameter: Tensor, name: str) -> None:
    r"""``ValueError`` unless ``x`` is on ``parameter``'s device."""
    if x.device != parameter.device:
        raise ValueError(
            f"{name} is on {x.device} but the layer's parameters are on {parameter.device}: move "
            f"the layer (layer.to('{x.device}')) or the input (.to('{parameter.device}'))"
        )
