"""Eq. 1 fusion: ``fuse`` (probability space) and ``fuse_log`` (log space).

Everything is checked through the public API against independent float64
references (``tests/strategies.py``), so a faster custom kernel behind
``fuse_log`` is held to the same contract.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import MODERATE_SCALES, cases, filled, full_labels, ref_fuse, ref_fuse_add, ref_log

from imgpix import fuse, fuse_log
from imgpix.fusion import LOG_FUSION_MODES, fused_log_probs


def probs_of(case, dtype=torch.float32):
    return torch.softmax(case.logits.double(), dim=1).to(dtype)


def on_mask(case):
    """[B, N, H, W] bool: classes selected by the (filled) labels."""
    b, _, h, w = case.shape
    return (filled(case.labels, b) > 0)[:, :, None, None].expand(-1, -1, h, w)


def log_atol(z, dtype=torch.float32):
    """Inherent rounding of a log-probability computed in ``dtype`` from logits ``z``.

    Any formulation rounds ``z`` (or ``z + log L``) to ``dtype``: the error of a
    log-probability is a few ulps of the largest logit magnitude.
    """
    return 16 * torch.finfo(dtype).eps * (1 + float(z.double().abs().max()))


def close(a, b, atol=1e-6, rtol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=False)


# ------------------------------------------------------------ hand-made exact
def test_fuse_hand_example_dot_and_add():
    p = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    lab = torch.tensor([0.0, 1.0, 1.0])
    close(fuse(p, lab).view(-1), torch.tensor([0.0, 0.6, 0.4]))
    close(fuse(p, lab, mode="add").view(-1), torch.tensor([0.5, 1.3, 1.2]) / 3)
    soft = torch.tensor([1.0, 0.5, 0.0])
    close(fuse(p, soft).view(-1), torch.tensor([0.5, 0.15, 0.0]) / 0.65)
    z = torch.log(p)
    close(fuse_log(z, lab).view(-1)[1:], torch.log(torch.tensor([0.6, 0.4])))
    assert fuse_log(z, lab).view(-1)[0].item() == -math.inf


def test_fuse_zero_mass_on_selected_classes_gets_uniform_label_distribution():
    p = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1)
    close(fuse(p, torch.tensor([0.0, 1.0, 0.0, 1.0])).view(-1), torch.tensor([0.0, 0.5, 0.0, 0.5]))
    close(fuse(p, torch.tensor([0.0, 1.0, 0.0, 0.25])).view(-1), torch.tensor([0.0, 0.8, 0.0, 0.2]))


def test_one_d_labels_broadcast_like_repeated_rows():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 2, 2, generator=gen)
    lab = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0])
    close(fuse(torch.softmax(z, 1), lab), fuse(torch.softmax(z, 1), lab.expand(3, -1)))
    close(fuse_log(z, lab), fuse_log(z, lab.expand(3, -1)))


# ------------------------------------------------------------ probability space
@given(cases(soft=None))
def test_fuse_matches_float64_reference_sums_to_one_and_masks(case):
    p = probs_of(case)
    out = fuse(p, case.labels)
    assert out.shape == p.shape and out.dtype == p.dtype
    assert not torch.isnan(out).any()
    close(out, ref_fuse(p, case.labels))
    close(out.double().sum(1), torch.ones_like(out.double().sum(1)))
    assert (out[~on_mask(case)] == 0).all(), "mass left on a class with L = 0"
    assert (out >= 0).all()


@given(cases(soft=None))
def test_identity_when_all_labels_on(case):
    ones = torch.ones_like(case.labels, dtype=torch.float32)
    p = probs_of(case)
    close(fuse(p, ones), p)
    close(fuse_log(case.logits, ones), torch.log_softmax(case.logits.double(), 1))


@given(cases(soft=False))
def test_fuse_is_idempotent_for_binary_labels(case):
    once = fuse(probs_of(case), case.labels)
    close(fuse(once, case.labels), once)
    log_once = fuse_log(case.logits, case.labels)
    close(fuse_log(log_once.nan_to_num(neginf=-1e30), case.labels), log_once)


@given(cases(soft=None, scales=MODERATE_SCALES))
def test_ratios_among_kept_classes_are_preserved(case):
    p = probs_of(case, torch.float64).float().double()  # the exact values fuse sees
    out = fuse(p.float(), case.labels).double()
    lab = filled(case.labels, p.shape[0])[:, :, None, None]
    # for kept i, j: P'_i * (L_j P_j) == P'_j * (L_i P_i)
    q = p * lab
    on = (lab > 0).expand_as(p)
    for b in range(p.shape[0]):
        idx = on[b, :, 0, 0].nonzero().flatten()
        i, j = idx[:, None], idx[None, :]
        lhs = out[b, i] * q[b, j]
        rhs = out[b, j] * q[b, i]
        torch.testing.assert_close(lhs, rhs, atol=1e-7, rtol=1e-5)


@given(cases(soft=None))
def test_argmax_lies_in_label_set(case):
    on = on_mask(case)
    top = fuse(probs_of(case), case.labels).argmax(1, keepdim=True)
    assert on.gather(1, top).all()
    top_log = fuse_log(case.logits, case.labels).argmax(1, keepdim=True)
    assert on.gather(1, top_log).all()


@given(cases(soft=None, scales=MODERATE_SCALES))
def test_fuse_depends_only_on_ratios_of_p(case):
    p = probs_of(case, torch.float64)
    gen = torch.Generator().manual_seed(1)
    c = torch.rand(p.shape[0], 1, *p.shape[2:], generator=gen, dtype=torch.float64) * 1e3 + 1e-3
    scaled = c * p
    renormalised = scaled / scaled.sum(1, keepdim=True)
    close(fuse(renormalised.float(), case.labels), fuse(p.float(), case.labels))
    # the un-normalised formula P*L/sum(P*L) is itself invariant to the per-pixel c
    close(ref_fuse(scaled, case.labels), ref_fuse(p, case.labels), atol=1e-12)


@given(cases(soft=None, scales=MODERATE_SCALES))
def test_fuse_of_softmax_equals_exp_fuse_log(case):
    # moderate scales: no selected probability underflows in float32 softmax
    z = case.logits
    close(fuse(torch.softmax(z, 1), case.labels), torch.exp(fuse_log(z, case.labels)))


def test_fuse_keeps_float64_precision():
    # selected classes carry ~1e-130 in float64 probs: representable, so fusing in
    # float64 must give their softmax ratio, not the zero-mass fallback.
    z = torch.tensor([0.0, -300.0, -301.0], dtype=torch.float64).view(1, 3, 1, 1)
    lab = torch.tensor([0.0, 1.0, 1.0])
    out = fuse(torch.softmax(z, 1), lab)
    assert out.dtype == torch.float64
    close(out, torch.exp(ref_log(z, lab)), atol=1e-12)


def test_fuse_sums_to_one_for_subnormal_selected_mass():
    # float32 pixel whose selected classes hold only subnormal mass (> 0)
    p = torch.tensor([1.0, 1e-40, 1e-40]).view(1, 3, 1, 1)
    out = fuse(p, torch.tensor([0.0, 1.0, 1.0]))
    close(out.view(-1), torch.tensor([0.0, 0.5, 0.5]))


# ------------------------------------------------------------ log space
@given(cases(soft=None, dtype=torch.float64))
def test_fuse_log_matches_float64_reference(case):
    out = fuse_log(case.logits, case.labels)
    ref = ref_log(case.logits, case.labels)
    on = on_mask(case)
    assert out.dtype == torch.float64 and out.shape == case.logits.shape
    assert torch.isfinite(out[on]).all() and (out[~on] == -math.inf).all()
    # soft labels may be handled in float32 inside (log L): ~1e-7 slack
    close(out[on], ref[on], atol=log_atol(case.logits, torch.float64) + 1e-6, rtol=1e-9)


@given(cases(soft=None, dtype=torch.float32))
def test_fuse_log_float32_matches_reference(case):
    out = fuse_log(case.logits, case.labels)
    on = on_mask(case)
    assert out.dtype == torch.float32
    assert torch.isfinite(out[on]).all() and (out[~on] == -math.inf).all()
    close(out[on], ref_log(case.logits, case.labels)[on], atol=log_atol(case.logits), rtol=1e-5)


@given(cases(soft=None, dtype=torch.float64), st.sampled_from([1e-3, 1.0, 1e3, 1e4]))
def test_fuse_log_invariant_to_per_pixel_shift(case, magnitude):
    # log-space form of "fuse(c * P) == fuse(P)"
    z = case.logits
    gen = torch.Generator().manual_seed(2)
    c = (torch.rand(z.shape[0], 1, *z.shape[2:], generator=gen, dtype=torch.float64) * 2 - 1) * magnitude
    on = on_mask(case)
    a, b = fuse_log(z + c, case.labels), fuse_log(z, case.labels)
    assert (a[~on] == -math.inf).all()
    close(a[on], b[on], atol=log_atol(z.abs() + magnitude, torch.float64), rtol=1e-9)


def _weighted_loss(out, gen):
    finite = torch.isfinite(out.detach())
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    return (torch.where(finite, out, torch.zeros_like(out)) * weights).sum()


@given(cases(soft=None, dtype=torch.float32))
def test_gradient_of_absent_classes_is_exactly_zero(case):
    z = case.logits.clone().requires_grad_(True)
    _weighted_loss(fuse_log(z, case.labels), torch.Generator().manual_seed(3)).backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad[~on_mask(case)] == 0).all()


@given(cases(soft=None, dtype=torch.float64), st.sampled_from([torch.float64, torch.float32]))
def test_gradient_matches_float64_reference(case, dtype):
    z = case.logits.to(dtype).double()  # the values the dtype can hold
    z_lib = z.to(dtype).clone().requires_grad_(True)
    z_ref = z.clone().requires_grad_(True)
    _weighted_loss(fuse_log(z_lib, case.labels), torch.Generator().manual_seed(4)).backward()
    _weighted_loss(ref_log(z_ref, case.labels), torch.Generator().manual_seed(4)).backward()
    on = on_mask(case)
    # a log-probability error of log_atol moves p by p * log_atol; the gradient
    # sums such terms against the N-dim random weights.
    tol = log_atol(z, dtype) * 4 * z.shape[1] ** 0.5 + (1e-9 if dtype == torch.float64 else 1e-5)
    assert z_lib.grad.dtype == dtype
    close(z_lib.grad[on], z_ref.grad[on], atol=tol, rtol=1e-5)
    assert (z_lib.grad[~on] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@given(case=cases(soft=None, scales=(1e4,), dtype=torch.float64))
def test_fuse_log_extreme_logits_finite_on_neg_inf_off_dtype_kept(dtype, case):
    # the contract is logits of +-1e4; beyond that a log-probability (down to
    # -2e4) could leave float16's range (65504) and become -inf legitimately
    z = case.logits.clamp(-1e4, 1e4).to(dtype)
    out = fuse_log(z, case.labels)
    on = on_mask(case)
    assert out.dtype == dtype and out.shape == z.shape
    assert not torch.isnan(out).any()
    assert torch.isfinite(out[on]).all()
    assert (out[~on] == -math.inf).all()
    assert (out[on] <= 0).all()
    ref = ref_log(z, case.labels)  # reference on the values z actually holds
    work = torch.float64 if dtype == torch.float64 else torch.float32  # documented compute dtype
    out_eps = torch.finfo(dtype).eps  # final rounding of the result to dtype
    close(out[on], ref[on], atol=log_atol(z, work) + 1e-6 + out_eps, rtol=out_eps)


@pytest.mark.parametrize("value", [1e4, -1e4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fuse_log_constant_extreme_logits(value, dtype):
    z = torch.full((2, 4, 2, 3), value, dtype=dtype)
    z[0, 1] = -value
    lab = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = fuse_log(z, lab)
    assert out.dtype == dtype and not torch.isnan(out).any()
    assert (out[0, [0, 3]] == -math.inf).all() and torch.isfinite(out[0, 1:3]).all()
    close(out[1], torch.full((4, 2, 3), -math.log(4)), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_fuse_preserves_dtype_and_shape(dtype):
    gen = torch.Generator().manual_seed(5)
    # probabilities that are exact in every dtype (so they pass the sum check):
    # multiples of 1/64 summing to 1
    p = torch.zeros(2, 6, 3, 4, dtype=torch.float64)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                draws = torch.multinomial(torch.ones(6), 64, replacement=True, generator=gen)
                p[b, :, i, j] = torch.bincount(draws, minlength=6).double() / 64
    assert ((p * 64).round() == p * 64).all()
    p = p.to(dtype)
    lab = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    for mode in ("dot", "add"):
        out = fuse(p, lab, mode=mode)
        assert out.dtype == dtype and out.shape == p.shape
        close(out, (ref_fuse if mode == "dot" else ref_fuse_add)(p, lab), atol=1e-2, rtol=1e-2)


# ------------------------------------------------------------ addition mode
@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0, 3)])
@pytest.mark.parametrize("labels", [torch.zeros(0, 4), torch.ones(4)], ids=["rows", "one_d"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_no_image_or_no_pixel_gives_an_empty_result(shape, labels, dtype):
    """fuse_log of an empty batch used to raise a torch RuntimeError; every form of Eq. 1 is empty instead."""
    labels = labels if labels.dim() == 1 or shape[0] == 0 else torch.ones(shape[0], 4)
    logits = torch.zeros(shape, dtype=dtype, requires_grad=True)
    out = fuse_log(logits, labels)
    assert out.shape == shape and out.dtype == dtype
    out.sum().backward()
    assert logits.grad.shape == shape
    for mode in LOG_FUSION_MODES:
        assert fused_log_probs(logits, labels, mode).shape == shape
    for mode in ("dot", "add"):
        fused = fuse(torch.full(shape, 0.25, dtype=dtype), labels, mode=mode)
        assert fused.shape == shape and fused.dtype == dtype
    with pytest.raises(ValueError, match="label batch size"):
        fuse_log(logits, torch.ones(shape[0] + 1, 4))


@given(cases(soft=None, scales=MODERATE_SCALES + (1e4,)))
def test_add_mode_formula_and_normalisation(case):
    p = probs_of(case)
    out = fuse(p, case.labels, mode="add")
    assert out.shape == p.shape and out.dtype == p.dtype
    close(out.double().sum(1), torch.ones_like(out.double().sum(1)))
    close(out, ref_fuse_add(p, case.labels))
    assert (out > 0).any(1).all()


@given(cases(soft=False))
def test_add_mode_puts_labelled_classes_above_unlabelled(case):
    p = probs_of(case)
    out = fuse(p, case.labels, mode="add").double()
    lab = full_labels(case.labels, p.shape[0])[:, :, None, None].expand_as(out) > 0
    lowest_on = torch.where(lab, out, torch.full_like(out, math.inf)).amin(1)
    highest_off = torch.where(~lab, out, torch.full_like(out, -math.inf)).amax(1)
    assert (lowest_on >= highest_off - 1e-7).all()
    # every labelled class gains mass relative to fusing with its label switched off
    on = (full_labels(case.labels, p.shape[0]) > 0)
    for b, c in on.nonzero().tolist()[:5]:
        lab_off = full_labels(case.labels, p.shape[0]).clone()
        lab_off[b, c] = 0
        off = fuse(p, lab_off, mode="add").double()
        assert (out[b, c] >= off[b, c] - 1e-7).all()


def test_add_mode_hand_ordering_within_status_kept():
    p = torch.tensor([0.1, 0.6, 0.3]).view(1, 3, 1, 1)
    out = fuse(p, torch.tensor([1.0, 0.0, 1.0]), mode="add").view(-1)
    close(out, torch.tensor([1.1, 0.6, 1.3]) / 3)
    assert out[2] > out[0] > out[1]


# ------------------------------------------------------------ empty label rows
@given(cases(soft=None, min_on=1), st.data())
def test_empty_label_row_falls_back_to_prediction(case, data):
    b, n = case.shape[:2]
    lab = full_labels(case.labels, b).clone()
    empty = data.draw(st.lists(st.booleans(), min_size=b, max_size=b).filter(any))
    for row, is_empty in enumerate(empty):
        if is_empty:
            lab[row] = 0
    p = probs_of(case)
    dot, add, log = fuse(p, lab), fuse(p, lab, mode="add"), fuse_log(case.logits, lab)
    for out in (dot, add, log):
        assert not torch.isnan(out).any()
    for row, is_empty in enumerate(empty):
        sl = slice(row, row + 1)
        if is_empty:
            close(dot[row], p[row])
            close(add[row], p[row])
            close(log[row], torch.log_softmax(case.logits[row].double(), 0), atol=1e-5)
        else:  # only the empty rows are affected
            close(dot[sl], fuse(p[sl], lab[sl]))
            close(add[sl], fuse(p[sl], lab[sl], mode="add"))
            assert torch.equal(torch.isinf(log[sl]), torch.isinf(fuse_log(case.logits[sl], lab[sl])))
            on = torch.isfinite(log[sl])
            close(log[sl][on], fuse_log(case.logits[sl], lab[sl])[on])


def test_empty_one_d_label_gives_prediction():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(2, 4, 3, 3, generator=gen)
    zeros = torch.zeros(4)
    close(fuse(torch.softmax(z, 1), zeros), torch.softmax(z, 1))
    close(fuse_log(z, zeros), torch.log_softmax(z, 1))
    close(fuse_log(z, zeros.bool()), torch.log_softmax(z, 1))


# ------------------------------------------------------------ validation
P_OK = torch.full((2, 3, 2, 2), 1 / 3)
Z_OK = torch.zeros(2, 3, 2, 2)


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.ones(4), "label length"),
        (torch.ones(2, 2), "label length"),
        (torch.ones(3, 3), "batch"),
        (torch.tensor([1.0, -0.1, 0.5]), r"\[0, 1\]"),
        (torch.tensor([1.0, 1.5, 0.5]), r"\[0, 1\]"),
        (torch.tensor([1.0, float("nan"), 0.5]), "NaN"),
        (torch.ones(2, 3, 1), "shape"),
    ],
)
@pytest.mark.parametrize("fn", ["fuse", "fuse_add", "fuse_log"])
def test_bad_labels_raise(fn, labels, match):
    with pytest.raises(ValueError, match=match):
        if fn == "fuse_log":
            fuse_log(Z_OK, labels)
        else:
            fuse(P_OK, labels, mode="add" if fn == "fuse_add" else "dot")


@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.full((1, 3, 2, 2), 0.3), "sum to 1"),
        (torch.full((1, 3, 2, 2), 0.5), "sum to 1"),
        (torch.tensor([1.2, -0.2, 0.0]).view(1, 3, 1, 1), "negative"),
        (torch.full((3, 2, 2), 1 / 3), "shape"),
        (torch.full((1, 1, 3, 2, 2), 1 / 3), "shape"),
    ],
)
@pytest.mark.parametrize("mode", ["dot", "add"])
def test_bad_probs_raise(probs, match, mode):
    with pytest.raises(ValueError, match=match):
        fuse(probs, torch.ones(3), mode=mode)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_probs_raise(bad):
    p = torch.tensor([bad, 0.5, 0.5]).view(1, 3, 1, 1)
    with pytest.raises(ValueError):
        fuse(p, torch.ones(3))


@pytest.mark.parametrize("shape", [(3, 2, 2), (1, 1, 3, 2, 2), (3,)])
def test_fuse_log_non_4d_raises(shape):
    with pytest.raises(ValueError, match="shape"):
        fuse_log(torch.zeros(shape), torch.ones(3))


@pytest.mark.parametrize("mode", ["mul", "DOT", "", None])
def test_bad_mode_raises(mode):
    with pytest.raises(ValueError, match="mode"):
        fuse(P_OK, torch.ones(3), mode=mode)
