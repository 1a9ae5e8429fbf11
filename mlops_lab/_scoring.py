"""What batch scoring, the Dask engine and the SQL function share: a chunk of rows as the model
takes it, checked against the signature like a request, and the model's output as a DataFrame."""

from __future__ import annotations

from typing import Any

from .errors import InvalidInput, InvalidRequest


def model_input(spec, frame: Any, start: int) -> Any:
    """The chunk as the model takes it, checked against the signature like a request."""
    import numpy as np

    try:
        if spec.kind == "columns":
            if isinstance(frame, np.ndarray):
                return spec._dataframe([spec.from_array(frame, "data")])
            missing = [c for c in spec.columns if c not in frame.columns]
            if missing:
                raise InvalidRequest(f"missing column {missing[0]!r} (the model takes {spec._cols_text()})", field=missing[0])
            return spec.frame(frame)
        if spec.kind == "tensor":
            arr = frame.to_numpy() if hasattr(frame, "to_numpy") else np.asarray(frame)
            return spec._check_tensor(arr, "data").data
        return frame
    except InvalidRequest as exc:
        if exc.row is not None:
            exc.row += start
        raise


def predictions_frame(y: Any, n: int) -> Any:
    """A model's output for ``n`` rows as a DataFrame: ``prediction`` (or ``prediction_0``...)
    columns, or the model's own when it returns a DataFrame."""
    import numpy as np
    import pandas as pd

    if isinstance(y, pd.DataFrame):
        return y.reset_index(drop=True)
    if isinstance(y, pd.Series):
        return y.reset_index(drop=True).to_frame(y.name or "prediction")
    arr = np.asarray(y)
    if arr.ndim == 2:
        return pd.DataFrame(arr, columns=[f"prediction_{i}" for i in range(arr.shape[1])], copy=False)
    if arr.ndim != 1 or len(arr) != n:
        raise InvalidInput(f"the model returned {arr.shape} for {n} rows: batch scoring needs one result per row")
    return pd.DataFrame({"prediction": arr}, copy=False)
