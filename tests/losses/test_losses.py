"""Tests for rndpo.losses: fused region preference losses against a naive full-image oracle."""

from __future__ import annotations

import copy
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from oracles import naive_preference_loss
from rndpo.losses import (
    PreferenceLoss,
    PreferenceLossOutput,
    loss_backend,
    preference_loss,
    set_loss_backend,
    sft_top_loss,
    supervised_anchor_loss,
)
from rndpo.losses._torch_loss import flat_nonzero  # the torch path's kernel module (like _triton_loss)

LOSS_TYPES = ["sigmoid", "ipo", "hinge", "robust", "cdpo"]
FIELDS = ["loss", "losses", "chosen_rewards", "rejected_rewards", "margins", "accuracies", "region_size"]


def _eps(loss_type: str) -> float:
    return 0.2 if loss_type in ("robust", "cdpo") else 0.0


def _pairs(
    gen: torch.Generator,
    batch: int,
    classes: int,
    spatial: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
    scale: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random policy/ref logits (B, C, *S) and chosen/rejected masks (B, *S) int64 (pair 0 has D empty
    when batch > 2)."""
    policy = (scale * torch.randn((batch, classes, *spatial), generator=gen, dtype=torch.float64)).to(dtype)
    ref = (scale * torch.randn((batch, classes, *spatial), generator=gen, dtype=torch.float64)).to(dtype)
    high = 2 if classes == 1 else classes
    chosen = torch.randint(0, high, (batch, *spatial), generator=gen)
    rejected = torch.randint(0, high, (batch, *spatial), generator=gen)
    if batch > 2:
        rejected[0] = chosen[0]
    return policy.requires_grad_(), ref, chosen, rejected


def _compare(out: PreferenceLossOutput, ref: dict[str, torch.Tensor], atol: float) -> None:
    for name in FIELDS:
        got, want = getattr(out, name), ref[name]
        assert got.shape == want.shape, name
        torch.testing.assert_close(got.double(), want.double(), atol=atol, rtol=0, msg=name)


# --- equality with the naive composition (values and gradients, float64) ---------------------------


@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("normalization", ["margin", "weight"])
@pytest.mark.parametrize("region_power", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_matches_naive_composition(
    loss_type: str, region_power: float, normalization: str, classes: int
) -> None:
    gen = torch.Generator().manual_seed(
        zlib.crc32(repr((loss_type, region_power, normalization, classes)).encode())
    )
    policy, ref, chosen, rejected = _pairs(gen, 4, classes, (7, 9), scale=0.3)
    kwargs = dict(
        beta=0.3,
        loss_type=loss_type,
        region_power=region_power,
        label_smoothing=_eps(loss_type),
        normalization=normalization,
    )
    out = preference_loss(policy, ref, chosen, rejected, **kwargs)
    want = naive_preference_loss(policy, ref, chosen, rejected, **kwargs)
    _compare(out, want, atol=1e-8)
    assert out.loss.dtype == torch.float64
    assert out.region_size.dtype == torch.int64
    (grad,) = torch.autograd.grad(out.loss, policy)
    (grad_want,) = torch.autograd.grad(want["loss"], policy)
    torch.testing.assert_close(grad, grad_want, atol=1e-8, rtol=0)
    assert float(grad.abs().sum()) > 0  # the comparison is not between two zero gradients


@pytest.mark.parametrize("classes", [1, 4])
def test_volumes_match_naive(classes: int) -> None:
    gen = torch.Generator().manual_seed(3)
    policy, ref, chosen, rejected = _pairs(gen, 3, classes, (3, 4, 5))
    out = preference_loss(policy, ref, chosen, rejected, beta=0.5)
    want = naive_preference_loss(policy, ref, chosen, rejected, beta=0.5)
    _compare(out, want, atol=1e-8)
    (grad,) = torch.autograd.grad(out.loss, policy)
    (grad_want,) = torch.autograd.grad(want["loss"], policy)
    torch.testing.assert_close(grad, grad_want, atol=1e-8, rtol=0)


@st.composite
def _cases(draw: st.DrawFn) -> tuple:
    batch = draw(st.integers(1, 3))
    classes = draw(st.sampled_from([1, 2, 3]))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    loss_type = draw(st.sampled_from(LOSS_TYPES))
    options = dict(
        beta=draw(st.floats(0.01, 5.0)),
        loss_type=loss_type,
        region_power=draw(st.floats(0.0, 2.0)),
        label_smoothing=draw(st.floats(0.0, 0.45)) if loss_type in ("robust", "cdpo") else 0.0,
        normalization=draw(st.sampled_from(["margin", "weight"])),
    )
    return batch, classes, spatial, seed, options


@settings(max_examples=40, deadline=None)
@given(_cases())
def test_property_matches_naive(case: tuple) -> None:
    batch, classes, spatial, seed, options = case
    policy, ref, chosen, rejected = _pairs(torch.Generator().manual_seed(seed), batch, classes, spatial)
    out = preference_loss(policy, ref, chosen, rejected, **options)
    want = naive_preference_loss(policy, ref, chosen, rejected, **options)
    _compare(out, want, atol=1e-8)
    (grad,) = torch.autograd.grad(out.loss, policy)
    (grad_want,) = torch.autograd.grad(want["loss"], policy)
    torch.testing.assert_close(grad, grad_want, atol=1e-8, rtol=0)


@settings(max_examples=25, deadline=None)
@given(_cases())
def test_property_swapping_pair_negates_margins(case: tuple) -> None:
    batch, classes, spatial, seed, options = case
    policy, ref, chosen, rejected = _pairs(torch.Generator().manual_seed(seed), batch, classes, spatial)
    a = preference_loss(policy, ref, chosen, rejected, **options)
    b = preference_loss(policy, ref, rejected, chosen, **options)
    torch.testing.assert_close(b.margins, -a.margins, atol=1e-10, rtol=0)
    torch.testing.assert_close(b.chosen_rewards, a.rejected_rewards, atol=1e-10, rtol=0)
    torch.testing.assert_close(b.rejected_rewards, a.chosen_rewards, atol=1e-10, rtol=0)
    torch.testing.assert_close(a.margins, a.chosen_rewards - a.rejected_rewards, atol=1e-10, rtol=0)
    assert torch.equal(a.region_size, b.region_size)


# --- autograd -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "loss_type", "region_power", "normalization"),
    [
        (1, "sigmoid", 1.0, "margin"),
        (1, "ipo", 0.5, "weight"),
        (1, "robust", 0.0, "margin"),
        (3, "sigmoid", 1.0, "margin"),
        (3, "cdpo", 0.5, "weight"),
        (2, "hinge", 1.0, "margin"),
    ],
)
def test_gradcheck(classes: int, loss_type: str, region_power: float, normalization: str) -> None:
    gen = torch.Generator().manual_seed(11)
    policy, ref, chosen, rejected = _pairs(gen, 3, classes, (3, 4))
    policy = (0.3 * policy.detach()).requires_grad_()
    ref = (0.3 * ref).requires_grad_()
    options = dict(
        beta=0.7,
        loss_type=loss_type,
        region_power=region_power,
        label_smoothing=_eps(loss_type),
        normalization=normalization,
    )

    def fn(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return preference_loss(p, r, chosen, rejected, **options).losses

    assert torch.autograd.gradcheck(fn, (policy, ref), eps=1e-6, atol=1e-7)


def test_closed_form_gradient_and_ref_gradient() -> None:
    # dL/dz_i = dL/dh * beta * (2 y_w,i - 1) / |D|^p on D, 0 elsewhere; dL/dz_ref = -dL/dz
    gen = torch.Generator().manual_seed(5)
    policy, ref, chosen, rejected = _pairs(gen, 1, 1, (6, 6))
    ref.requires_grad_()
    beta, p = 0.8, 0.5
    out = preference_loss(policy, ref, chosen, rejected, beta=beta, region_power=p)
    grad, grad_ref = torch.autograd.grad(out.loss, (policy, ref))
    region = chosen != rejected
    n = int(region.sum())
    h = float(out.margins[0])
    dldh = -1.0 / (1.0 + math.exp(h))  # d(-logsigmoid(h))/dh = -sigmoid(-h)
    want = (dldh * beta / n**p) * (2.0 * chosen.double() - 1.0) * region
    torch.testing.assert_close(grad[:, 0], want, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_ref, -grad, atol=0, rtol=0)


def test_saves_no_per_pixel_float_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    policy, ref, chosen, rejected = _pairs(gen, 2, 1, (32, 32), dtype=torch.float32)
    chosen, rejected = chosen.bool(), rejected.bool()
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = preference_loss(policy, ref, chosen, rejected, beta=0.5)
    out.loss.backward()
    pixels = chosen.numel()
    region = int((chosen != rejected).sum())
    masks = {chosen.data_ptr(), rejected.data_ptr()}
    # per-pixel tensors saved are the caller's masks themselves (no copies); the rest is |D|- or B-sized
    assert all(t.data_ptr() in masks for t in saved if t.numel() >= pixels)
    assert sum(t.numel() for t in saved if t.data_ptr() not in masks) <= region + 64
    assert not any(t.is_floating_point() and t.numel() >= region for t in saved)
    # the naive composition, by contrast, saves several per-pixel float tensors
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive_preference_loss(policy, ref, chosen, rejected, beta=0.5)
    assert len([t for t in saved if t.is_floating_point() and t.numel() >= pixels]) >= 2


def _assert_exact_region(chosen: torch.Tensor, rejected: torch.Tensor, seed: int) -> None:
    """|D|, the margins and the gradient's support of preference_loss are exactly those of D = chosen !=
    rejected (chosen, rejected (B, L) bool): integer logits make every sum exact in float64, and IPO with
    region_power 0 gives the gradient 2 (m - 1/2) (2 y_w - 1) / #pairs on D, never 0 for integer m."""
    gen = torch.Generator().manual_seed(seed)
    region = chosen != rejected
    policy = torch.randint(-8, 9, (chosen.shape[0], 1, chosen.shape[1]), generator=gen)
    policy = policy.double().requires_grad_()
    out = preference_loss(
        policy, torch.zeros_like(policy), chosen, rejected, beta=1.0, loss_type="ipo", region_power=0.0
    )
    assert torch.equal(out.region_size, region.sum(1))
    sign = chosen.double() * 2 - 1
    assert torch.equal(out.margins, (sign * policy.detach()[:, 0] * region).sum(1))
    if bool(region.any()):
        (grad,) = torch.autograd.grad(out.loss, policy)
        assert torch.equal(grad[:, 0] != 0, region)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 2000),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_region_is_exactly_the_disagreement_pixels(
    batch: int, length: int, density: float, seed: int
) -> None:
    # any size (multiples of 8 or not, below and above 1024 pixels), sparse to dense regions: the scan for D
    # reads the mask eight bytes at a time where it can
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.rand(batch, length, generator=gen) < 0.5
    flip = torch.rand(batch, length, generator=gen) < density * density  # often sparse
    _assert_exact_region(chosen, chosen ^ flip, seed)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.3, 1.0])
