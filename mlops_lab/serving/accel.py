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


def faster_call(model: Any, method: str) -> Callable[[Any], Any] | None:
    """A faster function computing ``getattr(model, method)``, or None when there is none."""
    cls = type(model)
    classifier = _FORESTS.get(f"{cls.__module__}.{cls.__qualname__}")
    if classifier is None or method not in ("predict", "predict_proba") or (method == "predict_proba" and not classifier):
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


def _sklearn_only(model: Any) -> bool:
    def ok(est: Any) -> bool:
        cls = type(est)
        name = f"{cls.__module__}.{cls.__qualname__}"
        return cls.__module__.startswith("sklearn.") and name not in _BY_NAME

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
