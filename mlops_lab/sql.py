"""A registered version as a SQL function on a DuckDB connection, vectorized over Arrow arrays.

``sql_function(con, "churn@production", name="churn")`` lets an analyst write
``SELECT churn(age, plan, usage) FROM 'customers/*.parquet'``. DuckDB calls the function once per
vector of rows (2,048 by default) with one Arrow array per argument. The model is loaded once,
when the function is registered; the arguments are checked against the version's signature as a
scoring request is (their number, each column's type, missing values where the signature has
none), and what does not fit is a one-line SQL error naming the column. With ``collect``, the
calls are collected like a deployment's requests, so ``collected_data`` and ``monitor`` show them.
``mlops-lab sql QUERY.sql --model REF`` runs a query file the same way from CI.
"""

from __future__ import annotations

import atexit
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput
from .workspace import current_registry, in_workspace

__all__ = ["sql_function", "run_sql"]

#: DuckDB's name of the type a prediction column has, by NumPy kind.
_RETURN_TYPES = {"b": "BOOLEAN", "i": "BIGINT", "u": "BIGINT", "f": "DOUBLE", "U": "VARCHAR", "O": "VARCHAR"}


@dataclass
class SQLFunction:
    """A version registered as a function on one DuckDB connection."""

    name: str
    ref: str
    columns: list[str]
    return_type: str
    #: Whether the model is given an array in the fitted column order (same results on its example).
    on_array: bool = False
    collected_as: str | None = None
    calls: int = 0
    rows: int = 0
    _collector: Any = field(default=None, repr=False)

    def flush(self) -> None:
        """Write what was collected so far (done at exit too)."""
        if self._collector is not None:
            self._collector.flush()

    def close(self) -> None:
        if self._collector is not None:
            self._collector.close()
            self._collector = None


def _kind_ok(kind: str, arrow_type: Any) -> bool:
    import pyarrow.types as t

    if t.is_null(arrow_type):
        return True
    if kind == "float":
        return t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_decimal(arrow_type)
    if kind == "integer":
        return t.is_integer(arrow_type)
    if kind == "boolean":
        return t.is_boolean(arrow_type)
    if kind == "datetime":
        return t.is_timestamp(arrow_type) or t.is_date(arrow_type) or t.is_string(arrow_type) or t.is_large_string(arrow_type)
    return t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_dictionary(arrow_type)


def _sql_type(arrow_type: Any) -> str:
    import pyarrow.types as t

    if t.is_integer(arrow_type):
        return "an integer"
    if t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return "a number"
    if t.is_boolean(arrow_type):
        return "a boolean"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return "text"
    return str(arrow_type)