def test_region_is_exact_on_the_word_scan(density: float) -> None:
    # 2 x 8192 pixels: the eight-bytes-at-a-time scan of D (sparse) or the plain one (dense)
    gen = torch.Generator().manual_seed(1)
    chosen = torch.rand(2, 8 * 1024, generator=gen) < 0.5
    flip = torch.rand(2, 8 * 1024, generator=gen) < density
    flip[0, 4000:4100] = density > 0  # a clustered run, like a boundary band
    flip[1, 8150:8192] = density > 0  # a run up to the end of the last pair
    _assert_exact_region(chosen, chosen ^ flip, 2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 5000),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
    st.integers(0, 9),
)
def test_flat_nonzero_matches_nonzero(length: int, density: float, seed: int, offset: int) -> None:
    # the sorted order matters too: the per-pair sums accumulate in it, so the figures are bit-stable
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(length + offset, generator=gen) < density * density  # often sparse
    mask = base[offset:]  # storage offsets that are not multiples of 8 take the plain path
    torch.testing.assert_close(flat_nonzero(mask), mask.nonzero().squeeze(1), atol=0, rtol=0)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.3, 1.0])
def test_flat_nonzero_word_path(density: float) -> None:
    mask = torch.rand(16 * 1024, generator=torch.Generator().manual_seed(1)) < density
    mask[4000:4100] = density > 0  # a clustered run, like a boundary band
    torch.testing.assert_close(flat_nonzero(mask), mask.nonzero().squeeze(1), atol=0, rtol=0)


