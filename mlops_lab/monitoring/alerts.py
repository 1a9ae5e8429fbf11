"""Alert rules on a deployment's collected data, and their evaluation.

``set_alerts("churn-svc", {"error_rate": 0.05, "latency_p99_ms": 250, "accuracy": 0.8})`` stores
rules in the registry (each a ``kind``, a ``threshold`` and a ``window``); ``check_alerts("churn-svc")``
evaluates them now on what the deployment collected in each rule's window and records every
firing as an event with its evidence. ``mlops-lab check DEPLOYMENT`` exits non-zero when one
fires, for a CI pipeline to gate on. While a deployment runs, a :class:`Watcher` evaluates them
and sends each firing, and its resolution, to the webhook.

Kinds (a rule fires when the value is above its threshold; ``accuracy`` when below):

- ``error_rate``: the share of requests answered 4xx/5xx;
- ``latency_p99_ms``: the 99th percentile of the requests' latency;
- ``accuracy``: live accuracy from feedback labels;
- ``drift``: the number of drifted features against the baseline (threshold 0: any);
- ``dropped_rows``: rows the collector could not keep.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..workspace import current_registry, in_workspace
from . import data as D

__all__ = ["set_alerts", "get_alerts", "check_alerts", "AlertCheck", "Watcher"]

log = logging.getLogger(__name__)

#: Seconds before each retry of a webhook that failed (then the delivery is recorded as failed).
RETRY_DELAYS = (1, 2, 4, 8, 16, 32)

#: kind -> (fires when the value is "above" or "below" the threshold, default window, what it measures)
KINDS: dict[str, tuple[str, str, str]] = {
    "error_rate": ("above", "15min", "share of requests answered 4xx/5xx"),
    "latency_p99_ms": ("above", "15min", "99th percentile latency, ms"),
    "accuracy": ("below", "1d", "live accuracy from feedback labels"),
    "drift": ("above", "1h", "drifted features against the baseline"),
    "dropped_rows": ("above", "1h", "collected rows dropped"),
}


def _rule(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or "kind" not in item:
        raise InvalidInput(f"an alert rule is a dict with a 'kind', got {item!r}",
                           hint='e.g. {"kind": "error_rate", "threshold": 0.05, "window": "15min"}')
    unknown = set(item) - {"kind", "threshold", "window"}
    if unknown:
        raise InvalidInput(f"an alert rule takes kind, threshold and window, not {sorted(unknown)[0]!r}")
    kind = item["kind"]
    if kind not in KINDS:
        raise InvalidInput(f"unknown alert kind {kind!r}", hint="use one of " + ", ".join(KINDS))
    threshold = item.get("threshold", 0 if kind in ("drift", "dropped_rows") else None)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidInput(f"the {kind} rule needs a number as its threshold, got {threshold!r}")
    window = item.get("window", KINDS[kind][1])
    D.parse_duration(window)  # one line if it is not a duration
    return {"kind": kind, "threshold": float(threshold), "window": str(window)}


def parse_rules(rules: Any) -> list[dict[str, Any]]:
    """Rules as a list of ``{"kind", "threshold", "window"}``, or ``{kind: threshold}``."""
    if isinstance(rules, dict):
        rules = [{"kind": k, "threshold": v} for k, v in rules.items()]
    if not isinstance(rules, (list, tuple)):
        raise InvalidInput("alert rules are a list of rules or a {kind: threshold} dict")
    return [_rule(r) for r in rules]


@in_workspace
def set_alerts(deployment: str, rules: Any, *, webhook: str | None = None, every: Any = "1min") -> list[dict[str, Any]]:
    """Store ``deployment``'s alert rules in the registry (replacing any; ``[]`` removes them).
    While the deployment runs its supervisor evaluates them ``every`` so often; a rule that starts
    firing is recorded as an event and POSTed as JSON to ``webhook`` (an http(s) URL), retried
    with backoff. Returns the rules as stored."""
    parsed = parse_rules(rules)
    if webhook is not None and not str(webhook).startswith(("http://", "https://")):
        raise InvalidInput(f"the webhook must be an http:// or https:// URL, got {webhook!r}")
    seconds = D.parse_duration(every)
    if seconds < 1:
        raise InvalidInput(f"alert rules are evaluated at most once a second, not every {every!r}")
    current_registry().set_alert_rules(deployment, parsed, webhook, seconds)
    return parsed


@in_workspace
def get_alerts(deployment: str) -> dict[str, Any]:
    """The rules, the webhook and the latest firings of a deployment."""
    reg = current_registry()
    reg.get_deployment(deployment)  # DeploymentNotFound, with close names
    rules, webhook = reg.alert_rules(deployment)
    return {"rules": rules, "webhook": webhook, "events": reg.alert_events(deployment, limit=20)}


def rule_key(rule: dict[str, Any]) -> str:
    """One rule as a key (its JSON, keys sorted): events name their rule this way."""
    return json.dumps(rule, sort_keys=True)


def recent_firings(reg, deployment: str, within_s: float = 86400.0) -> dict[str, Any]:
    """For a status view (the sidebar's badge and notifications, the model card): ``count``, the
    rules of ``deployment`` firing now (still set, and their latest event of the last ``within_s``
    seconds a firing: a rule that resolved is not counted); ``firings``, how many times its rules
    fired in that time; ``latest``, the latest firing of a rule firing now; ``resolved``, the
    resolutions of the rules whose latest event is one."""
    rules = {rule_key(r) for r in reg.alert_rules(deployment)[0]}
    events = reg.alert_events(deployment, since=time.time() - within_s, limit=1000)  # newest first
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        last.setdefault(rule_key(event["rule"]), event)
    now = [e for key, e in last.items() if key in rules]
    firing = [e for e in now if e["status"] == "firing"]
    latest = max(firing, key=lambda e: (e["time"], e["id"]), default=None)
    return {"count": len(firing), "firings": sum(e["status"] == "firing" for e in events),
            "latest": None if latest is None else {k: latest[k] for k in ("id", "time", "rule", "value")},
            "resolved": [{k: e[k] for k in ("id", "time", "rule")} for e in now if e["status"] == "resolved"]}


@dataclass
class AlertCheck:
    """Every rule's value now (``results``) and those that fired (``firings``, each recorded)."""

    deployment: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def firings(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["fired"]]

    @property
    def ok(self) -> bool:
        return not self.firings

    def __str__(self) -> str:
        if not self.results:
            return f"{self.deployment}: no alert rules (set_alerts)"
        lines = []
        for r in self.results:
            rule = r["rule"]
            value = "no data" if r["value"] is None else f"{r['value']:.4g}"
            mark = "FIRING" if r["fired"] else "ok"
            lines.append(f"{mark:<6} {rule['kind']} over {rule['window']}: {value} "
                         f"({KINDS[rule['kind']][0]} {rule['threshold']:g} fires)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "ok": self.ok, "results": self.results}


def evaluate(reg, deployment: str, rule: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """One rule's value over its window and whether it fires, with the evidence."""
    from .api import _drift, _root

    _, root = _root(deployment, reg, must_exist=False)
    import datetime as dt

    now = time.time() if now is None else now
    seconds = D.parse_duration(rule["window"])
    until = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    since = until - dt.timedelta(seconds=seconds)
    kind, value, evidence = rule["kind"], None, {}
    if kind in ("error_rate", "latency_p99_ms"):
        stats = D.request_stats(D.read_requests(root, since, until, columns=["row", "status_code", "latency_ms"]))
        evidence = {"requests": stats["requests"], "errors": stats["errors"]}
        if stats["requests"]:
            value = stats["errors"] / stats["requests"] if kind == "error_rate" else stats["latency_p99_ms"]
    elif kind == "accuracy":
        rows = D.read_requests(root, since, until, columns=["request_id", "row", "model_version", "status_code", "prediction"])
        lab = D.labelled(root, rows.to_pandas())
        if len(lab):
            evidence = {"labelled": len(lab)}
            value = float(D.correct(lab).mean())
    elif kind == "drift":
        table, _, _ = _drift(deployment, rule["window"], until=until, registry=reg)
        if len(table):
            drifted = table[table["drifted"]]
            value = float(len(drifted))
            evidence = {"features": len(table), "drifted": [str(f) for f in drifted["feature"]]}
    elif kind == "dropped_rows":
        drops = D.read_drops(root).to_pandas()
        recent = drops[drops["time"] >= now - seconds] if len(drops) else drops
        value = float(recent["dropped"].sum()) if len(recent) else 0.0
    direction = KINDS[kind][0]
    fired = value is not None and (value > rule["threshold"] if direction == "above" else value < rule["threshold"])
    return {"rule": rule, "value": value, "fired": bool(fired), "evidence": evidence}


@in_workspace
def check_alerts(deployment: str, *, record: bool = True) -> AlertCheck:
    """Evaluate ``deployment``'s alert rules now; each firing is recorded as an event (with
    ``record``) and returned. ``.ok`` is True when none fires."""
    reg = current_registry()
    reg.get_deployment(deployment)
    rules, _ = reg.alert_rules(deployment)
    now = time.time()
    result = AlertCheck(deployment, [evaluate(reg, deployment, rule, now) for rule in rules])
    if record:
        for r in result.firings:
            r["event"] = reg.add_alert_event(deployment, r["rule"], r["value"], r["evidence"], now)
    return result


def deliver(reg, deployment: str, event: dict[str, Any], webhook: str, delays=RETRY_DELAYS) -> dict[str, Any]:
    """POST one event (a firing or a resolution: its ``status``) to ``webhook`` as JSON, retrying
    after each of ``delays`` (seconds) when it fails (no answer, or an answer that is not 2xx);
    every attempt's outcome is recorded on the event. Returns the delivery record."""
    body = json.dumps({"deployment": deployment, **event}, default=str).encode()
    delivery: dict[str, Any] = {"webhook": webhook, "attempts": 0, "status": "pending"}
    for wait in (0, *delays):
        time.sleep(wait)
        delivery["attempts"] += 1
        try:
            req = urllib.request.Request(webhook, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "mlops-lab-alerts"})
            with urllib.request.urlopen(req, timeout=10) as answer:
                delivery.update(status="delivered", http_status=answer.status, delivered_at=time.time())
                delivery.pop("last_error", None)
                reg.set_alert_delivery(event["id"], delivery)
                return delivery
        except urllib.error.HTTPError as exc:
            delivery["last_error"] = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            delivery["last_error"] = str(getattr(exc, "reason", exc))
        delivery["status"] = "retrying"
        reg.set_alert_delivery(event["id"], delivery)
    delivery["status"] = "failed"
    reg.set_alert_delivery(event["id"], delivery)
    log.error("alert %s of %s not delivered to %s after %d attempts: %s", event["rule"]["kind"], deployment, webhook,
              delivery["attempts"], delivery.get("last_error"))
    return delivery


class Watcher:
    """Evaluates one deployment's rules where the deployment runs (its supervisor, or the home's
    ``mlops-lab watch``, calls :meth:`tick` every ``every`` seconds, in a thread): a rule that
    starts firing is recorded as an event and sent to the webhook in a thread of its own, as
    Alertmanager does (``"status": "firing"``); a rule that keeps firing is not sent again; a rule
    that fired and holds again (or has no data left in its window) is recorded and sent as
    ``"status": "resolved"``.

    What is firing is read from the registry's events when the watcher starts, so a restarted
    supervisor does not send a firing again: a rule counts as firing if its latest event is a
    firing and one sent (or with no webhook to send it to) since it last resolved. A firing that
    only ``check_alerts`` recorded (a pipeline's check) is sent at the first evaluation."""

    def __init__(self, reg, deployment: str) -> None:
        self.reg = reg
        self.deployment = deployment
        self.firing: set[str] | None = None  # the rules firing (as JSON); read at the first tick
        self.every = 60.0
        self.deliveries: list[threading.Thread] = []

    def _recorded_firing(self, webhook: str | None) -> set[str]:
        """The rules whose latest event is a firing, and that were sent since they last resolved."""
        sent: dict[str, bool] = {}  # rule -> sent since its last resolution (absent: resolved last)
        done: set[str] = set()
        for event in self.reg.alert_events(self.deployment, limit=1000):  # newest first
            key = rule_key(event["rule"])
            if key in done:
                continue
            if event["status"] != "firing":
                done.add(key)
                continue
            sent[key] = bool(event["delivery"]) or webhook is None
            if sent[key]:
                done.add(key)
        return {key for key, was_sent in sent.items() if was_sent}

    def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        rules, webhook, self.every = self.reg.alert_settings(self.deployment)
        now = time.time() if now is None else now
        if self.firing is None:
            self.firing = self._recorded_firing(webhook)
        new = []
        firing: set[str] = set()
        for rule in rules:
            key = rule_key(rule)
            try:
                result = evaluate(self.reg, self.deployment, rule, now)
            except Exception as exc:  # noqa: BLE001 - one rule's failure must not stop the others
                log.warning("alert rule %s of %s could not be evaluated: %s", rule["kind"], self.deployment, exc)
                if key in self.firing:
                    firing.add(key)  # not known to hold: still firing
                continue
            if result["fired"]:
                firing.add(key)
                if key in self.firing:
                    continue
                status = "firing"
                log.warning("alert: %s of %s is %s (threshold %g)", rule["kind"], self.deployment, result["value"],
                            rule["threshold"])
            elif key in self.firing:
                status = "resolved"
                log.info("alert resolved: %s of %s is %s (threshold %g)", rule["kind"], self.deployment, result["value"],
                         rule["threshold"])
            else:
                continue
            event = {"status": status, "rule": rule, "value": result["value"], "evidence": result["evidence"], "time": now}
            event["id"] = self.reg.add_alert_event(self.deployment, rule, result["value"], result["evidence"], now,
                                                   status=status)
            new.append(event)
            if webhook:
                t = threading.Thread(target=deliver, args=(self.reg, self.deployment, event, webhook),
                                     name=f"alert-{event['id']}", daemon=True)
                t.start()
                self.deliveries.append(t)
        self.firing = firing  # a rule taken out of the settings is forgotten
        self.deliveries = [t for t in self.deliveries if t.is_alive()]
        return new
