"""Model signatures inferred from a sample input, and the small input example kept with them.

A signature is a JSON document of one of two kinds:

* ``{"kind": "columns", "columns": [{"name": "age", "type": "integer", "dtype": "int64"}, ...]}``
  for tabular input (a DataFrame or a list of dicts);
* ``{"kind": "tensor", "dtype": "float64", "shape": [-1, 20]}`` for arrays (the first
  dimension, the number of rows, is free).

``type`` is one of ``integer``, ``float``, ``boolean``, ``string``, ``datetime``, ``object``;
``dtype`` is the exact NumPy/pandas dtype seen. ``missing`` says whether the column may lack a
value (JSON ``null``, NaN): true when the sample input or the baseline lacks one there, or when
the user says so at registration (``allow_missing``); a request lacking a value elsewhere is
refused with 422 before the model sees it. Signatures written before ``missing`` existed have
no such key, and their float columns take missing values as before.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from ..errors import InvalidInput

EXAMPLE_ROWS = 5


def _kind_of_dtype(dtype: Any) -> str:
    kind = getattr(dtype, "kind", None)
    name = str(dtype)
    if kind in ("i", "u") or name.startswith(("Int", "UInt")):
        return "integer"
    if kind == "f" or name.startswith("Float"):
        return "float"
    if kind == "b" or name == "boolean":
        return "boolean"
    if kind == "M" or name.startswith("datetime"):
        return "datetime"
    if kind in ("U", "S") or name in ("string", "str"):
        return "string"
    return "object"


def _type_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (_dt.date, _dt.datetime)):
        return "datetime"
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if kind is not None:
        return _kind_of_dtype(value.dtype)
    return "object"


_DTYPE_OF_TYPE = {
    "integer": "int64",
    "float": "float64",
    "boolean": "bool",
    "string": "object",
    "datetime": "datetime64[ns]",
    "object": "object",
}


def _is_dataframe(obj: Any) -> bool:
    t = type(obj)
    return t.__name__ == "DataFrame" and t.__module__.startswith("pandas")


def _is_ndarray(obj: Any) -> bool:
    return type(obj).__name__ == "ndarray" and type(obj).__module__ == "numpy"


def infer_signature(sample: Any) -> dict[str, Any]:
    """Infer a signature from a sample input.

    Examples
    --------
    >>> infer_signature([{"age": 31, "city": "Oslo"}])["columns"][0]
    {'name': 'age', 'type': 'integer', 'dtype': 'int64'}
    """
    if _is_dataframe(sample):
        if len(set(map(str, sample.columns))) != len(sample.columns):
            raise InvalidInput("sample_input has duplicate column names")
        cols = []
        for name, dtype in sample.dtypes.items():
            kind = _kind_of_dtype(dtype)
            if kind == "object" and len(sample):
                # pandas stores strings as object: look at the values.
                kinds = {_type_of_value(v) for v in sample[name].head(100) if v is not None}
                if len(kinds) == 1:
                    kind = kinds.pop()
            cols.append({"name": str(name), "type": kind, "dtype": str(dtype)})
        return {"kind": "columns", "columns": cols}
    if _is_ndarray(sample):
        shape = list(sample.shape)
        if not shape:
            raise InvalidInput("sample_input is a 0-dimensional array: give at least one row")
        return {"kind": "tensor", "dtype": str(sample.dtype), "shape": [-1, *shape[1:]]}
    if isinstance(sample, dict):
        return infer_signature([sample])
    if isinstance(sample, (list, tuple)):
        if not sample:
            raise InvalidInput("sample_input is empty: give at least one row")
        if all(isinstance(r, dict) for r in sample):
            columns: dict[str, set[str]] = {}
            for row in sample:
                for key, value in row.items():
                    kinds = columns.setdefault(str(key), set())
                    if value is not None and not (isinstance(value, float) and math.isnan(value)):
                        kinds.add(_type_of_value(value))
            cols = []
            for name, kinds in columns.items():
                if kinds == {"integer", "float"}:
                    kinds = {"float"}
                kind = kinds.pop() if len(kinds) == 1 else "object"
                cols.append({"name": name, "type": kind, "dtype": _DTYPE_OF_TYPE[kind]})
            return {"kind": "columns", "columns": cols}
        import numpy as np

        try:
            arr = np.asarray(sample)
        except ValueError as exc:
            raise InvalidInput(f"sample_input rows have different lengths: {exc}") from None
        if arr.dtype == object:
            raise InvalidInput("sample_input rows have different lengths or mixed types")
        return infer_signature(arr)
    raise InvalidInput(
        f"cannot infer a signature from {type(sample).__name__}: "
        "give a pandas DataFrame, a NumPy array, a list of rows or a list of dicts"
    )


def _missing_columns(data: Any, names: list[str]) -> set[str]:
    """The columns of ``data`` (a DataFrame or a list of dicts) that lack a value somewhere."""
    if data is None:
        return set()
    if _is_dataframe(data):
        present = [n for n in names if n in data.columns]
        return {n for n in present if bool(data[n].isna().any())}
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, (list, tuple)) and all(isinstance(r, dict) for r in data):
        out = set()
        for row in data:
            for n in names:
                v = row.get(n)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    out.add(n)
        return out
    return set()


def mark_missing(signature: dict[str, Any] | None, sample: Any, baseline: Any = None,
                 allow_missing: Any = None) -> dict[str, Any] | None:
    """Record on each column of a columns signature whether it may lack a value.

    ``allow_missing`` is ``True`` (every column), or column names the model takes missing
    values in although the sample and the baseline have none there."""
    if signature is None or signature.get("kind") != "columns":
        if allow_missing not in (None, False, [], ()):
            raise InvalidInput("allow_missing needs a sample_input with named columns (a DataFrame or a list of dicts)")
        return signature
    names = [c["name"] for c in signature["columns"]]
    if allow_missing is True:
        allowed = set(names)
    elif allow_missing in (None, False):
        allowed = set()
    else:
        if isinstance(allow_missing, str):
            allow_missing = [allow_missing]
        allowed = {str(a) for a in allow_missing}
        unknown = sorted(allowed - set(names))
        if unknown:
            raise InvalidInput(f"allow_missing names {', '.join(map(repr, unknown))}, not a column of sample_input")
    allowed |= _missing_columns(sample, names) | _missing_columns(baseline, names)
    for c in signature["columns"]:
        c["missing"] = c["name"] in allowed
    return signature


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", 1) == 0:
        return _jsonable(item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def input_example(sample: Any, rows: int = EXAMPLE_ROWS) -> Any:
    """The first few rows of ``sample`` as JSON-ready data (records or nested lists)."""
    if _is_dataframe(sample):
        head = sample.head(rows)
        return [{str(k): _jsonable(v) for k, v in rec.items()} for rec in head.to_dict("records")]
    if _is_ndarray(sample):
        return sample[:rows].tolist()
    if isinstance(sample, dict):
        return [{k: _jsonable(v) for k, v in sample.items()}]
    if isinstance(sample, (list, tuple)):
        head = list(sample[:rows])
        if all(isinstance(r, dict) for r in head):
            return [{str(k): _jsonable(v) for k, v in r.items()} for r in head]
        import numpy as np

        return np.asarray(head).tolist()
    return None


def to_dataframe(data: Any):
    """A pandas DataFrame from a DataFrame, an array, a list of rows or a list of dicts."""
    import pandas as pd

    if _is_dataframe(data):
        return data
    if isinstance(data, dict):
        data = [data]
    if _is_ndarray(data):
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        return pd.DataFrame(data, columns=[f"f{i}" for i in range(data.shape[1])])
    if isinstance(data, (list, tuple)) and data and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records(list(data))
    import numpy as np

    arr = np.asarray(data)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    return pd.DataFrame(arr, columns=[f"f{i}" for i in range(arr.shape[1])])