def test_large_finite_logits_are_accepted() -> None:
    # the float32 sum overflows, yet every value is finite: no error
    policy = torch.full((2, 1, 8, 8), 3e38, requires_grad=True)
    chosen = torch.zeros(2, 8, 8, dtype=torch.bool)
    out = preference_loss(policy, policy.detach().clone(), chosen, ~chosen, beta=0.5)
    assert out.loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


# --- binary == two-class, closed forms, empty regions ---------------------------------------------


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_binary_equals_two_class(loss_type: str) -> None:
    gen = torch.Generator().manual_seed(2)
    policy, ref, chosen, rejected = _pairs(gen, 3, 1, (5, 6))
    policy2 = torch.cat([torch.zeros_like(policy), policy], dim=1)  # softmax([0, z])[1] = sigmoid(z)
    ref2 = torch.cat([torch.zeros_like(ref), ref], dim=1)
    options = dict(beta=0.4, loss_type=loss_type, label_smoothing=_eps(loss_type))
    a = preference_loss(policy, ref, chosen, rejected, **options)
    b = preference_loss(policy2, ref2, chosen, rejected, **options)
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-12, rtol=0)
    (ga,) = torch.autograd.grad(a.loss, policy)
    (gb,) = torch.autograd.grad(b.loss, policy)
    torch.testing.assert_close(ga, gb, atol=1e-12, rtol=0)


