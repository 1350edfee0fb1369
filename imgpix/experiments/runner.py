"""The experiment skeleton: a run's output directory, the outputs registry, work units and the one process pool.

* :func:`open_run` opens the output directory of a configuration's run (its identity): a new one, the
  unfinished run of the same identity to resume, or with ``--force`` one whose earlier outputs are removed,
  and holds :class:`imgpix.lock.OutputLock` on it for the whole run, so a second run into it is refused.
  The shards of one run (``--shard i/n``) share the directory: each holds a lock of its own shard.
* :class:`Outputs` writes every file of a run (atomically, :mod:`imgpix.files`) and records its name in
  ``run.json``, so ``--force`` removes exactly the files the earlier run wrote.
* :class:`Units` is a folder of work units, one gzip-compressed JSON file per unit (a seed, a cell; numpy arrays
  and DataFrames included, :func:`imgpix.files.write_data`): saved when done, skipped when resumed, loaded to
  write the outputs.
* :func:`in_parallel` runs jobs in one process or in a pool of spawned worker processes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import files
from ..lock import LOCK_NAME, OutputInUse, OutputLock
from .report import markdown_table

RUN = "run.json"
SUMMARY = "summary.json"  # written last: its presence marks a finished run
SHARDS = ".imgpix-shards"  # the lock folders of the live shards of a run
PROBES = 5  # tries at another process's lock before it counts as held (a probe holds one for microseconds)


class ExperimentError(Exception):
    """A user-facing error (bad arguments, existing output, missing data): exit status 2."""


def run_stamp() -> str:
    """The default name of a new output directory: local time to the second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def is_finished(out: Path) -> bool:
    """A run is finished when its summary exists (written last)."""
    return (Path(out) / SUMMARY).is_file()


