import math

import pytest
import torch

from symprior.groups import (
    SE2,
    SL2,
    SO2,
    SO3,
    Affine2,
    Scaling,
    Translation,
    image_coordinates,
    transform_image,
)
from tests.conftest import DEVICES


def _images(shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


#: Bilinear interpolation errs by at most (1/8)(|phi_xx| + |phi_yy|) (unit pixels). For the
#: image of ``_smooth`` each second derivative is bounded by 2/40 + 0.5 * 2/30, so one
#: resampling errs by at most BILINEAR_BOUND.
BILINEAR_BOUND = (2 * (2 / 40 + 1 / 30)) / 8


def _smooth(h, w, dtype=torch.float64):
    """A smooth analytic image and the function it samples."""

    def phi(pts):
        x, y = pts[..., 0], pts[..., 1]
        return torch.exp(-((x - 2.0) ** 2 + (y + 1.0) ** 2) / 40.0) + 0.5 * torch.exp(
            -((x + 3.0) ** 2 + (y - 3.0) ** 2) / 30.0
        )

    return phi(image_coordinates(h, w, dtype=dtype)), phi


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("size", [5, 6])
def test_quarter_turns_equal_rot90_exactly(k, size):
    img = _images((2, 3, size, size))
    theta = torch.tensor([k * math.pi / 2], dtype=torch.float64)
    for G, g in (
        (SO2(), SO2().exp(theta)),
        (SE2(), SE2().exp(torch.cat([theta, torch.zeros(2, dtype=torch.float64)]))),
    ):
        out = transform_image(img, g, G)
        assert torch.equal(out, torch.rot90(img, k, dims=(-2, -1)))


@pytest.mark.parametrize("shift", [(1, 0), (0, 1), (-2, 3)])
def test_integer_shifts_equal_roll_with_circular_padding(shift):
    img = _images((2, 4, 7))
    g = Translation(2).exp(torch.tensor(shift, dtype=torch.float64))
    out = transform_image(img, g, Translation(2), padding="circular")
    # x to the right is +columns, y up is -rows
    assert torch.equal(out, torch.roll(img, shifts=(-shift[1], shift[0]), dims=(-2, -1)))
    zero = transform_image(img, g, Translation(2))
    mask = torch.roll(torch.ones(4, 7, dtype=torch.bool), shifts=(-shift[1], shift[0]), dims=(0, 1))
    valid = torch.ones(4, 7, dtype=torch.bool)
    if shift[0] > 0:
        valid[:, : shift[0]] = False
    if shift[0] < 0:
        valid[:, shift[0] :] = False
    if shift[1] > 0:
        valid[4 - shift[1] :, :] = False
    assert torch.equal(zero[..., valid], out[..., valid])
    assert bool((zero[..., ~valid] == 0).all())
    del mask


ELEMENTS = [
    ("SO2 30deg", SO2(), lambda: SO2().exp(torch.tensor([0.52], dtype=torch.float64))),
    ("SE2", SE2(), lambda: SE2().exp(torch.tensor([-1.1, 1.3, -0.7], dtype=torch.float64))),
    (
        "Scaling x1.3",
        Scaling(2),
        lambda: Scaling(2).exp(torch.tensor([math.log(1.3)], dtype=torch.float64)),
    ),
    (
        "Translation",
        Translation(2),
        lambda: Translation(2).exp(torch.tensor([0.4, -1.6], dtype=torch.float64)),
    ),
    (
        "Affine2",
        Affine2(),
        lambda: Affine2().exp(
            torch.tensor([0.5, 0.1, -0.2, -0.3, 0.15, -0.05], dtype=torch.float64)
        ),
    ),
    ("SL2", SL2(), lambda: SL2().exp(torch.tensor([0.1, 0.2, -0.1], dtype=torch.float64))),
]


@pytest.mark.parametrize(("G", "make"), [e[1:] for e in ELEMENTS], ids=[e[0] for e in ELEMENTS])
def test_action_matches_analytic_resampling(G, make):
    """transform_image(phi) = phi o g^-1 up to bilinear interpolation error (h^2 |phi''| / 8)."""
    h = w = 25
    img, phi = _smooth(h, w)
    g = make()
    out = transform_image(img, g, G)
    pts = image_coordinates(h, w).reshape(-1, 2)
    ginv = torch.linalg.inv(g)
    lin, off = (
        (ginv, torch.zeros(2, dtype=torch.float64))
        if g.shape[-1] == 2
        else (ginv[:2, :2], ginv[:2, 2])
    )
    src = pts @ lin.T + off
    inside = (src.abs() <= (h - 1) / 2).all(-1).reshape(h, w)
    expected = phi(src.reshape(h, w, 2))
    assert int(inside.sum()) > 200
    assert float((out - expected)[inside].abs().max()) < BILINEAR_BOUND


def test_rotate_and_back_restores_inscribed_disk():
    h = w = 29
    img, _ = _smooth(h, w)
    G = SO2()
    for theta in (0.3, 1.0, 2.5):
        g = G.exp(torch.tensor([theta], dtype=torch.float64))
        back = transform_image(transform_image(img, g, G), G.inverse(g), G)
        r = image_coordinates(h, w).norm(dim=-1)
        disk = r <= (h - 1) / 2 - 2
        assert float((back - img)[disk].abs().max()) < 2 * BILINEAR_BOUND


def test_action_of_product_is_composition():
    img = _images((3, 8, 8), seed=1)
    G = SE2()
    # exact: quarter turns and integer shifts with circular padding compose exactly
    a = SE2().exp(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    b = torch.eye(3, dtype=torch.float64)
    b[:2, 2] = torch.tensor([2.0, -1.0], dtype=torch.float64)
    for g, h in ((a, b), (b, a), (a @ a, b)):
        left = transform_image(img, g @ h, G, padding="circular")
        right = transform_image(
            transform_image(img, h, G, padding="circular"), g, G, padding="circular"
        )
        assert torch.equal(left, right)
    # approximate: general angles compose up to interpolation error on smooth images
    smooth, _ = _smooth(25, 25)
    g = SO2().exp(torch.tensor([0.4], dtype=torch.float64))
    h = SO2().exp(torch.tensor([0.7], dtype=torch.float64))
    left = transform_image(smooth, g @ h, SO2())
    right = transform_image(transform_image(smooth, h, SO2()), g, SO2())
    disk = image_coordinates(25, 25).norm(dim=-1) <= 10
    assert float((left - right)[disk].abs().max()) < 3 * BILINEAR_BOUND


@pytest.mark.parametrize("device", DEVICES)
def test_batched_elements_and_dtype_device(device):
    img = _images((4, 2, 6, 6), dtype=torch.float32).to(device)
    ks = [0, 1, 2, 3]
    g = SO2().exp(torch.tensor([[k * math.pi / 2] for k in ks], dtype=torch.float64))
    out = transform_image(img, g, SO2())
    assert out.dtype == torch.float32 and out.device.type == device
    for i, k in enumerate(ks):
        assert torch.equal(out[i], torch.rot90(img[i], k, dims=(-2, -1)))


def test_gradients_flow_through_the_image():
    img = _images((1, 7, 7)).requires_grad_(True)
    g = SO2().exp(torch.tensor([0.3], dtype=torch.float64))
    out = transform_image(img, g)
    weights = _images((1, 7, 7), seed=5)
    (out * weights).sum().backward()
    # the map is linear in the image, so the gradient is its transpose applied to `weights`
    basis = torch.eye(49, dtype=torch.float64).reshape(49, 1, 7, 7)
    matrix = transform_image(basis, g).reshape(49, 49)  # row i = image of e_i
    assert torch.allclose(img.grad.reshape(-1), matrix @ weights.reshape(-1), atol=1e-12)


def test_bad_input_errors():
    img = torch.zeros(5, 5)
    with pytest.raises(ValueError, match="planar groups"):
        transform_image(img, torch.eye(3, dtype=torch.float64), SO3())
    with pytest.raises(ValueError, match="padding"):
        transform_image(img, torch.eye(2), padding="reflect")
    with pytest.raises(ValueError, match="2x2 linear or 3x3 homogeneous"):
        transform_image(img, torch.eye(4))
    with pytest.raises(ValueError, match="another group"):
        transform_image(img, torch.eye(2), SE2())
    with pytest.raises(ValueError, match="leading axis"):
        transform_image(torch.zeros(3, 5, 5), torch.eye(2).expand(2, 2, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        transform_image(torch.zeros(5), torch.eye(2))
