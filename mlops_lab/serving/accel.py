"""Faster calls, with the same results, for models whose own call spends most of its time outside
the arithmetic.

**Rows as an array.** A scikit-learn model fitted on a pandas DataFrame of numbers turns the
DataFrame it is given back into an array before any arithmetic; building that DataFrame for
every request, and the model's checks of its column names, cost more than a linear model's
arithmetic. :func:`takes_array` says when the model can be given the request's rows as an array
in the fitted column order instead, with the same results: every estimator in it is
scikit-learn's own and none selects columns by name or runs the user's code on the frame
(``ColumnTransformer``, ``FunctionTransformer``), and it was fitted on the signature's columns
in their order. The server still compares both calls on the input example at start-up and keeps
the DataFrame when they differ.

**Forests, tree by tree.**
scikit-learn's forests (``RandomForest*``, ``ExtraTrees*``) score each tree through joblib even
with ``n_jobs=None``: for every one of the trees, joblib's wrapper enters scikit-learn's config
context and re-applies the process's warning filters. Measured here on a 100-tree
``RandomForestClassifier`` with 20 features: ``predict_proba`` takes 4.1 ms for 1 row, of which
the trees' own work is under 1 ms. :func:`faster_call` gives the forest's ``predict`` or
``predict_proba`` as the forest computes it with one job: the input validated once by the
forest, each tree's ``predict_proba`` (``predict`` for a regressor) with ``check_input=False``,
summed in tree order into zeros of float64, divided by the number of trees; and for a
classifier's ``predict``, the class of the highest mean probability. Same operations in the
same order, so the same bits: the server still compares both on the model's input example at
start-up (:meth:`.ServedModel.warm_up`) and keeps the model's own call if they differ.

Only exact classes (a subclass may score differently), one output, and ``n_jobs`` of None or 1
(with more jobs, the forest sums in the order threads finish).

**Linear models.** ``LogisticRegression``, ``LinearRegression`` and ``Ridge`` spend most of a
call on scikit-learn's checks of the input (its array namespace, dtype, finiteness, width):
measured here, ``LogisticRegression.predict`` takes 110 us for 1 row or 30, of which the
product is 4-6 us. :func:`faster_call` gives the call as the model computes it on rows that
are a finite float64 array of the fitted width: the same ``X @ coef_.T + intercept_``, then the
class of the sign (two classes) or of the highest score, or the logistic of the score (two
classes) or scikit-learn's own softmax (more). Any other input (integers, a missing value, a
sparse matrix, another width) goes to the model's own call, which answers or raises as it would.
Exact classes only, and a ``LogisticRegression`` whose ``multi_class`` is not one-vs-rest.

**Pipelines that select columns by name.** A ``Pipeline`` whose first step is a
``ColumnTransformer`` (numbers scaled, a category one-hot encoded) needs a DataFrame for its
column names, and selecting each transformer's columns from it by name, with scikit-learn's
checks of names and dtypes on every step, costs most of its call: 2.8 ms for one row of 20
columns here, against 0.5 ms for the same transformers' own work. :func:`columns_call` gives
the pipeline's call as the pipeline computes it, on the request's rows as one array (numbers, or
objects where a column holds strings) in the signature's column order: each fitted transformer
of the ``ColumnTransformer`` given its columns, as an array of the dtype the DataFrame's
columns would give it, stacked as the ``ColumnTransformer`` stacks them (sparse when it was
fitted to), then the pipeline's other steps and its final estimator (tree by tree for a
forest). Only scikit-learn's own estimators, the ``ColumnTransformer`` without
``transformer_weights``, ``passthrough`` columns or DataFrame output, and columns of one kind
per transformer (numbers, or strings with no missing value: pandas reads a missing string as
``NaN`` or ``None`` depending on its version). The server checks it on the input example at
start-up like the others and keeps the DataFrame when it differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Estimators that read a DataFrame by column name or hand it to the user's code.
_BY_NAME = {
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
}
# What scikit-learn warns on every call when a model fitted with column names gets an array.
NO_NAMES_WARNING = "X does not have valid feature names"

_FORESTS = {
    "sklearn.ensemble._forest." + name: name.endswith("Classifier")
    for name in ("RandomForestClassifier", "ExtraTreesClassifier", "RandomForestRegressor", "ExtraTreesRegressor")
}


_LINEAR = {
    "sklearn.linear_model._logistic.LogisticRegression": True,
    "sklearn.linear_model._base.LinearRegression": False,
    "sklearn.linear_model._ridge.Ridge": False,
}


def faster_call(model: Any, method: str) -> Callable[[Any], Any] | None:
    """A faster function computing ``getattr(model, method)``, or None when there is none."""
    cls = type(model)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name in _LINEAR:
        call, how = _linear_call(model, method, _LINEAR[name]), "the linear model's product, without scikit-learn's checks"
    elif name in _FORESTS:
        call, how = _forest_call(model, method, _FORESTS[name]), "tree by tree, without joblib's per-tree dispatch"
    else:
        return None
    if call is not None:
        call.how = how  # type: ignore[attr-defined] - said in the server's log
    return call


def _forest_call(model: Any, method: str, classifier: bool) -> Callable[[Any], Any] | None:
    if method not in ("predict", "predict_proba") or (method == "predict_proba" and not classifier):
        return None
    if getattr(model, "n_jobs", None) not in (None, 1) or getattr(model, "n_outputs_", None) != 1:
        return None
    trees = list(getattr(model, "estimators_", ()))
    validate = getattr(model, "_validate_X_predict", None)
    if not trees or validate is None:
        return None
    n_trees = len(trees)

    if not classifier:
        def predict(X: Any) -> np.ndarray:
            X = validate(X)
            out = np.zeros(X.shape[0], dtype=np.float64)
            for tree in trees:
                out += tree.predict(X, check_input=False)
            out /= n_trees
            return out

        return predict

    n_classes = int(model.n_classes_)
    classes = model.classes_

    def predict_proba(X: Any) -> np.ndarray:
        X = validate(X)
        out = np.zeros((X.shape[0], n_classes), dtype=np.float64)
        for tree in trees:
            out += tree.predict_proba(X, check_input=False)
        out /= n_trees
        return out

    if method == "predict_proba":
        return predict_proba

    def predict_class(X: Any) -> np.ndarray:
        return classes.take(np.argmax(predict_proba(X), axis=1), axis=0)

    return predict_class


def _linear_call(model: Any, method: str, classifier: bool) -> Callable[[Any], Any] | None:
    """A linear model's ``predict`` (``predict_proba`` for logistic regression) as scikit-learn
    computes it, without its checks' overhead: rows that are a finite float64 array of the fitted
    width get the model's ``X @ coef_.T + intercept_`` (the product scikit-learn makes), then the
    class of the sign or of the highest score, or the logistic (two classes) or scikit-learn's
    softmax (more); anything else (another dtype, a missing value, a sparse matrix) goes to the
    model's own call, which raises its own errors."""
    if method not in ("predict", "predict_proba") or (method == "predict_proba" and not classifier):
        return None
    coef = getattr(model, "coef_", None)
    width = getattr(model, "n_features_in_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype != np.float64 or width is None or coef.shape[-1] != width:
        return None
    if classifier and (coef.ndim != 2 or getattr(model, "multi_class", "deprecated") not in ("deprecated", "auto", "multinomial")):
        return None
    own = getattr(model, method)
    coef_t = coef.T if coef.ndim == 2 else coef
    intercept = model.intercept_

    def scores(X: Any) -> Any:
        if (type(X) is not np.ndarray or X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != width
                or not np.isfinite(X).all()):
            return None
        out = X @ coef_t + intercept
        # a classifier's one column of scores is flattened, a regressor's stays (as scikit-learn does)
        return out.reshape(-1) if classifier and out.ndim > 1 and out.shape[1] == 1 else out

    if not classifier:
        def regress(X: Any) -> Any:
            out = scores(X)
            return own(X) if out is None else out

        return regress
    classes = model.classes_
    if method == "predict":
        def predict(X: Any) -> Any:
            out = scores(X)
            if out is None:
                return own(X)
            return classes.take((out > 0).astype(np.intp) if out.ndim == 1 else np.argmax(out, axis=1), axis=0)

        return predict
    from scipy.special import expit
    from sklearn.utils.extmath import softmax

    def predict_proba(X: Any) -> Any:
        out = scores(X)
        if out is None:
            return own(X)
        if out.ndim == 1:
            prob = expit(out, out=out)
            return np.stack([1 - prob, prob], axis=1)
        return softmax(out, copy=False)

    return predict_proba


def columns_call(model: Any, method: str, columns: list[str], kinds: list[str], may_miss: list[bool],
                 dtypes: dict[str, np.dtype]) -> Callable[[np.ndarray], Any] | None:
    """``getattr(model, method)`` computed on rows as one array in the order of ``columns``
    instead of a DataFrame, or None (see the module's docstring). ``kinds`` and ``may_miss``
    are the signature's; ``dtypes`` the dtypes of the DataFrame's columns the server builds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(model) is not Pipeline or not model.steps or not _sklearn_only(model, allow=_COLUMN_TRANSFORMER):
        return None
    ct = model.steps[0][1]
    if type(ct) is not ColumnTransformer or ct.transformer_weights or _pandas_output(ct):
        return None
    names = list(getattr(ct, "feature_names_in_", ()))
    where = getattr(ct, "_transformer_to_input_indices", None)
    if not names or where is None or not set(names) <= set(columns):
        return None
    index = {c: i for i, c in enumerate(columns)}
    parts: list[tuple[Any, list[int], np.dtype, bool]] = []
    for name, trans, cols in ct.transformers_:
        selected = [str(names[i]) for i in where.get(name, ())]
        if isinstance(trans, str) and trans == "drop" or not selected:
            continue
        if isinstance(trans, str) or not hasattr(trans, "transform") or _pandas_output(trans) or not _sklearn_only(trans):
            return None  # "passthrough" hands over the frame's columns as they are
        idx = [index[c] for c in selected]
        kind = {"string" if kinds[i] == "string" else "number" if kinds[i] in ("float", "integer") else "other" for i in idx}
        if kind == {"string"} and not any(may_miss[i] for i in idx):
            dtype = np.dtype(object)
        elif kind == {"number"}:
            dtype = np.result_type(*(dtypes[columns[i]] for i in idx))
            if dtype.kind not in "biuf":
                return None
        else:
            return None
        parts.append((trans, idx, dtype, np.isscalar(cols)))
    rest = []
    for _, step in model.steps[1:-1]:
        if step is None or isinstance(step, str) and step == "passthrough":
            continue
        if _pandas_output(step):
            return None
        rest.append(step.transform)
    final = model.steps[-1][1]
    if isinstance(final, str) or final is None or not hasattr(final, method):
        return None
    last = faster_call(final, method) or getattr(final, method)
    if ct.sparse_output_:
        from scipy import sparse
        from sklearn.utils import check_array

        def stack(outs: list[Any]) -> Any:
            return sparse.hstack([check_array(o, accept_sparse=True, ensure_all_finite=False) for o in outs]).tocsr()
    else:
        def stack(outs: list[Any]) -> Any:
            return np.hstack([o.toarray() if hasattr(o, "toarray") else o for o in outs])

    def call(X: np.ndarray) -> Any:
        outs = []
        for trans, idx, dtype, one in parts:
            sub = X[:, idx[0]] if one else X[:, idx]
            # the layout of a DataFrame's block (columns stored one after another)
            outs.append(trans.transform(np.asarray(sub, dtype=dtype, order="F")))
        Xt = stack(outs) if outs else np.zeros((X.shape[0], 0))
        for transform in rest:
            Xt = transform(Xt)
        return last(Xt)

    return call


def _pandas_output(est: Any) -> bool:
    """Whether an estimator was set to give DataFrames (``set_output``)."""
    config = getattr(est, "_sklearn_output_config", None) or {}
    return config.get("transform", "default") != "default"


def takes_array(model: Any, columns: list[str]) -> bool:
    """Whether ``model`` (fitted on a DataFrame of ``columns``) computes the same on the frame's
    values as an array: see the module's docstring."""
    if not _sklearn_only(model):
        return False
    try:
        fitted = getattr(model, "feature_names_in_", None)
    except Exception:  # noqa: BLE001 - a Pipeline whose first step has no names
        fitted = None
    return fitted is None or [str(c) for c in fitted] == list(columns)


_COLUMN_TRANSFORMER = "sklearn.compose._column_transformer.ColumnTransformer"


def _sklearn_only(model: Any, allow: str = "") -> bool:
    """Whether the model and every estimator in it are scikit-learn's own, none of them one
    that reads a DataFrame by column name (except ``allow``)."""
    def ok(est: Any) -> bool:
        cls = type(est)
        name = f"{cls.__module__}.{cls.__qualname__}"
        return cls.__module__.startswith("sklearn.") and (name not in _BY_NAME or name == allow)

    if not ok(model) or not hasattr(model, "get_params"):
        return False
    try:
        params = model.get_params(deep=True)
    except Exception:  # noqa: BLE001
        return False
    return all(ok(v) for v in params.values() if hasattr(v, "fit") and not isinstance(v, type))


def same_output(a: Any, b: Any) -> bool:
    """Whether two model outputs are the same, value for value and type for type."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return False
