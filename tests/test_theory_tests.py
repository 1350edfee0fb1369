"""Falsifiable theory tests (imgpix.experiments.theory_tests) on tables whose answer is known, and on
the real untrained segmentation net."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from imgpix.experiments import theory_tests as tt
from imgpix.information import audit
from imgpix.labels import corrupt, from_masks
from imgpix.models import build_segmenter

N = 21
FAST = {"n_resamples": 499}


def synthetic(scales: dict[str, float], noise: float = 0.0, images: int = 40, seeds: int = 2,
              conditions=("oracle", "case1", "case2", "case3"), m: int | None = None, k: int | None = None,
              oracle_images: int = 0) -> pd.DataFrame:
    """Per-image rows whose nats are ``scale`` x the uniform-limit values (+ noise): scale 1 obeys the theory.

    ``m``, ``k``: one value for every image (else drawn per image); the first ``oracle_images`` images
    keep all their n true labels in Cases 2 and 3 (k >= n: Case 2 equals the oracle)."""
    rng = np.random.default_rng(0)
    counts = [(int(n), int(rng.integers(1, 5)), int(rng.integers(1, n))) for n in rng.integers(2, 7, images)]
    counts = [(n, m or drawn_m, n if i < oracle_images else k or drawn_k)
              for i, (n, drawn_m, drawn_k) in enumerate(counts)]
    rows = []
    for model, scale in scales.items():
        for seed in range(seeds if model != tt.UNTRAINED else 1):
            for image, (n, m, k) in enumerate(counts):
                for condition in conditions:
                    kept = k if condition in ("case2", "case3") else n
                    outliers = m if condition in ("case1", "case3") else 0
                    size = kept + outliers
                    jitter = rng.normal(0, noise, 3) if model != tt.UNTRAINED else np.zeros(3)
                    rows.append({"model": model, "seed": seed, "image": image, "condition": condition, "n": n,
                                 "size": size, "kept": kept, "outliers": outliers,
                                 "removed": scale * math.log(N / size) + jitter[0],
                                 "ce_unfused": scale * math.log(N) + jitter[1],
                                 "ce_fused": scale * math.log(size) + jitter[2],
                                 "lost_fraction": 1 - kept / n, "accuracy_fused": 0.9 * kept / n})
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    return tt.verdicts(table, N, **FAST).set_index("equation")["verdict"].to_dict()


# ------------------------------------------------------------------ verdicts on known tables
def test_a_table_that_obeys_the_theory_holds():
    out = tt.verdicts(synthetic({tt.UNTRAINED: 1.0, "trained": 1.0}, noise=0.05), N, **FAST)
    assert out.equation.tolist() == list(tt.EQUATIONS)
    assert set(out.verdict) == {tt.HOLDS}
    assert out.holds_untrained.all() and out.holds_informed.all()
    assert (out.model == "trained").all() and (out.holds_by_model == "untrained: yes, trained: yes").all()
    assert ((out.ci_low <= out.measured) & (out.measured <= out.ci_high)).all()
    six = out.set_index("equation").loc["6"]
    assert six.slope_low - tt.SLOPE_TOL <= 1 <= six.slope_high + tt.SLOPE_TOL


def test_a_negative_slope_is_refuted():
    table = synthetic({"trained": -0.4}, noise=0.05)
    assert set(verdicts(table).values()) == {tt.REFUTED}
    six = tt.equation_tests(table, N, **FAST).set_index("equation").loc["6"]
    assert six.slope == pytest.approx(-0.4, abs=0.05) and six.slope_high < 0


def test_holds_for_the_untrained_net_only():
    out = verdicts(synthetic({tt.UNTRAINED: 1.0, "trained": 0.3}, noise=0.05))
    assert set(out.values()) == {tt.UNINFORMED}
    only_untrained = verdicts(synthetic({tt.UNTRAINED: 1.0}))
    assert set(only_untrained.values()) == {tt.UNINFORMED}


def test_a_failure_on_the_untrained_net_refutes():
    assert set(verdicts(synthetic({tt.UNTRAINED: 0.5, "trained": 1.0}, noise=0.05)).values()) == {tt.REFUTED}


def test_within_tolerance_holds_and_beyond_it_does_not():
    assert verdicts(synthetic({"trained": 1 + tt.SLOPE_TOL / 2}))["6"] == tt.HOLDS
    assert verdicts(synthetic({"trained": 1 + 2 * tt.SLOPE_TOL}))["6"] == tt.REFUTED


def test_missing_conditions_are_not_tested():
    out = verdicts(synthetic({tt.UNTRAINED: 1.0}, conditions=("oracle", "case1")))
    assert out["11/12"] == out["13/14"] == tt.NOT_TESTED and out["6"] == tt.UNINFORMED
    assert set(tt.verdicts(synthetic({"trained": 1.0}).iloc[:0], N).verdict) == {tt.NOT_TESTED}


def test_equation_tests_report_the_control_beside_the_theory():
    tests = tt.equation_tests(synthetic({"trained": 1.0}, noise=0.05), N, **FAST).set_index("equation")
    assert not tests.loc["4", "x_varies"] and tests.loc["4", "slope"] is None
    assert "not tested: x does not vary" in tests.loc["4", "note"]
    assert tests.loc["4", "ratio"] == pytest.approx(1.0, abs=0.01)
    for eq in ("5", "6", "9/10", "11/12", "13/14"):
        row = tests.loc[eq]
        assert row.x_varies and 0 <= row.r2_control <= 1 and row.r2_control_low <= row.r2_control_high
        assert row.r > 0.5 and row.images == 40 and row.rows == 80


def test_roles_name_the_experiments_conditions_and_pool_case1():
    """Roles map to exact condition names (never parsed): the experiment names which conditions play each role."""
    table = synthetic({tt.UNTRAINED: 1.0})
    names = {"case1": "case1 (m=3)", "case2": "case2 (k=1)", "case3": "case3 (m=3, k=1)"}
    renamed = table.replace({"condition": names})
    more = table[table.condition == "case1"].assign(condition="case1 (m=5)", outliers=5)
    more = more.assign(size=more.n + 5, removed=np.log(N / (more.n + 5)))
    distant = more.assign(condition="case1 (m=5) distant", removed=0.0)  # not in a role: must be ignored
    roles = {**names, "oracle": "oracle", "case1": ["case1 (m=3)", "case1 (m=5)"]}
    tests = tt.equation_tests(pd.concat([renamed, more, distant]), N, roles=roles, **FAST).set_index("equation")
    assert tests.loc["9/10", "rows"] == 80 and tests.loc["9/10", "holds"]
    assert tests.loc["11/12", "rows"] == tests.loc["13/14", "rows"] == 40
    by_default = tt.equation_tests(pd.concat([renamed, more]), N, **FAST).set_index("equation")
    assert by_default.loc["9/10", "rows"] == 0  # the default roles name "case1" only: "case1 (m=3)" is no match
    two = pd.concat([table, table.query("condition == 'case2'").assign(condition="case2 (k=2)")])
    with pytest.raises(ValueError, match="several conditions"):
        tt.equation_tests(two, N, roles={**tt.ROLES, "case2": ["case2", "case2 (k=2)"]})


def _nan_or_inf(text: str) -> list[str]:
    return re.findall(r"\b(?:nan|inf)\b", text, flags=re.IGNORECASE)


def markdown(frame: pd.DataFrame) -> str:
    """The table as the experiment reports print it (``to_markdown``, floats to 3 digits)."""
    return frame.to_markdown(index=False, floatfmt=".3g")


def test_x_that_does_not_vary_is_not_tested_and_never_nan_or_inf():
    """One m and k for every image (the experiment's case3 (m=3, k=1)): Eq. 14's x = log 4 does not vary, so
    slope, intercept and r are not tested (None, a note), and the Markdown report shows no nan or inf."""
    table = synthetic({tt.UNTRAINED: 1.0, "trained": 1.0}, noise=0.05, m=3, k=1)
    out = tt.verdicts(table, N, **FAST).set_index("equation")
    for eq in ("4", "13/14"):
        row = out.loc[eq]
        assert all(row[c] is None for c in ("slope", "slope_low", "slope_high", "intercept", "r"))
        assert row.note.startswith("not tested: x does not vary") and row.verdict == tt.HOLDS  # by the ratio
    assert -1 <= out.loc["6", "r"] <= 1 and out.loc["6", "note"] == ""
    numbers = [v for v in out.to_numpy().ravel() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers)
    text = markdown(out.reset_index())
    assert _nan_or_inf(text) == [] and "not tested: x does not vary" in text
    assert _nan_or_inf(out.to_csv()) == []


def test_case2_equal_to_the_oracle_is_flagged_not_nan():
    """k >= n on most images: Eq. 11/12 says how many it left out; on every image: not tested, with why,
    and the Case 2 table has no r (lost_fraction does not vary) instead of NaN."""
    most = tt.verdicts(synthetic({"trained": 1.0}, m=3, k=1, oracle_images=30), N, **FAST).set_index("equation")
    assert most.loc["11/12", "images"] == 10 and most.loc["11/12", "verdict"] == tt.HOLDS
    assert "30 of 40 images left out (Case 2 equals the oracle" in most.loc["11/12", "note"]
    every = synthetic({"trained": 1.0}, m=3, k=1, oracle_images=40)
    out = tt.verdicts(every, N, **FAST).set_index("equation").loc["11/12"]
    assert out.verdict == tt.NOT_TESTED and out.measured is None
    assert out.note.startswith("not tested: all 40 images left out (Case 2 equals the oracle")
    assert out.tested.startswith("extra nats removed")
    case2 = tt.case2_loss(every, **FAST)
    row = case2.iloc[0]
    assert row.oracle_images == 40 and row.r_fraction is None and row.slope_fraction is None and row.r_nats is None
    assert "Case 2 equals the oracle on 40 of 40 images" in row.note and "lost_fraction does not vary" in row.note
    text = markdown(case2)
    assert _nan_or_inf(text) == [] and "not tested: lost_fraction does not vary" in text


def test_removal_regression_with_one_label_set_size_has_no_slope():
    table = synthetic({"trained": 1.0}, noise=0.05, conditions=("oracle",)).assign(n=3, size=3)
    row = tt.removal_regression(table, N=N, **FAST).iloc[0]
    assert row.slope is None and row.intercept is None and row.r is None and math.isfinite(row.ratio)
    assert row.note.startswith("not tested: log(N/|L|) does not vary")


# ------------------------------------------------------------------ the other tests
def test_removal_regression_and_absorbed_fraction():
    table = synthetic({tt.UNTRAINED: 1.0, "trained": 0.25}, noise=0.02)
    out = tt.removal_regression(table, N=N, **FAST).set_index(["model", "condition"])
    exact = out.loc[(tt.UNTRAINED, "case1")]
    assert (exact.slope, exact.intercept, exact.r, exact.absorbed) == pytest.approx((1, 0, 1, 0), abs=1e-9)
    trained = out.loc[("trained", "oracle")]
    assert trained.absorbed == pytest.approx(0.75, abs=0.02)
    assert trained.absorbed_low <= trained.absorbed <= trained.absorbed_high
    assert trained.slope == pytest.approx(0.25, abs=0.05)


def test_count_sufficiency_measures_the_paired_difference():
    base = synthetic({"trained": 1.0}, noise=0.05, conditions=("oracle",))
    confusable = base.assign(condition="confusable", removed=base.removed - 0.3)
    random = base.assign(condition="random")
    out = tt.count_sufficiency(pd.concat([confusable, random]), "confusable", "random", **FAST).iloc[0]
    assert out.effect == pytest.approx(-0.3) and out.effect_high < 0 and out.p_value < 0.01
    assert out.theory == 0.0 and out.images == 40
    same = tt.count_sufficiency(pd.concat([random.assign(condition="confusable"), random]), "confusable", "random",
                                **FAST).iloc[0]
    assert same.effect == 0.0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="equal counts"):
        tt.count_sufficiency(pd.concat([confusable.assign(outliers=1 + confusable.outliers), random]),
                             "confusable", "random")


def test_case2_loss_beside_pa_drop_and_log_n_over_k():
    out = tt.case2_loss(synthetic({"trained": 1.0}), **FAST).iloc[0]
    # accuracy = 0.9 k/n, so the PA drop is 0.9 x lost_fraction exactly
    assert (out.r_fraction, out.slope_fraction) == pytest.approx((1.0, 0.9))
    assert out.pa_drop == pytest.approx(0.9 * out.lost_fraction)
    assert 0 < out.r_nats < 1 and out.lost_nats > 0 and out.r2_control_low <= out.r2_control <= out.r2_control_high


# ------------------------------------------------------------------ the real segmentation net, untrained
def test_untrained_segmenter_obeys_every_equation_exactly():
    """Uniform outputs at step 0: slope 1 and intercept 0 for Eqs. 6/10, and every verdict is
    'holds for an uninformed network only'."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net = build_segmenter("tiny", N).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 24, 24, generator=gen)
    n = torch.arange(8) % 4 + 2  # 2..5 true classes per image
    target = torch.stack([torch.randperm(N, generator=gen)[:k][torch.randint(0, k, (24, 24), generator=gen)]
                          for k in n.tolist()])
    truth = from_masks(target, N)
    with torch.no_grad():
        logits = net(images)
    torch.set_num_threads(threads)
    labels = {"oracle": truth, "case1": corrupt(truth, 3, None, gen), "case2": corrupt(truth, 0, 1, gen),
              "case3": corrupt(truth, 2, 1, gen)}
    table = pd.concat([tt.audit_frame(audit(logits, lab, target), model=tt.UNTRAINED, seed=0, condition=name)
                       for name, lab in labels.items()])
    assert (table.query("condition == 'oracle'").n == n.numpy()).all()
    fits = tt.removal_regression(table, N=N, **FAST).set_index("condition")
    for condition in ("oracle", "case1"):
        fit = fits.loc[condition]
        for key, value in (("slope", 1.0), ("intercept", 0.0), ("r", 1.0)):
            assert (fit[key], fit[f"{key}_low"], fit[f"{key}_high"]) == pytest.approx((value,) * 3, abs=1e-5)
    assert set(verdicts(table).values()) == {tt.UNINFORMED}
