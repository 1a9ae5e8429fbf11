"""Alert rules per deployment and the record of their firings, shared by every process (the
kernel that sets them, the supervisor that evaluates them, the CLI a pipeline gates on).

A part of :class:`~mlops_lab.registry.store.Registry`, which holds the engine these methods use.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, insert, select, update

from . import schema as S
from .database import _dumps, _loads


class AlertRecords:
    def set_alert_rules(self, deployment: str, rules: list[dict[str, Any]], webhook: str | None,
                        every_s: float = 60.0) -> None:
        """Replace a deployment's rules (an empty list removes them)."""
        t = S.alert_rules
        with self._write() as conn:
            self._require_deployment(conn, deployment)
            conn.execute(delete(t).where(t.c.deployment == deployment))
            if rules:
                conn.execute(insert(t).values(deployment=deployment, rules=_dumps(rules), webhook=webhook,
                                              every_s=every_s, updated_at=time.time()))

    def alert_rules(self, deployment: str) -> tuple[list[dict[str, Any]], str | None]:
        rules, webhook, _ = self.alert_settings(deployment)
        return rules, webhook

    def alert_settings(self, deployment: str) -> tuple[list[dict[str, Any]], str | None, float]:
        """The rules, the webhook and how often to evaluate them (seconds)."""
        t = S.alert_rules
        with self._read() as conn:
            row = conn.execute(select(t.c.rules, t.c.webhook, t.c.every_s).where(t.c.deployment == deployment)).first()
        return ([], None, 60.0) if row is None else (_loads(row.rules), row.webhook, float(row.every_s))

    def add_alert_event(self, deployment: str, rule: dict[str, Any], value: float | None,
                        evidence: dict[str, Any], at: float | None = None, status: str = "firing") -> int:
        """Record that ``rule`` started firing (``status="firing"``) or, having fired, holds again
        (``"resolved"``); returns the event's id."""
        t = S.alert_events
        with self._write() as conn:
            result = conn.execute(insert(t).values(deployment=deployment, time=at or time.time(), rule=_dumps(rule),
                                                   value=value, evidence=_dumps(evidence), delivery="{}",
                                                   status=status))
            return int(result.inserted_primary_key[0])

    def set_alert_delivery(self, event_id: int, delivery: dict[str, Any]) -> None:
        t = S.alert_events
        with self._write() as conn:
            conn.execute(update(t).where(t.c.id == event_id).values(delivery=_dumps(delivery)))

    def alert_events(self, deployment: str | None = None, since: float | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        """Firings and resolutions, newest first."""
        t = S.alert_events
        q = select(t).order_by(t.c.time.desc(), t.c.id.desc()).limit(limit)
        if deployment is not None:
            q = q.where(t.c.deployment == deployment)
        if since is not None:
            q = q.where(t.c.time >= since)
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [{"id": r.id, "deployment": r.deployment, "time": r.time, "rule": _loads(r.rule), "value": r.value,
                 "evidence": _loads(r.evidence), "delivery": _loads(r.delivery), "status": r.status} for r in rows]