def _one_region(n: int, delta: float, z: float = 0.4) -> tuple[torch.Tensor, ...]:
    """One pair, 4x4, D = the first n pixels (chosen 1, rejected 0) with z - z_ref = delta there."""
    policy = torch.full((1, 1, 4, 4), z, dtype=torch.float64)
    ref = policy - delta
    chosen = torch.zeros(1, 4, 4, dtype=torch.uint8)
    chosen.view(-1)[:n] = 1
    return policy.requires_grad_(), ref, chosen, torch.zeros_like(chosen)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.mark.parametrize(
    ("loss_type", "region_power", "normalization", "expected"),
    [
        # n = 5 pixels, delta = 0.3, beta = 0.5: m = 1.5
        ("sigmoid", 1.0, "margin", -_logsig(0.5 * 0.3)),
        ("sigmoid", 0.0, "margin", -_logsig(0.5 * 1.5)),
        ("sigmoid", 0.5, "margin", -_logsig(0.5 * 1.5 / math.sqrt(5))),
        ("sigmoid", 1.0, "weight", -_logsig(0.5 * 1.5) / 5),
        ("ipo", 1.0, "margin", (0.3 - 1.0) ** 2),
        ("ipo", 0.0, "margin", (1.5 - 1.0) ** 2),
        ("ipo", 1.0, "weight", (1.5 - 1.0) ** 2 / 5),
        ("hinge", 1.0, "margin", 1.0 - 0.15),
        ("hinge", 0.0, "margin", 0.25),
        ("robust", 1.0, "margin", (-0.9 * _logsig(0.15) + 0.1 * _logsig(-0.15)) / 0.8),
        ("cdpo", 1.0, "margin", -0.9 * _logsig(0.15) - 0.1 * _logsig(-0.15)),
    ],
)
def test_closed_form_values(loss_type: str, region_power: float, normalization: str, expected: float) -> None:
    policy, ref, chosen, rejected = _one_region(5, 0.3)
    eps = 0.1 if loss_type in ("robust", "cdpo") else 0.0
    out = preference_loss(
        policy,
        ref,
        chosen,
        rejected,
        beta=0.5,
        loss_type=loss_type,
        region_power=region_power,
        label_smoothing=eps,
        normalization=normalization,
    )
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert out.region_size.tolist() == [5]


