"""imgpix.experiments.runner: the output directory of a run (resume, --force, one live run, shards), the outputs
registry, work units and the process pool."""

from __future__ import annotations

import gzip
import json
import operator
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from imgpix.experiments.runner import RUN, ExperimentError, Outputs, Units, entries, in_parallel, is_finished, open_run
from imgpix.files import TAG, from_json_data, is_temporary, to_json_data, write_data
from imgpix.lock import LOCK_NAME, OutputLock

IDENTITY = {"experiment": "test", "seeds": 2}
SWEEP = ("ambiguity.csv", "ambiguity.md", "ambiguity.png")


def start(out, identity=IDENTITY, force=False, known=(), shard=None):
    return open_run(out, identity, force, out.parent / "results", known, shard)


def recorded(out) -> list[str]:
    return json.loads((out / RUN).read_text()).get("outputs", [])


def test_outputs_records_every_file_it_writes(tmp_path):
    out = tmp_path / "out"
    with start(out) as run:
        assert not run.resumed and run.out == out
        markdown = run.outputs.write_table("table", pd.DataFrame({"a": [1.5], "b": ["x"]}))
        run.outputs.write_text("report.md", "# report\n")
        run.outputs.folder("seeds")
        assert recorded(out) == ["report.md", "seeds", "table.csv", "table.md"]
    assert markdown == (out / "table.md").read_text() and "| 1.50 | x " in markdown
    assert json.loads((out / RUN).read_text())["config"] == IDENTITY
    assert not (out / LOCK_NAME).exists()


def test_force_removes_exactly_the_files_the_earlier_run_wrote(tmp_path):
    """The stale-file defect: a sweep wrote ambiguity.csv, .md and .png; a --force rerun without the sweep must
    not keep the .md beside the removed .csv (the registry knows the .md because it wrote it)."""
    out = tmp_path / "out"
    with start(out) as run:
        run.outputs.write_table("ambiguity", pd.DataFrame({"x": [1]}))
        run.outputs.write_text("ambiguity.png", "png")
        run.outputs.write_text("table.csv", "old")
    (out / "notes.txt").write_text("mine")
    with start(out, {**IDENTITY, "sweep": False}, force=True) as run:
        assert not run.resumed and not any((out / name).exists() for name in (*SWEEP, "table.csv"))
        run.outputs.write_text("table.csv", "new")
    assert (out / "notes.txt").read_text() == "mine"
    assert recorded(out) == ["table.csv"]


def test_force_on_a_run_that_recorded_nothing_removes_the_known_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN).write_text(json.dumps({"config": IDENTITY}))  # written before runs recorded their files
    for name in (*SWEEP, "notes.txt"):
        (out / name).write_text("old")
    with start(out, force=True, known=SWEEP):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", RUN]


def test_same_identity_resumes_and_another_is_refused(tmp_path):
    out = tmp_path / "out"
    with start(out) as run:
        run.outputs.write_text("summary.json", "{}")
    with start(out) as run:
        assert run.resumed and is_finished(out) and "summary.json" in run.outputs.names
    with pytest.raises(ExperimentError, match="not empty"):
        with start(out, {**IDENTITY, "seeds": 3}):
            pass
    assert not (out / LOCK_NAME).exists()


def test_out_none_resumes_the_newest_unfinished_run_of_the_identity(tmp_path):
    results = tmp_path / "results"
    with open_run(None, IDENTITY, False, results) as first:
        pass
    with open_run(None, IDENTITY, False, results) as again:
        assert again.out == first.out and again.resumed
    with open_run(None, {"other": 1}, False, results) as other:
        assert other.out != first.out and not other.resumed


def test_a_failed_run_leaves_no_lock_and_a_refused_one_no_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with start(out):
            assert (out / LOCK_NAME).exists()
            raise RuntimeError("training failed")
    assert not (out / LOCK_NAME).exists() and (out / RUN).exists()  # resumable, unlocked
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExperimentError, match="is not a directory"):
        with start(tmp_path / "file"):
            pass
    with pytest.raises(ExperimentError, match="cannot create"):
        with start(tmp_path / "file" / "out"):
            pass