def _run_record(out: Path) -> dict:
    try:
        record = json.loads((Path(out) / RUN).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def entries(directory: Path) -> list[Path]:
    """Entries of ``directory``, less the temporary files of atomic writes and the run locks."""
    return [p for p in Path(directory).iterdir()
            if not (files.is_temporary(p.name) or p.name in (LOCK_NAME, SHARDS))]


class Outputs:
    """The files of a run in ``out``: each written atomically and its name recorded in ``run.json``."""

    def __init__(self, out: Path, names: Iterable[str] = ()):
        self.out = Path(out)
        self.names = set(names)

    def path(self, name: str) -> Path:
        """``out/name``, recorded as this run's (before anything is written there)."""
        if name not in self.names:
            self.names.add(name)
            record = _run_record(self.out)
            record["outputs"] = sorted(self.names | set(record.get("outputs", ())))
            files.write_json(self.out / RUN, record)
        return self.out / name

    def folder(self, name: str) -> Path:
        path = self.path(name)
        path.mkdir(exist_ok=True)
        return path

    def write_text(self, name: str, text: str) -> None:
        files.write_atomic(self.path(name), text)

    def write_json(self, name: str, obj) -> None:
        files.write_json(self.path(name), obj)

    def save_figure(self, name: str, fig) -> None:
        files.save_figure(fig, self.path(name))

    def write_table(self, name: str, frame, floatfmt: str = ".2f") -> str:
        """``name.csv`` (every number) and ``name.md`` (:func:`~imgpix.experiments.report.markdown_table`)
        from ``frame``; returns the Markdown."""
        self.write_text(f"{name}.csv", frame.to_csv(index=False))
        markdown = markdown_table(frame, floatfmt)
        self.write_text(f"{name}.md", markdown)
        return markdown


@dataclass
class Run:
    """An open output directory: where, whether an earlier run of the same identity is resumed, its outputs."""

    out: Path
    resumed: bool
    outputs: Outputs = field(repr=False)


def _probe(directory: Path, held: str) -> None:
    """ExperimentError(``held``) when a live process holds ``directory``'s run lock (a momentary probe
    of another process is waited out)."""
    for attempt in range(PROBES):
        try:
            with OutputLock(directory):
                return
        except OutputInUse as error:
            if attempt == PROBES - 1:
                raise ExperimentError(f"{held}: {error}") from None
            time.sleep(0.05 * (attempt + 1))


@contextlib.contextmanager
def _lock(out: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """The run's lock on ``out``; a shard's lock on its own folder under ``out`` (the shards of a run share
    ``out``, none of them beside an unsharded run)."""
    if shard is None:
        with OutputLock(out):
            shards = out / SHARDS
            for folder in sorted(shards.iterdir()) if shards.is_dir() else ():
                _probe(folder, f"shard {folder.name} of a sharded run is writing into {out}")
            yield
        return
    folder = out / SHARDS / f"{shard[0]}-of-{shard[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with OutputLock(folder):
            _probe(out, f"another run is writing into {out}")
            yield
    finally:
        for empty in (folder, folder.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()


def _resolve(out: Path | None, identity: dict, force: bool, results_root: Path) -> Path:
    if out is not None:
        return Path(out)
    if results_root.is_dir() and not force:  # the newest run of this configuration, finished or not
        for run in sorted((p for p in results_root.iterdir() if p.is_dir()), reverse=True):
            if _run_record(run).get("config") == identity:
                return run
    out, i = results_root / run_stamp(), 1
    while out.exists():
        out, i = results_root / f"{run_stamp()}-{i}", i + 1
    return out


def _remove(out: Path, names: Iterable[str]) -> None:
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


@contextlib.contextmanager
def open_run(out: Path | None, identity: dict, force: bool, results_root: Path, known: Iterable[str] = (),
             shard: tuple[int, int] | None = None) -> Iterator[Run]:
    """The output directory of a run of ``identity``, locked for the ``with`` block.

    * ``out=None``: the newest run of ``identity`` under ``results_root`` is resumed (a finished one
      only rewrites its outputs), else a new ``results_root/<stamp>`` is made.
    * A run of the same identity in ``out`` is resumed (a finished one only rewrites its outputs).
    * ``force``: the files and folders the earlier run in ``out`` recorded (``known``, every name the
      experiment may write, for a run that recorded none) are removed first; other files stay.
    * Any other non-empty ``out``, or a live run in it: :class:`ExperimentError` (nothing is touched).

    A refused or failed start leaves no lock behind (nor ``out``, when it made it and it is empty).
    """
    out = _resolve(out, identity, force, results_root)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} exists and is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExperimentError(f"cannot create the output directory {out}: {error.strerror or error}") from None
    started = False
    try:
        with _lock(out, shard):
            record = _run_record(out)
            resumed = False
            if entries(out):
                if force:
                    _remove(out, (*record.get("outputs", known), RUN, SUMMARY))
                    record = {}
                elif record.get("config") == identity:  # unfinished: resumed; finished: its outputs rewritten
                    resumed = True
                else:
                    raise ExperimentError(f"output directory {out} already exists and is not empty; pass --force "
                                          "to overwrite it or choose another --out (an unfinished run of the same "
                                          "configuration is resumed instead)")
            if not resumed:
                record = {"config": identity, "started": datetime.now().isoformat(timespec="seconds")}
                files.write_json(out / RUN, record)
            started = True
            yield Run(out, resumed, Outputs(out, record.get("outputs", ())))
    except OutputInUse as error:
        raise ExperimentError(str(error)) from None
    finally:
        if created and not started:
            with contextlib.suppress(OSError):
                out.rmdir()


class Units:
    """A folder of work units: one file per unit, named ``pattern.format(**key)`` (``.json.gz``), written
    atomically as gzip-compressed JSON (:func:`imgpix.files.write_data`: numpy arrays and DataFrames come back
    with their dtypes); a unit whose file exists is done (a resumed run skips it)."""

    def __init__(self, out: Path, folder: str, pattern: str):
        self.folder, self.pattern = Path(out) / folder, pattern

    def path(self, **key) -> Path:
        return self.folder / self.pattern.format(**key)

    def done(self, **key) -> bool:
        return self.path(**key).is_file()

    def save(self, result, **key) -> None:
        self.folder.mkdir(exist_ok=True)
        files.write_data(self.path(**key), result)

    def load(self, **key):
        return files.read_data(self.path(**key))


def _ignore_interrupts() -> None:
    """A worker's start: Ctrl-C reaches the main process only, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def in_parallel(job: Callable, calls: list[tuple], jobs: int, desc: str, progress: bool,
                steps: Callable[[], tuple[int, int]] | None = None) -> list:
    """``job(*call)`` for every call, with a progress bar; results in the order of ``calls``.

    With ``jobs > 1`` and more than one call, ``min(jobs, len(calls))`` spawned worker processes run them
    (each sets its own torch threads). The first failure cancels the calls not yet started and is raised;
    Ctrl-C stops the workers at once (what they finished is saved by the jobs themselves). ``steps``, polled
    every second, gives (steps done, steps in all) of the whole batch (e.g. epochs of every model): the bar
    counts those, so its rate and ETA cover the workers running side by side."""
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not calls:
        return []
    if jobs == 1 or len(calls) <= 1:
        return [job(*call) for call in tqdm(calls, desc=desc, disable=not progress)]
    results: list = [None] * len(calls)
    pool = ProcessPoolExecutor(min(jobs, len(calls)), mp_context=get_context("spawn"), initializer=_ignore_interrupts)
    futures: dict = {}
    bar = tqdm(total=steps()[1] if steps else len(calls), desc=desc, unit=" epochs" if steps else "",
               disable=not progress)
    try:  # from the first submit on: a signal while the workers start must stop them too
        futures = {pool.submit(job, *call): i for i, call in enumerate(calls)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for done in finished:
                results[futures[done]] = done.result()
            bar.update((steps()[0] if steps else len(futures) - len(pending)) - bar.n)
    except BaseException as error:
        for future in futures:
            future.cancel()
        if isinstance(error, KeyboardInterrupt):
            for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop running calls
                process.terminate()
        raise
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    return results