def test_one_pixel_rewards() -> None:
    policy, ref, chosen, rejected = _one_region(1, 0.7, z=-0.2)
    out = preference_loss(policy, ref, chosen, rejected, beta=2.0)
    # chosen label 1 on D: log p = logsigmoid(z); rejected label 0: log p = logsigmoid(-z)
    assert out.chosen_rewards.item() == pytest.approx(2.0 * (_logsig(-0.2) - _logsig(-0.9)), abs=1e-12)
    assert out.rejected_rewards.item() == pytest.approx(2.0 * (_logsig(0.2) - _logsig(0.9)), abs=1e-12)
    assert out.margins.item() == pytest.approx(1.4, abs=1e-12)
    assert out.accuracies.tolist() == [1.0]
    assert out.chosen_rewards.grad_fn is None and out.margins.grad_fn is None


def test_empty_regions_are_left_out_with_zero_gradient() -> None:
    gen = torch.Generator().manual_seed(9)
    policy, ref, chosen, rejected = _pairs(gen, 4, 1, (5, 5))
    rejected[2] = chosen[2]  # pairs 0 and 2 have |D| = 0
    out = preference_loss(policy, ref, chosen, rejected, beta=0.5)
    assert out.region_size[[0, 2]].tolist() == [0, 0]
    assert out.losses[[0, 2]].tolist() == [0.0, 0.0]
    keep = [1, 3]
    sub = preference_loss(policy[keep], ref[keep], chosen[keep], rejected[keep], beta=0.5)
    assert out.loss.item() == pytest.approx(sub.loss.item(), abs=1e-12)
    (grad,) = torch.autograd.grad(out.loss, policy)
    assert torch.all(grad[[0, 2]] == 0)
    assert torch.all(torch.isfinite(grad))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("normalization", ["margin", "weight"])
def test_only_empty_regions_give_exact_zero(loss_type: str, normalization: str) -> None:
    policy = torch.randn(3, 1, 4, 4, requires_grad=True)
    chosen = torch.randint(0, 2, (3, 4, 4), dtype=torch.uint8)
    out = preference_loss(
        policy,
        torch.randn(3, 1, 4, 4),
        chosen,
        chosen.clone(),
        beta=0.5,
        loss_type=loss_type,
        label_smoothing=_eps(loss_type),
        normalization=normalization,
    )
    assert out.loss.item() == 0.0
    assert out.loss.grad_fn is not None
    out.loss.backward()
    assert policy.grad is not None and torch.all(policy.grad == 0)


def test_empty_batch() -> None:
    out = preference_loss(
        torch.zeros(0, 1, 4, 4, requires_grad=True),
        torch.zeros(0, 1, 4, 4),
        torch.zeros(0, 4, 4, dtype=torch.bool),
        torch.zeros(0, 4, 4, dtype=torch.bool),
        beta=1.0,
    )
    assert out.loss.item() == 0.0 and out.losses.shape == (0,)