def test_a_live_run_is_refused_naming_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        with pytest.raises(ExperimentError, match=r"in use by another run \(pid \d+ on "):
            with start(out):
                pass
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom imgpix.lock import OutputLock\n"
                               f"with OutputLock({str(out)!r}):\n    print('held', flush=True); time.sleep(600)"],
                              text=True, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ExperimentError, match="in use"):
        with start(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (out / LOCK_NAME).exists()  # left behind, stale
    with start(out) as run:
        assert not run.resumed
    assert not (out / LOCK_NAME).exists()


def test_shards_share_out_but_not_with_an_unsharded_run_or_the_same_shard(tmp_path):
    out = tmp_path / "out"
    with start(out, shard=(0, 2)) as first:
        with start(out, shard=(1, 2)) as second:
            assert second.resumed and first.out == second.out
        with pytest.raises(ExperimentError, match="in use"):
            with start(out, shard=(0, 2)):
                pass
        with pytest.raises(ExperimentError, match="shard 0-of-2"):
            with start(out):
                pass
    with start(out) as run:  # the shards are done
        with pytest.raises(ExperimentError, match="another run is writing"):
            with start(out, shard=(1, 2)):
                pass
        assert run.resumed
    assert sorted(p.name for p in out.iterdir()) == [RUN]  # no lock and no shard folder left


def test_entries_ignore_locks_and_temporaries(tmp_path):
    for name in (LOCK_NAME, ".table.csv.123.tmp", "table.csv"):
        (tmp_path / name).write_text("")
    assert [p.name for p in entries(tmp_path)] == ["table.csv"]
    assert is_temporary(".table.csv.123.tmp") and not is_temporary(".hidden")


def test_units_save_load_and_resume(tmp_path):
    units = Units(tmp_path, "cells", "{variant}_seed{seed}.json.gz")
    assert not units.done(variant="add", seed=1)
    units.save({"x": 1}, variant="add", seed=1)
    assert units.done(variant="add", seed=1) and units.load(variant="add", seed=1) == {"x": 1}
    assert [p.name for p in (tmp_path / "cells").iterdir()] == ["add_seed1.json.gz"]


def realistic_unit() -> dict:
    """A seed's result as the noise experiment saves it: confusion matrices, a tau curve keyed by floats,
    learning-curve histories and per-image records (pandas' string columns included)."""
    rng = np.random.default_rng(0)
    history = pd.DataFrame({"epoch": np.arange(1, 4), "updates": np.array([8, 16, 24]),
                            "loss_seg": [2.5, 1.75, float("nan")], "MIOU": [4.0, 7.5, 9.25]})
    records = pd.DataFrame({"n": rng.integers(1, 5, 6), "removed": rng.normal(size=6),
                            "kept": np.array([True, False] * 3),
                            "condition": pd.array(["oracle", "case1 (m=3)", None] * 2, dtype="str")})
    model = {"matrices": {"oracle": rng.integers(0, 500, (4, 21, 21), dtype=np.int32),
                          "unfused": np.zeros((0, 21, 21), np.int32)},
             "tau_curve": {0.0: 4.75, 0.25: 9.5, 1.0: float("inf")}, "labeler": None, "history": history,
             "updates": 24, "train_seconds": 28.12, "scores": np.linspace(0, 1, 5, dtype=np.float32)}
    return {"seed": 3, "models": {"fused": model}, "records": records, "sweep": [], "shape": (64, 21),
            "ok": True, "note": "nats", "mean": np.float64(0.5), "count": np.int64(-7), "names": ["a", 1.5, False]}


def assert_identical(a, b, where="unit"):
    """``b`` is ``a``: same types all the way down, arrays with their dtype and shape, frames with their dtypes."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert list(a.dtypes) == list(b.dtypes) and list(a.columns) == list(b.columns), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, strict=True)
        if a.dtype.kind == "f":
            assert np.array_equal(np.signbit(a), np.signbit(b)), where
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def test_units_round_trip_a_realistic_unit_exactly(tmp_path):
    units = Units(tmp_path, "seeds", "seed{seed}.json.gz")
    unit = realistic_unit()
    units.save(unit, seed=3)
    assert_identical(unit, units.load(seed=3))


def test_a_unit_is_gzip_json_the_standard_library_reads(tmp_path):
    path = tmp_path / "seed0.json.gz"
    write_data(path, realistic_unit())
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        raw = json.load(stream, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))  # strict JSON
    assert raw["seed"] == 3 and raw["note"] == "nats" and raw["ok"] is True
    matrix = raw["models"]["fused"]["matrices"]["oracle"]
    assert (matrix[TAG], matrix["dtype"], matrix["shape"]) == ("ndarray", "<i4", [4, 21, 21])
    assert len(matrix["data"]) == 4 * 21 * 21
    history = raw["models"]["fused"]["history"]
    assert history[TAG] == "DataFrame" and history["columns"] == ["epoch", "updates", "loss_seg", "MIOU"]
    assert history["data"][2]["data"][2] == "nan"
    assert not [p for p in tmp_path.iterdir() if is_temporary(p.name)]


def test_values_json_cannot_hold_are_refused_not_pickled():
    for value in (object(), {1, 2}, pd.Series([1]), np.array([object()]), pd.DataFrame({"a": [1]}, index=[5])):
        with pytest.raises(TypeError):
            to_json_data(value)
    with pytest.raises(ValueError, match="unknown"):
        from_json_data({TAG: "pickle"})
    assert from_json_data(to_json_data({TAG: 1, 2: "x"})) == {TAG: 1, 2: "x"}  # a key that looks like the tag


DTYPES = st.sampled_from(["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                          "float16", "float32", "float64", ">i4", ">f8", "<U3"])


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    return draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)))


@settings(max_examples=200, deadline=None)
@given(arrays())
def test_arrays_of_every_dtype_and_shape_round_trip(array):
    back = from_json_data(json.loads(json.dumps(to_json_data({"a": array, "s": array[()] if not array.ndim else 0}),
                                                allow_nan=False)))
    assert_identical(array, back["a"])
    if not array.ndim:
        assert_identical(array[()], back["s"])


@pytest.mark.parametrize("jobs", [1, 2])
def test_in_parallel_keeps_the_order_of_the_calls(jobs):
    assert in_parallel(operator.pow, [(2, i) for i in range(5)], jobs, "powers", False) == [1, 2, 4, 8, 16]


def test_in_parallel_raises_the_first_failure():
    with pytest.raises(ValueError):
        in_parallel(int, [("1",), ("not a number",), ("3",)], 2, "ints", False)
    with pytest.raises(ValueError, match="jobs"):
        in_parallel(int, [("1",)], 0, "ints", False)


def test_outputs_of_an_open_run_write_atomically(tmp_path):
    outputs = Outputs(tmp_path)
    outputs.write_json("summary.json", {"a": 1})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}
    assert not [p for p in tmp_path.iterdir() if is_temporary(p.name)]
