"""FCN metrics: confusion matrices (functional and ConfusionMatrix), PA / MPA / FWAA / MIOU, and the
labeler's mAP / precision / recall."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import segmentations
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.functional.classification import binary_average_precision

from imgpix.metrics import METRIC_NAMES, ConfusionMatrix, average_precision, confusion_matrix, labeler_scores, scores

IGNORE = 255

# rows: truth, columns: prediction. Class 2 is predicted once but never true
# (IoU 0, counted in MIOU; no accuracy, left out of MPA); class 3 is absent from
# both (left out of MPA and MIOU).
HAND_CM = np.array([[3, 1, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def pixels_from_cm(cm, ignored=0, seed=0):
    """(pred, target) flat tensors realising ``cm`` plus ``ignored`` ignore pixels."""
    target, pred = [], []
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            target += [t] * int(cm[t, p])
            pred += [p] * int(cm[t, p])
    gen = torch.Generator().manual_seed(seed)
    target += [IGNORE] * ignored
    pred += torch.randint(0, cm.shape[0], (ignored,), generator=gen).tolist()
    order = torch.randperm(len(target), generator=gen)
    return torch.tensor(pred)[order], torch.tensor(target)[order]


def test_hand_computed_scores():
    s = scores(HAND_CM)
    assert s["PA"] == pytest.approx(5 / 8)
    assert s["MPA"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    np.testing.assert_allclose(s["IoU"][:3], [3 / 6, 2 / 4, 0.0])
    assert math.isnan(s["IoU"][3])
    assert s["MIOU"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert s["FWAA"] == pytest.approx(5 / 8 * 0.5 + 3 / 8 * 0.5)
    for key in ("PA", "MPA", "FWAA", "MIOU"):
        assert isinstance(s[key], float)


def test_second_hand_example_unequal_ious():
    cm = np.array([[5, 0, 1], [2, 1, 0], [0, 1, 2]])  # total 12
    s = scores(cm)
    assert s["PA"] == pytest.approx(8 / 12)
    assert s["MPA"] == pytest.approx((5 / 6 + 1 / 3 + 2 / 3) / 3)
    iou = [5 / (6 + 7 - 5), 1 / (3 + 2 - 1), 2 / (3 + 3 - 2)]
    np.testing.assert_allclose(s["IoU"], iou)
    assert s["MIOU"] == pytest.approx(sum(iou) / 3)
    assert s["FWAA"] == pytest.approx(6 / 12 * iou[0] + 3 / 12 * iou[1] + 3 / 12 * iou[2])


def test_confusion_matrix_from_pixels_and_torch_input():
    pred, target = pixels_from_cm(HAND_CM, ignored=7)
    cm = confusion_matrix(pred.view(3, 5), target.view(3, 5), 4)
    assert cm.dtype == torch.int64 and cm.shape == (4, 4)
    np.testing.assert_array_equal(cm.numpy(), HAND_CM)
    assert scores(cm)["MIOU"] == pytest.approx(scores(HAND_CM)["MIOU"])


def test_confusion_matrix_orientation():
    cm = confusion_matrix(torch.tensor([1, 1, 1]), torch.tensor([0, 0, 2]), 3)
    assert cm[0, 1] == 2 and cm[2, 1] == 1 and int(cm.sum()) == 3


# ------------------------------------------------------------ accumulation
@given(segmentations())
def test_sum_of_batch_matrices_equals_matrix_of_concatenation(data):
    n, pred, target = data
    total = sum(confusion_matrix(pred[i : i + 1], target[i : i + 1], n) for i in range(pred.shape[0]))
    assert torch.equal(total, confusion_matrix(pred, target, n))
    assert int(total.sum()) == int((target != IGNORE).sum())


def test_mean_of_per_image_miou_differs_from_dataset_miou():
    pred = torch.zeros(2, 2, 2, dtype=torch.long)
    target = torch.stack([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)])
    per_image = [scores(confusion_matrix(pred[i], target[i], 2))["MIOU"] for i in range(2)]
    assert per_image == [1.0, 0.0]
    dataset = scores(confusion_matrix(pred[0], target[0], 2) + confusion_matrix(pred[1], target[1], 2))["MIOU"]
    assert dataset == pytest.approx((4 / 8 + 0.0) / 2)
    assert dataset != pytest.approx(np.mean(per_image))


# ------------------------------------------------------------ properties
@given(segmentations())
def test_scores_in_unit_interval(data):
    n, pred, target = data
    s = scores(confusion_matrix(pred, target, n))
    for key in ("PA", "MPA", "FWAA", "MIOU"):
        assert 0.0 <= s[key] <= 1.0
    assert s["FWAA"] <= s["PA"] + 1e-12  # IoU_c <= acc_c, weighted by frequency
    iou = s["IoU"][~np.isnan(s["IoU"])]
    assert ((iou >= 0) & (iou <= 1)).all()


@given(segmentations())
def test_perfect_prediction_scores_one(data):
    n, _, target = data
    pred = torch.where(target == IGNORE, torch.zeros_like(target), target)
    s = scores(confusion_matrix(pred, target, n))
    assert s["PA"] == s["MPA"] == s["MIOU"] == 1.0
    assert s["FWAA"] == pytest.approx(1.0, abs=1e-12)  # a float sum of frequencies


@given(segmentations(), st.data())
def test_invariant_to_permuting_class_ids(data, d):
    n, pred, target = data
    perm = torch.tensor(d.draw(st.permutations(range(n))))
    mapped_t = torch.where(target == IGNORE, target, perm[target.clamp(max=n - 1)])
    s1, s2 = scores(confusion_matrix(pred, target, n)), scores(confusion_matrix(perm[pred], mapped_t, n))
    for key in ("PA", "MPA", "FWAA", "MIOU"):
        assert s1[key] == pytest.approx(s2[key], abs=1e-12)
    np.testing.assert_allclose(s2["IoU"][perm.numpy()], s1["IoU"])


@given(segmentations(), st.integers(0, 2**31 - 1))
def test_ignore_pixels_have_no_effect(data, seed):
    n, pred, target = data
    gen = torch.Generator().manual_seed(seed)
    other = pred.clone()
    ignored = target == IGNORE
    other[ignored] = torch.randint(0, n, (int(ignored.sum()),), generator=gen)
    assert torch.equal(confusion_matrix(pred, target, n), confusion_matrix(other, target, n))
    other[ignored] = IGNORE  # even an out-of-range prediction is skipped there
    assert torch.equal(confusion_matrix(pred, target, n), confusion_matrix(other, target, n))
    keep = ~ignored
    assert torch.equal(confusion_matrix(pred, target, n), confusion_matrix(pred[keep], target[keep], n))


# ------------------------------------------------------------ torchmetrics cross-check
def _tm(metric, pred, target):
    return float(metric(pred, target))


@given(segmentations())
def test_matches_torchmetrics_pa_and_miou(data):
    # MulticlassJaccardIndex(average="macro") gives classes absent from truth and
    # prediction weight 0 and a class predicted-but-absent IoU 0: FCN's MIOU.
    n, pred, target = data
    s = scores(confusion_matrix(pred, target, n))
    miou = MulticlassJaccardIndex(num_classes=n, average="macro", ignore_index=IGNORE)
    pa = MulticlassAccuracy(num_classes=n, average="micro", ignore_index=IGNORE)
    assert s["MIOU"] == pytest.approx(_tm(miou, pred, target), abs=1e-6)
    assert s["PA"] == pytest.approx(_tm(pa, pred, target), abs=1e-6)


@given(segmentations())
def test_matches_torchmetrics_mpa_when_every_class_is_in_truth(data):
    # torchmetrics' macro accuracy scores a class that is predicted but absent
    # from the truth as 0 and averages it in; FCN leaves it out (nan). So compare
    # only on data where every class occurs in the truth.
    n, pred, target = data
    if target.numel() < n:
        target = torch.arange(n).view(1, 1, n)
        pred = torch.roll(target, 1, dims=2)
    else:
        flat = target.flatten().clone()
        flat[:n] = torch.arange(n)  # every class appears in the truth
        target = flat.view_as(pred)
    assert all((target == c).any() for c in range(n))
    s = scores(confusion_matrix(pred, target, n))
    mpa = MulticlassAccuracy(num_classes=n, average="macro", ignore_index=IGNORE)
    assert s["MPA"] == pytest.approx(_tm(mpa, pred, target), abs=1e-6)


def test_torchmetrics_semantics_on_hand_example():
    pred, target = pixels_from_cm(HAND_CM, ignored=3)
    s = scores(HAND_CM)
    miou = MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=IGNORE)
    assert _tm(miou, pred, target) == pytest.approx(s["MIOU"])
    mpa = MulticlassAccuracy(num_classes=4, average="macro", ignore_index=IGNORE)
    # torchmetrics averages class 2 (predicted, never true) in as 0: (0.6 + 2/3 + 0) / 3
    assert _tm(mpa, pred, target) == pytest.approx((3 / 5 + 2 / 3) / 3)
    assert s["MPA"] == pytest.approx((3 / 5 + 2 / 3) / 2)


# ------------------------------------------------------------ validation
def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2)


@pytest.mark.parametrize("bad", [3, -1, 254])
def test_target_out_of_range_raises(bad):
    target = torch.tensor([0, 1, bad])
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(torch.tensor([0, 1, 1]), target, 3)


@pytest.mark.parametrize("bad", [3, -1, 255])
def test_pred_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(torch.tensor([0, 1, bad]), torch.tensor([0, 1, 1]), 3)


@pytest.mark.parametrize("cm", [np.zeros((2, 3)), np.zeros(4), np.zeros((2, 2, 2))])
def test_non_square_cm_raises(cm):
    with pytest.raises(ValueError, match="square"):
        scores(cm)


@pytest.mark.parametrize("cm", [np.zeros((3, 3), dtype=np.int64), np.zeros((0, 0)),
                                torch.zeros(2, 2, dtype=torch.long)])
def test_empty_cm_raises(cm):
    with pytest.raises(ValueError, match="empty"):
        scores(cm)


# ------------------------------------------------------------ ConfusionMatrix
def metric_values(result: dict) -> dict:
    return {key: result[key] for key in METRIC_NAMES}


def test_metric_names():
    assert METRIC_NAMES == ("PA", "MPA", "FWAA", "MIOU")
    assert set(scores(HAND_CM)) == {*METRIC_NAMES, "IoU"}


@given(segmentations())
def test_confusion_matrix_class_accumulates_batches(data):
    n, pred, target = data
    cm = ConfusionMatrix(n)
    assert cm.matrix.dtype == torch.int64 and cm.matrix.shape == (n, n) and int(cm.matrix.sum()) == 0
    for i in range(pred.shape[0]):
        assert cm.update(pred[i], target[i]) is cm
    expected = confusion_matrix(pred, target, n)
    assert torch.equal(cm.matrix, expected)
    assert metric_values(cm.compute()) == metric_values(scores(expected))


@given(segmentations(), st.integers(0, 4))
def test_merge_and_add_counts_equal_one_update(data, cut):
    n, pred, target = data
    first = ConfusionMatrix(n).update(pred[:cut], target[:cut])
    second = ConfusionMatrix(n).update(pred[cut:], target[cut:])
    assert first.merge(second) is first
    whole = confusion_matrix(pred, target, n)
    assert torch.equal(first.matrix, whole)
    counts = ConfusionMatrix(n)
    assert counts.add_counts(confusion_matrix(pred[:cut], target[:cut], n)) is counts
    counts.add_counts(confusion_matrix(pred[cut:], target[cut:], n))
    assert torch.equal(counts.matrix, whole)


def test_all_reduce_is_identity_in_one_process():
    cm = ConfusionMatrix(4).add_counts(torch.from_numpy(HAND_CM))
    assert cm.all_reduce() is cm
    np.testing.assert_array_equal(cm.matrix.numpy(), HAND_CM)
    assert metric_values(cm.compute()) == metric_values(scores(HAND_CM))


def test_confusion_matrix_class_custom_ignore_index():
    cm = ConfusionMatrix(3, ignore_index=7).update(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 7, 1, 2]))
    assert torch.equal(cm.matrix, torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]]))
    with pytest.raises(ValueError, match="target"):
        cm.update(torch.tensor([0]), torch.tensor([IGNORE]))  # 255 is a class id out of range here


def test_confusion_matrix_class_rejects_mismatches():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.add_counts(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="merge"):
        cm.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="empty"):
        cm.compute()
    assert int(cm.matrix.sum()) == 0  # failed calls add nothing


# ------------------------------------------------------------ labeler_scores
# 4 images x 3 classes. Class 0 has a tie at the top: AP = 1/2 * 1/2 (threshold .8: P 1/2, R 1/2)
# + 1/2 * 2/3 (threshold .3: P 2/3, R 1) = 7/12. Class 1: its one positive is ranked 2nd: AP 1/2.
# Class 2 has no positive and is left out of the mean. At tau = .5 (>=, so the two scores of
# exactly .5 count): 7 predicted, 2 of them true, 3 true labels.
LABELER_SCORES = torch.tensor([[0.8, 0.1, 0.5], [0.8, 0.9, 0.2], [0.3, 0.5, 0.6], [0.2, 0.7, 0.1]])
LABELER_TRUTH = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)


def test_labeler_scores_hand_computed():
    result = labeler_scores(LABELER_SCORES, LABELER_TRUTH, tau=0.5)
    assert result["classes"] == 2 and result["tau"] == 0.5
    assert result["mAP"] == pytest.approx((7 / 12 + 1 / 2) / 2)
    assert result["precision"] == pytest.approx(2 / 7) and result["recall"] == pytest.approx(2 / 3)
    only_first = labeler_scores(LABELER_SCORES, LABELER_TRUTH, tau=0.5, classes=[0])
    assert only_first["classes"] == 1 and only_first["mAP"] == pytest.approx(7 / 12)
    assert only_first["precision"] == pytest.approx(1 / 2) and only_first["recall"] == pytest.approx(1 / 2)


def test_labeler_scores_degenerate_cases():
    none_true = labeler_scores(LABELER_SCORES, torch.zeros(4, 3, dtype=torch.bool), tau=0.5)
    assert math.isnan(none_true["mAP"]) and none_true["classes"] == 0
    assert none_true["precision"] == 0.0 and none_true["recall"] == 0.0
    nothing_predicted = labeler_scores(LABELER_SCORES, LABELER_TRUTH, tau=1.0)
    assert nothing_predicted["precision"] == 0.0 and nothing_predicted["recall"] == 0.0
    everything = labeler_scores(LABELER_SCORES, LABELER_TRUTH, tau=0.0)
    assert everything["precision"] == pytest.approx(3 / 12) and everything["recall"] == 1.0


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan")])
def test_labeler_scores_check_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        labeler_scores(LABELER_SCORES, LABELER_TRUTH, tau)


def reference_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """AP = sum over distinct thresholds t, high to low, of (R_t - R_prev) * P_t (predicted: score >= t)."""
    ap, recall_before = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        hits = (predicted & truth).sum()
        recall = hits / truth.sum()
        ap += (recall - recall_before) * hits / predicted.sum()
        recall_before = recall
    return ap


@given(st.integers(1, 8), st.integers(1, 4), st.data())
def test_labeler_scores_match_a_reference(images, classes, data):
    grid = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])  # few values: many ties
    scores = np.array(data.draw(st.lists(st.lists(grid, min_size=classes, max_size=classes),
                                         min_size=images, max_size=images)))
    truth = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=classes, max_size=classes),
                                        min_size=images, max_size=images)))
    tau = data.draw(grid)
    result = labeler_scores(torch.tensor(scores), torch.tensor(truth), tau)
    aps = [reference_ap(scores[:, c], truth[:, c]) for c in range(classes) if truth[:, c].any()]
    assert result["classes"] == len(aps)
    if aps:
        assert result["mAP"] == pytest.approx(np.mean(aps), abs=1e-6)
    predicted = scores >= tau
    assert result["precision"] == pytest.approx((predicted & truth).sum() / max(predicted.sum(), 1))
    assert result["recall"] == pytest.approx((predicted & truth).sum() / max(truth.sum(), 1))


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0]), st.booleans()), min_size=1, max_size=30))
def test_average_precision_matches_torchmetrics(pairs):
    scores, truth = (np.array(v) for v in zip(*pairs))
    assume(truth.any())
    expected = float(binary_average_precision(torch.tensor(scores), torch.tensor(truth).long()))
    assert average_precision(scores, truth) == pytest.approx(expected, abs=1e-6)