# --- eval-mode scoring: ln 2 at step 0 --------------------------------------------------------------


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.5), nn.Conv2d(4, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_step_zero_is_ln2_in_eval_mode() -> None:
    torch.manual_seed(0)
    ref_model = _TinyNet()
    ref_model.train()
    ref_model(torch.randn(8, 1, 16, 16))  # give batch norm non-trivial running statistics
    policy_model = copy.deepcopy(ref_model)
    images = torch.randn(4, 1, 16, 16)
    chosen = torch.rand(4, 16, 16) > 0.5
    rejected = torch.rand(4, 16, 16) > 0.5
    ref_model.eval()
    policy_model.eval()
    with torch.no_grad():
        ref_logits = ref_model(images)
    out = preference_loss(policy_model(images), ref_logits, chosen, rejected, beta=0.5)
    assert torch.all(out.margins == 0)
    assert out.loss.item() == pytest.approx(math.log(2.0), rel=1e-7)
    # in train mode (dropout on, batch statistics) the same copy does not reproduce the reference
    policy_model.train()
    out_train = preference_loss(policy_model(images), ref_logits, chosen, rejected, beta=0.5)
    assert abs(out_train.loss.item() - math.log(2.0)) > 1e-4


# --- dtypes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [1, 3])
def test_bfloat16_policy_accumulates_in_float32(classes: int) -> None:
    gen = torch.Generator().manual_seed(4)
    policy, ref, chosen, rejected = _pairs(gen, 3, classes, (16, 16), dtype=torch.float32)
    policy_bf16 = policy.detach().to(torch.bfloat16).requires_grad_()
    out = preference_loss(policy_bf16, ref, chosen, rejected, beta=0.5, region_power=0.0)
    assert out.loss.dtype == torch.float32 and out.margins.dtype == torch.float32
    exact = policy_bf16.detach().double().requires_grad_()  # same values, float64
    want = naive_preference_loss(exact, ref.double(), chosen, rejected, beta=0.5, region_power=0.0)
    _compare(out, want, atol=1e-4)
    out.loss.backward()
    (grad_want,) = torch.autograd.grad(want["loss"], exact)
    assert policy_bf16.grad is not None and policy_bf16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(policy_bf16.grad.double(), grad_want, atol=1e-4, rtol=1e-2)


def test_float16_reference_is_cast_inside() -> None:
    gen = torch.Generator().manual_seed(6)
    policy, ref, chosen, rejected = _pairs(gen, 2, 1, (8, 8), dtype=torch.float32)
    ref16 = ref.to(torch.float16)
    out = preference_loss(policy, ref16, chosen, rejected, beta=0.5)
    want = preference_loss(policy, ref16.float(), chosen, rejected, beta=0.5)
    _compare(out, {name: getattr(want, name) for name in FIELDS}, atol=0)
    assert out.loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(out.loss, policy)
    assert grad.dtype == torch.float32


def test_float64_reference_promotes_accumulation() -> None:
    gen = torch.Generator().manual_seed(6)
    policy, ref, chosen, rejected = _pairs(gen, 2, 1, (4, 4), dtype=torch.float32)
    out = preference_loss(policy, ref.double(), chosen, rejected, beta=0.5)
    assert out.loss.dtype == torch.float64
    (grad,) = torch.autograd.grad(out.loss, policy)
    assert grad.dtype == torch.float32


def test_noncontiguous_logits() -> None:
    gen = torch.Generator().manual_seed(8)
    policy, ref, chosen, rejected = _pairs(gen, 2, 3, (5, 6))
    policy_t = policy.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    assert not policy_t.is_contiguous()
    a = preference_loss(policy_t, ref, chosen, rejected, beta=0.5)
    want = naive_preference_loss(policy_t, ref, chosen, rejected, beta=0.5)
    _compare(a, want, atol=1e-10)
    (grad,) = torch.autograd.grad(a.loss, policy_t)
    (grad_want,) = torch.autograd.grad(want["loss"], policy_t)
    torch.testing.assert_close(grad, grad_want, atol=1e-10, rtol=0)


# --- module wrapper ------------------------------------------------------------------------------


def test_module_wrapper_matches_function() -> None:
    gen = torch.Generator().manual_seed(1)
    policy, ref, chosen, rejected = _pairs(gen, 3, 1, (6, 6))
    module = PreferenceLoss(beta=0.3, loss_type="robust", region_power=0.5, label_smoothing=0.1)
    a = module(policy, ref, chosen, rejected)
    b = preference_loss(
        policy, ref, chosen, rejected, beta=0.3, loss_type="robust", region_power=0.5, label_smoothing=0.1
    )
    assert isinstance(a, PreferenceLossOutput)
    assert torch.equal(a.losses, b.losses)
    assert "loss_type='robust'" in repr(module)
    with pytest.raises(ValueError, match="beta must be > 0"):
        PreferenceLoss(beta=0.0)
    with pytest.raises(AttributeError):
        a.loss = b.loss  # type: ignore[misc]  # frozen result


# --- bad input -----------------------------------------------------------------------------------


def _good() -> dict:
    return dict(
        policy_logits=torch.zeros(2, 1, 4, 4),
        ref_logits=torch.zeros(2, 1, 4, 4),
        chosen=torch.zeros(2, 4, 4, dtype=torch.uint8),
        rejected=torch.ones(2, 4, 4, dtype=torch.uint8),
        beta=0.5,
    )


def _with(**changes: object) -> dict:
    args = _good()
    args.update(changes)
    return args


def _nan_logits() -> torch.Tensor:
    z = torch.zeros(2, 1, 4, 4)
    z[1, 0, 2, 2] = float("nan")
    return z


BAD_INPUTS = [
    (_with(beta=0.0), ValueError, r"beta must be > 0, got 0.0"),
    (_with(beta=float("inf")), ValueError, r"beta must be finite"),
    (_with(region_power=-1.0), ValueError, r"region_power must be >= 0, got -1.0"),
    (
        _with(label_smoothing=0.5, loss_type="robust"),
        ValueError,
        r"label_smoothing must be in \[0, 0.5\), got 0.5",
    ),
    (_with(label_smoothing=0.1), ValueError, r"label_smoothing is only used by loss_type 'robust' or 'cdpo'"),
    (
        _with(loss_type="kto"),
        ValueError,
        r"loss_type must be one of 'sigmoid', 'ipo', 'hinge', 'robust', 'cdpo'",
    ),
    (_with(normalization="mean"), ValueError, r"normalization must be one of 'margin', 'weight', got 'mean'"),
    (_with(beta="0.5"), TypeError, r"beta must be a float, got str"),
    (_with(policy_logits=torch.zeros(2, 16)), ValueError, r"policy_logits must have shape \(B, C, \*S\)"),
    (_with(policy_logits=[0.0]), TypeError, r"policy_logits must be a torch.Tensor, got list"),
    (
        _with(policy_logits=torch.zeros(2, 1, 4, 4, dtype=torch.int32)),
        TypeError,
        r"policy_logits must be a float",
    ),
    (
        _with(ref_logits=torch.zeros(2, 1, 4, 5)),
        ValueError,
        r"ref_logits must have the shape of policy_logits \(B, C, \*S\) = \(2, 1, 4, 4\), got \(2, 1, 4, 5\)",
    ),
    (
        _with(chosen=torch.zeros(2, 4, 5, dtype=torch.uint8)),
        ValueError,
        r"chosen must have shape \(B, \*S\) = \(2, 4, 4\)",
    ),
    (
        _with(rejected=torch.zeros(3, 4, 4, dtype=torch.uint8)),
        ValueError,
        r"rejected must have shape .* got \(3, 4, 4\)",
    ),
    (
        _with(chosen=torch.zeros(2, 4, 4)),
        TypeError,
        r"chosen must be a bool or integer tensor, got torch.float32",
    ),
    (
        _with(chosen=torch.full((2, 4, 4), 2, dtype=torch.uint8)),
        ValueError,
        r"chosen must be binary \(values in \{0, 1\}\) .* got values in \[2, 2\]",
    ),
    (
        _with(rejected=torch.full((2, 4, 4), -1)),
        ValueError,
        r"rejected must be binary .* got values in \[-1, -1\]",
    ),
    (
        _with(
            policy_logits=torch.zeros(2, 3, 4, 4),
            ref_logits=torch.zeros(2, 3, 4, 4),
            rejected=torch.full((2, 4, 4), 3),
        ),
        ValueError,
        r"rejected must hold class ids in \[0, 2\] for C = 3, got \[3, 3\]",
    ),
    (
        _with(policy_logits=_nan_logits()),
        ValueError,
        r"policy_logits must be finite, got 1 non-finite values",
    ),
    (
        _with(ref_logits=torch.full((2, 1, 4, 4), float("inf"))),
        ValueError,
        r"ref_logits must be finite, got 32",
    ),
]


@pytest.mark.parametrize(("args", "error", "message"), BAD_INPUTS)
def test_bad_input_raises(args: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        preference_loss(**args)


# --- baselines: SFT on the judge's top choice, supervised anchor ---------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("dice_weight", [0.0, 1.0, 2.5])
def test_sft_and_anchor_match_monai(classes: int, dice_weight: float) -> None:
    from monai.losses import DiceCELoss

    gen = torch.Generator().manual_seed(classes)
    logits = torch.randn(3, classes, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, max(classes, 2), (3, 6, 5), generator=gen)
    if classes == 1:
        oracle = DiceCELoss(sigmoid=True, lambda_dice=dice_weight, lambda_ce=1.0)
        want = oracle(logits, target.unsqueeze(1).double())
    else:
        oracle = DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=dice_weight, lambda_ce=1.0)
        want = oracle(logits, target.unsqueeze(1))
    got = sft_top_loss(logits, target, dice_weight=dice_weight)
    anchor = supervised_anchor_loss(logits, target, dice_weight=dice_weight)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(anchor, want, atol=1e-10, rtol=0)
    (grad,) = torch.autograd.grad(got, logits)
    (grad_want,) = torch.autograd.grad(want, logits)
    torch.testing.assert_close(grad, grad_want, atol=1e-10, rtol=0)


def test_sft_top_dtypes_and_errors() -> None:
    logits = torch.randn(2, 1, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    chosen = torch.rand(2, 8, 8) > 0.5
    loss = sft_top_loss(logits, chosen)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
    bce = F.binary_cross_entropy_with_logits(logits.detach().float(), chosen.float().unsqueeze(1))
    assert sft_top_loss(logits.detach(), chosen, dice_weight=0).item() == pytest.approx(bce.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"chosen must have shape \(B, \*S\) = \(2, 8, 8\), got \(2, 8, 9\)"):
        sft_top_loss(logits, torch.zeros(2, 8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"masks must be binary"):
        supervised_anchor_loss(logits, torch.full((2, 8, 8), 5))
    with pytest.raises(ValueError, match=r"dice_weight must be finite and >= 0, got -1"):
        sft_top_loss(logits, chosen, dice_weight=-1)


# --- CUDA ----------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(classes: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(12)
    policy, ref, chosen, rejected = _pairs(gen, 4, classes, (32, 32), dtype=dtype)
    ref = ref.to(torch.float16)
    options = dict(beta=0.5, loss_type="robust", label_smoothing=0.1)
    cpu = preference_loss(policy, ref, chosen, rejected, **options)
    (grad_cpu,) = torch.autograd.grad(cpu.loss, policy)
    policy_cuda = policy.detach().cuda().requires_grad_()
    gpu = preference_loss(policy_cuda, ref.cuda(), chosen.cuda(), rejected.cuda(), **options)
    (grad_gpu,) = torch.autograd.grad(gpu.loss, policy_cuda)
    for name in FIELDS:
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), atol=1e-4, rtol=1e-4)
    assert grad_gpu.dtype == dtype
    torch.testing.assert_close(grad_gpu.cpu().float(), grad_cpu.float(), atol=1e-4, rtol=1e-2)


def test_loss_backend_switch() -> None:
    # the default picks the torch path for CPU logits; forcing it gives the very same figures
    gen = torch.Generator().manual_seed(5)
    policy, ref, chosen, rejected = _pairs(gen, 3, 1, (6, 7))
    assert loss_backend() == "auto"
    auto = preference_loss(policy, ref, chosen, rejected, beta=0.5)
    set_loss_backend("torch")
    try:
        assert loss_backend() == "torch"
        forced = preference_loss(policy, ref, chosen, rejected, beta=0.5)
    finally:
        set_loss_backend("auto")
    for name in FIELDS:
        assert torch.equal(getattr(forced, name), getattr(auto, name)), name
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'triton', got 'fast'"):
        set_loss_backend("fast")
    assert loss_backend() == "auto"
