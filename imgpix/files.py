"""Every atomic write: a temporary file beside the target, then one rename (a crash never leaves a torn file).

Text, JSON, data (:func:`write_data`: gzip-compressed JSON that holds numpy arrays and pandas DataFrames), torch
states and figures all go through :func:`replace_atomically`, so their temporaries share one name pattern,
``.<name>.<pid>.tmp``, that :func:`is_temporary` recognises and :func:`remove_torn_files` cleans up. Nothing heavy
is imported here until a write needs it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import Callable

TEMPORARY_SUFFIX = ".tmp"


def _temporary(path: Path, owner: str = "") -> Path:
    """Where an atomic write of ``path`` puts its data first: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{owner or os.getpid()}{TEMPORARY_SUFFIX}")


def is_temporary(name: str) -> bool:
    """True for the name of an atomic write's temporary file (one a kill may have left behind)."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def remove_torn_files(folder: Path, names) -> None:
    """Delete the temporaries of atomic writes of ``names`` in ``folder`` that a kill left behind."""
    for name in names:
        for torn in Path(folder).glob(_temporary(Path(name), "*").name):
            torn.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary beside ``path``, then rename it to ``path``; on any error the
    temporary is removed and ``path`` keeps its previous content."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (values JSON cannot hold are written with ``str``)."""
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    import torch

    replace_atomically(path, lambda tmp: torch.save(obj, tmp))


TAG = "__type__"  # the key of a JSON object that stands for a value JSON has no type for


def to_json_data(obj):
    """``obj`` as plain JSON values, read back exactly by :func:`from_json_data`.

    None, bools, ints, finite floats, strings, lists and dicts with string keys stay as they are. Any other
    value becomes an object tagged ``{"__type__": ...}``: ``float`` (NaN or infinite: its ``value`` as text,
    nan, -nan, inf or -inf), ``tuple`` and ``dict`` (other keys; ``items`` a list of [key, value] pairs),
    ``ndarray`` and ``scalar`` (numpy: ``dtype`` as numpy's type string, e.g. ``<i4``, ``shape`` and the flat
    ``data`` in C order, non-finite floats as text) and ``DataFrame`` (pandas, with a RangeIndex: ``columns``,
    one ``ndarray`` or ``extension`` array (``dtype`` as pandas names it, ``data`` a list) per column, ``index``
    as [start, stop, step]). Anything else is refused with a TypeError."""
    import numpy as np
    import pandas as pd

    if obj is None or type(obj) in (bool, int, str):
        return obj
    if type(obj) is float:
        return obj if math.isfinite(obj) else {TAG: "float", "value": _non_finite(obj)}
    if type(obj) is list:
        return [to_json_data(v) for v in obj]
    if type(obj) is tuple:
        return {TAG: "tuple", "items": [to_json_data(v) for v in obj]}
    if type(obj) is dict:
        if TAG not in obj and all(type(k) is str for k in obj):
            return {k: to_json_data(v) for k, v in obj.items()}
        return {TAG: "dict", "items": [[to_json_data(k), to_json_data(v)] for k, v in obj.items()]}
    if type(obj) is np.ndarray or isinstance(obj, np.generic):
        return _json_array(np.asarray(obj), "scalar" if isinstance(obj, np.generic) else "ndarray")
    if type(obj) is pd.DataFrame:
        return _json_frame(obj)
    raise TypeError(f"cannot store a {type(obj).__module__}.{type(obj).__qualname__} as JSON data")


def _non_finite(value: float) -> str:
    """NaN or an infinity as text Python and numpy read back, the sign included: nan, -nan, inf, -inf."""
    return "-nan" if math.isnan(value) and math.copysign(1.0, value) < 0 else str(value)


def _json_array(array, tag: str) -> dict:
    if array.dtype.kind not in "biufU":
        raise TypeError(f"cannot store a numpy array of dtype {array.dtype} as JSON data")
    data = array.ravel().tolist()
    if array.dtype.kind == "f":
        data = [v if math.isfinite(v) else _non_finite(v) for v in data]
    return {TAG: tag, "dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def _json_frame(frame) -> dict:
    import numpy as np
    import pandas as pd

    if type(frame.index) is not pd.RangeIndex:
        raise TypeError(f"cannot store a DataFrame with a {type(frame.index).__name__} as JSON data")
    columns = []
    for i, dtype in enumerate(frame.dtypes):
        column = frame.iloc[:, i]
        numpy = isinstance(dtype, np.dtype) and dtype.kind in "biuf"
        columns.append(_json_array(column.to_numpy(), "ndarray") if numpy else
                       {TAG: "extension", "dtype": str(dtype), "data": [to_json_data(v) for v in column.tolist()]})
    index = frame.index
    return {TAG: "DataFrame", "columns": [to_json_data(c) for c in frame.columns], "data": columns,
            "index": [index.start, index.stop, index.step]}


def from_json_data(value):
    """The value :func:`to_json_data` encoded."""
    if type(value) is list:
        return [from_json_data(v) for v in value]
    if type(value) is not dict:
        return value
    tag = value.get(TAG)
    if tag is None:
        return {k: from_json_data(v) for k, v in value.items()}
    if tag == "float":
        return float(value["value"])
    if tag == "tuple":
        return tuple(from_json_data(v) for v in value["items"])
    if tag == "dict":
        return {from_json_data(k): from_json_data(v) for k, v in value["items"]}
    import numpy as np
    import pandas as pd

    if tag in ("ndarray", "scalar"):
        array = np.array(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
        return array[()] if tag == "scalar" else array
    if tag == "extension":
        return pd.array([from_json_data(v) for v in value["data"]], dtype=value["dtype"])
    if tag == "DataFrame":
        frame = pd.DataFrame({i: from_json_data(c) for i, c in enumerate(value["data"])},
                             index=pd.RangeIndex(*value["index"]))
        frame.columns = pd.Index([from_json_data(c) for c in value["columns"]])
        return frame
    raise ValueError(f"unknown {TAG} {tag!r} in JSON data")


def write_data(path: Path, obj) -> None:
    """``obj`` (:func:`to_json_data`) as gzip-compressed JSON, atomically."""
    text = json.dumps(to_json_data(obj), separators=(",", ":"), allow_nan=False)
    replace_atomically(path, lambda tmp: tmp.write_bytes(gzip.compress(text.encode(), compresslevel=6, mtime=0)))


def read_data(path: Path):
    """The value :func:`write_data` wrote to ``path``."""
    return from_json_data(json.loads(gzip.decompress(Path(path).read_bytes())))


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save the matplotlib figure ``fig`` atomically (format from ``path``'s suffix, e.g. PNG) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:
        replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
