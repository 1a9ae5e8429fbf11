"""The A/B readout of a canary: each version's live metric from feedback labels, with a confidence
interval, a significance test between them, and a verdict only when the difference is significant.

``compare("churn-svc")`` reads what the deployment collected and the labels recorded for it
(:func:`~mlops_lab.record_feedback`). Accuracy (labels equal to predictions) is compared with the
two-proportion z-test and Wilson intervals; ``metric="mae"``, ``"rmse"`` or a function
``metric(y_true, y_pred)`` with a bootstrap. Until the difference is significant at ``level``
the verdict says how many more labelled rows would likely settle it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInput, NotFound
from ..workspace import in_workspace
from . import ab
from . import data as D
from .shadow import ShadowComparison, compare_shadow, shadow_of

__all__ = ["compare", "Comparison"]


@dataclass
class Comparison:
    """What :func:`compare` found: ``versions`` (a DataFrame, one row per version: traffic share,
    requests, errors, labelled rows, the metric with its interval, latency p50/p99), the ``test``
    of B against A, and the ``verdict`` in one sentence."""

    deployment: str
    metric: str
    level: float
    versions: Any
    test: ab.TestResult | None
    verdict: str
    significant: bool = False
    winner: str | None = None
    more_rows: int | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        import json

        return {
            "deployment": self.deployment, "metric": self.metric, "level": self.level,
            "versions": json.loads(self.versions.to_json(orient="records")),
            "test": None if self.test is None else dict(self.test.__dict__),
            "significant": self.significant, "winner": self.winner, "more_rows": self.more_rows,
            "verdict": self.verdict,
        }

    def __str__(self) -> str:
        return f"{self.verdict}\n{self.versions.to_string(index=False)}"

    def _repr_html_(self) -> str:
        return (f"<div><p><b>{html.escape(self.deployment)}</b>: {html.escape(self.verdict)}</p>"
                f"{self.versions.to_html(index=False, float_format=lambda x: f'{x:.4g}', na_rep='')}</div>")


def _versions(reg, deployment: str, rows, given) -> list[str]:
    """The two versions compared: those given, else the deployment's stable version and its
    canary, else the two that served most in the window."""
    if given is not None:
        if len(given) != 2:
            raise InvalidInput("versions= takes two versions: (A, B)")
        return [str(v) for v in given]
    try:
        record = reg.get_deployment(deployment)
        served = [m for m in record.models if m.get("traffic", 100) < 100 and not m.get("shadow")]
        if len(served) >= 2:
            served.sort(key=lambda m: bool(m.get("canary")))
            return [f"{m['name']}:{m['version']}" for m in served[:2]]
    except NotFound:
        pass
    counts = rows["model_version"].value_counts()
    if len(counts) < 2:
        raise InvalidInput(f"deployment {deployment!r} has one version in its collected data: there is nothing to compare",
                           hint="start a canary with update(ref, traffic=10), or give versions=(A, B)")
    return [str(v) for v in counts.index[:2]]


@in_workspace
def compare(deployment: str, *, metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
            level: float = 0.05, since: Any = None, versions: tuple[str, str] | None = None,
            higher_is_better: bool | None = None, shadow: bool | str | None = None) -> Comparison | ShadowComparison:
    """Each version's live ``metric`` (from feedback labels) with a ``1 - level`` interval, the
    test of B (the canary) against A (the stable version), and a verdict only when their
    difference is significant at ``level``; otherwise how many more labelled rows would likely
    tell (at 80 % power). ``higher_is_better`` is for a ``metric`` function (default True).

    A deployment with a shadow (``update(ref, shadow=True)``) gets the shadow's readout instead,
    a :class:`~mlops_lab.monitoring.shadow.ShadowComparison`: on the requests both answered, the
    agreement rate or the differences, the shift between their predictions, each one's
    latency, and ``.chart()``. ``shadow=True`` (or a version) asks for it after the shadow was
    stopped, ``shadow=False`` for the A/B readout.

    Examples
    --------
    >>> r = compare("churn-svc")  # doctest: +SKIP
    >>> r.verdict  # doctest: +SKIP
    'not enough evidence yet: about 1,240 more labelled rows (p = 0.31 at level 0.05)'
    """
    import pandas as pd

    from .api import _root

    if not 0 < level < 0.5:
        raise InvalidInput(f"level must be between 0 and 0.5, got {level}")
    if isinstance(metric, str) and metric != "accuracy" and metric not in ab.METRICS:
        raise InvalidInput(f"unknown metric {metric!r}", hint="use 'accuracy', " + ", ".join(repr(m) for m in ab.METRICS)
                           + " or a function metric(y_true, y_pred)")
    reg, root = _root(deployment)
    if shadow is None:
        shadow = versions is None and shadow_of(reg, deployment) is not None
    if shadow:
        return compare_shadow(reg, root, deployment, since=since, shadow=shadow if isinstance(shadow, str) else None)
    table = D.read_requests(root, D.to_utc(since), None, columns=[
        "request_time", "request_id", "row", "model_version", "status_code", "latency_ms", "prediction"])
    rows = table.to_pandas()
    if rows.empty:
        raise InvalidInput(f"deployment {deployment!r} has collected nothing" + (" in that window" if since else ""))
    a, b = _versions(reg, deployment, rows, versions)
    labelled = D.labelled(root, rows)
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    confidence = 1 - level
    out, samples = [], {}
    for v in (a, b):
        mine = rows[rows["model_version"] == v]
        requests = mine.drop_duplicates("request_id")
        lab = labelled[labelled["model_version"] == v]
        entry = {"version": v, "role": "A" if v == a else "B", "requests": len(requests),
                 "errors": int((requests["status_code"] >= 400).sum()), "labelled": len(lab)}
        if name == "accuracy":
            k = int(D.correct(lab).sum()) if len(lab) else 0
            samples[v] = (k, len(lab))
            lo, hi = ab.wilson_interval(k, len(lab), confidence)
            entry.update({name: k / len(lab) if len(lab) else math.nan, "ci_low": lo if len(lab) else math.nan,
                          "ci_high": hi if len(lab) else math.nan})
        else:
            fn = metric if callable(metric) else ab.METRICS[metric][0]
            y = pd.to_numeric(lab["label"], errors="coerce").to_numpy(float)
            p = pd.to_numeric(lab["prediction"], errors="coerce").to_numpy(float)
            keep = ~(np.isnan(y) | np.isnan(p))
            samples[v] = (y[keep], p[keep])
            entry[name] = fn(y[keep], p[keep]) if keep.any() else math.nan
            entry["ci_low"], entry["ci_high"] = ab.bootstrap_interval(y[keep], p[keep], fn, confidence) \
                if keep.sum() > 1 else (math.nan, math.nan)
        lat = requests["latency_ms"].dropna()
        entry["latency_p50_ms"] = float(lat.quantile(0.5)) if len(lat) else math.nan
        entry["latency_p99_ms"] = float(lat.quantile(0.99)) if len(lat) else math.nan
        out.append(entry)
    frame = pd.DataFrame(out)
    if callable(metric):
        higher_better = True if higher_is_better is None else higher_is_better
    else:
        higher_better = name == "accuracy" or ab.METRICS[metric][1]
    return _readout(deployment, name, level, frame, samples, a, b, metric, higher_better)


def _readout(deployment, name, level, frame, samples, a, b, metric, higher_better) -> Comparison:
    confidence = 1 - level
    n_a, n_b = int(frame.loc[0, "labelled"]), int(frame.loc[1, "labelled"])
    if min(n_a, n_b) < 2:
        short = [v for v, n in ((a, n_a), (b, n_b)) if n < 2]
        return Comparison(deployment, name, level, frame, None,
                          f"not enough evidence yet: {' and '.join(short)} {'has' if len(short) == 1 else 'have'} "
                          "fewer than 2 labelled rows (record_feedback)")
    if name == "accuracy":
        (k_a, _), (k_b, _) = samples[a], samples[b]
        test = ab.two_proportions(k_a, n_a, k_b, n_b, confidence)
    else:
        fn = metric if callable(metric) else ab.METRICS[metric][0]
        test = ab.bootstrap_difference(samples[a], samples[b], fn, confidence)
    va, vb = float(frame.loc[0, name]), float(frame.loc[1, name])
    f, d = (".3f", "+.3f") if name == "accuracy" else (".4g", "+.4g")
    stats = f"{name} {vb:{f}} against {va:{f}}, difference {test.difference:{d}} " \
            f"[{test.ci_low:{d}}, {test.ci_high:{d}}], p = {test.p_value:.2g}, {n_a:,} and {n_b:,} labelled rows"
    if test.p_value < level and test.difference != 0:
        winner = b if (test.difference > 0) == higher_better else a
        loser = a if winner == b else b
        return Comparison(deployment, name, level, frame, test,
                          f"{winner} is better than {loser} at level {level:g}: {stats}", True, winner)
    more = _more_rows(name, test, samples, a, b, n_a, n_b, level)
    if more is None:
        verdict = f"no difference seen yet, and none to size more labelling by ({stats})"
    elif more == 0:
        verdict = f"no significant difference at level {level:g} ({stats})"
    else:
        verdict = f"not enough evidence yet: about {more:,} more labelled rows (p = {test.p_value:.2g} at level {level:g}; {stats})"
    return Comparison(deployment, name, level, frame, test, verdict, more_rows=more)


def _more_rows(name, test, samples, a, b, n_a, n_b, level) -> int | None:
    """More labelled rows, over both versions, for the difference seen to show at ``level`` with
    80 % power if it is real: the two-proportion sample size for accuracy; for other metrics the
    bootstrap's standard error scaled with the square root of the rows."""
    if name == "accuracy":
        (k_a, _), (k_b, _) = samples[a], samples[b]
        need = ab.rows_needed(k_a / n_a, k_b / n_b, level)
        if need is None:
            return None
        return max(0, need - n_a) + max(0, need - n_b)
    if test.difference == 0:
        return None
    factor = ((ab.z(1 - level / 2) + ab.z(0.8)) * test.standard_error / abs(test.difference)) ** 2
    return max(0, math.ceil(n_a * factor) - n_a) + max(0, math.ceil(n_b * factor) - n_b)