@in_workspace
def sql_function(con: Any, ref: Any, name: str | None = None, *, collect: bool | str = False) -> SQLFunction:
    """Register version ``ref`` as the SQL function ``name`` (default: the model's name) on the
    DuckDB connection ``con``; its arguments are the signature's columns, in order.

    ``collect=True`` collects every call (inputs and predictions, like a deployment's requests)
    under the name ``"<name>-sql"`` in the collection store; a string names it instead.

    Examples
    --------
    >>> import duckdb  # doctest: +SKIP
    >>> con = duckdb.connect()  # doctest: +SKIP
    >>> ml.sql_function(con, "churn@production", name="churn")  # doctest: +SKIP
    >>> con.sql("SELECT id, churn(age, plan, usage) AS p FROM 'customers/*.parquet'").df()  # doctest: +SKIP
    """
    import numpy as np
    import pyarrow as pa

    from ._scoring import model_input
    from .refs import check_name
    from .registry.inputs import InputSpec
    from .serving.accel import NO_NAMES_WARNING, faster_call, same_output, takes_array

    reg = current_registry()
    mv = reg.get_version(ref)
    spec = InputSpec(mv.signature)
    if spec.kind != "columns":
        raise InvalidInput(f"{mv.ref} takes {'a tensor' if spec.kind == 'tensor' else 'no declared input'}: a SQL "
                           "function needs named input columns", hint="register the model with a DataFrame sample_input")
    name = name or mv.name.replace("-", "_").replace(".", "_")
    if not name.isidentifier():
        raise InvalidInput(f"{name!r} is not a SQL function name", hint="use letters, digits and _")
    model = mv.load()
    columns, kinds = list(spec.columns), list(spec.types)
    may_miss = list(getattr(spec, "may_miss", [True] * len(columns)))
    wanted = ", ".join(columns)

    def predict(frame):
        y = np.asarray(model.predict(model_input(spec, frame, 0)))
        if y.ndim != 1:
            raise InvalidInput(f"{mv.ref} returns {y.shape[1:]} values per row: a SQL function returns one")
        return y

    # The return type: what the model answers on its own input example.
    from .registry.signature import to_dataframe

    example = to_dataframe(mv.input_example) if mv.input_example is not None else None
    out_kind = predict(example).dtype.kind if example is not None else "f"
    return_type = _RETURN_TYPES.get(out_kind, "VARCHAR")

    # A model fitted on numbers that computes the same on an array in the fitted column order
    # (checked on the example, as the scoring server does: serving.accel) is given one: a
    # DataFrame per 2,048-row vector and the model's name checks cost more than the arithmetic.
    array_call = None
    inner = getattr(model, "model", model)  # the estimator a flavor's loader wraps
    if example is not None and all(k in ("float", "integer") for k in kinds) and takes_array(inner, columns):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NO_NAMES_WARNING, category=UserWarning)
            x = np.column_stack([example[c].to_numpy(dtype=np.float64) for c in columns])
            for candidate in (faster_call(inner, "predict"), model.predict):
                try:
                    if candidate is not None and same_output(np.asarray(candidate(x)), predict(example)):
                        array_call = candidate
                        break
                except Exception:  # noqa: BLE001 - the DataFrame stays
                    pass

    if array_call is not None:
        # scikit-learn would warn on every vector that the array has no column names: they are
        # the ones it was fitted with, in order (set once, not per call: DuckDB calls from several
        # threads, and catch_warnings is not thread-safe).
        warnings.filterwarnings("ignore", message=NO_NAMES_WARNING, category=UserWarning)
    fn = SQLFunction(name, mv.ref, columns, return_type, on_array=array_call is not None)
    if collect:
        from .monitoring.collector import CollectConfig, Collector
        from .monitoring.store import CollectionStore

        fn.collected_as = collect if isinstance(collect, str) else f"{name}-sql"
        check_name(fn.collected_as, "collection name")
        store = CollectionStore.of(reg.settings)
        store.check()
        # Parquet written directly by the collector's thread (no compactor process for a kernel)
        fn._collector = Collector(fn.collected_as, CollectConfig(**store.spec(), stage_budget_mb=0))
        atexit.register(fn.close)
    record_types = ["float" if k in ("float", "integer") else "bool" if k == "boolean" else "string" for k in kinds]

    def call(*arrays):
        if len(arrays) != len(columns):
            raise ValueError(f"{name}() takes {len(columns)} arguments ({wanted}), got {len(arrays)}")
        for i, (col, kind, arr) in enumerate(zip(columns, kinds, arrays)):
            if not _kind_ok(kind, arr.type):
                raise ValueError(f"{name}() argument {i + 1} is column {col!r}, which takes {kind} values, "
                                 f"got {_sql_type(arr.type)}")
            if arr.null_count and not may_miss[i]:
                raise ValueError(f"{name}() argument {i + 1}, column {col!r}, has a missing value (NULL) in row "
                                 f"{arr.is_null().index(True).as_py() + 1} of this batch, and {mv.ref} takes none")
        t0 = time.perf_counter()
        n = len(arrays[0])
        if array_call is not None:
            inputs = np.column_stack([a.to_numpy(zero_copy_only=False) for a in arrays]).astype(np.float64, copy=False)
            y = np.asarray(array_call(inputs))
        else:
            frame = pa.Table.from_arrays(list(arrays), names=columns).to_pandas()
            try:
                y = predict(frame)
            except InvalidInput as exc:  # a value the signature refuses: the same words as a request's
                raise ValueError(f"{name}(): {exc}") from None
            inputs = None
        fn.calls += 1
        fn.rows += n
        if fn._collector is not None:
            from .monitoring.records import Record

            if inputs is None:
                inputs = frame.to_numpy(dtype=float) if all(t == "float" for t in record_types) else frame.to_numpy(dtype=object)
            fn._collector.add(Record(time.time(), f"sql-{uuid.uuid4().hex[:16]}", mv.ref, 200,
                                     (time.perf_counter() - t0) * 1000, None, inputs, columns, record_types, y, n))
        return pa.array(y if y.dtype.kind != "O" else [None if v is None else str(v) for v in y])

    con.create_function(name, call, None, return_type, type="arrow", null_handling="special")
    return fn


def run_sql(query: str, models: dict[str, Any], *, collect: bool = False):
    """Run ``query`` on a fresh DuckDB connection with each ``name -> ref`` of ``models``
    registered as a function; the result as a pyarrow Table (``mlops-lab sql``)."""
    try:
        import duckdb
    except ImportError:
        raise InvalidInput("SQL functions need DuckDB: pip install duckdb") from None
    con = duckdb.connect()
    functions = [sql_function(con, ref, name, collect=collect) for name, ref in models.items()]
    try:
        result = con.sql(query)
        return (getattr(result, "to_arrow_table", None) or result.fetch_arrow_table)()  # the name before DuckDB 1.4
    except duckdb.Error as exc:
        raise InvalidInput(sql_error(exc)) from None
    finally:
        for f in functions:
            f.close()
        con.close()


def sql_error(exc: Exception) -> str:
    """DuckDB's error as one line: a UDF's own message without DuckDB's wrapping."""
    text = str(exc)
    marker = "Python exception occurred while executing the UDF: "
    if marker in text:
        text = text.split(marker, 1)[1]
        if text.startswith("ValueError: "):
            text = text[len("ValueError: "):]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
