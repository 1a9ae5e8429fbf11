"""Model cards: one page about a version, built from what the registry and the collected data
know. ``model_card("churn@production")`` gives a :class:`ModelCard`: its description,
signature, tags and properties, lineage, requirements, the statistics of its baseline, where it
is deployed, and for each of those deployments its live numbers, drift, accuracy from feedback,
the alerts that fired and the monitoring chart. ``.html`` is a self-contained page (the charts
are inline SVG drawn by vl-convert: it opens with no network), ``.markdown`` the same for a
repository (tables, no charts); ``.save("card.html")`` or ``.save("card.md")``.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInput, MlopsLabError
from .workspace import current_registry, in_workspace

__all__ = ["model_card", "ModelCard"]


@dataclass
class Section:
    title: str
    text: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    svg: str = ""


@dataclass
class ModelCard:
    """A version's card: ``sections`` in order; ``html``, ``markdown``; ``save(path)``."""

    ref: str
    subtitle: str
    sections: list[Section]

    @property
    def html(self) -> str:
        parts = [f"<h1>{html.escape(self.ref)}</h1>", f"<p class='sub'>{html.escape(self.subtitle)}</p>"]
        for s in self.sections:
            parts.append(f"<section data-section='{html.escape(s.title)}'><h2>{html.escape(s.title)}</h2>")
            if s.text:
                parts.append(f"<p>{html.escape(s.text)}</p>")
            if s.rows:
                cols = list(dict.fromkeys(k for r in s.rows for k in r))
                head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                               for r in s.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            if s.svg:
                parts.append(f"<div class='chart'>{s.svg}</div>")
            parts.append("</section>")
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
                f"<title>Model card: {html.escape(self.ref)}</title><style>{_CSS}</style></head><body>"
                + "".join(parts) + "</body></html>")

    @property
    def markdown(self) -> str:
        out = [f"# {self.ref}", "", self.subtitle, ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            if s.text:
                out += [s.text, ""]
            if s.rows:
                cols = list(dict.fromkeys(k for r in s.rows for k in r))
                out.append("| " + " | ".join(cols) + " |")
                out.append("|" + "---|" * len(cols))
                for r in s.rows:
                    out.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|").replace("\n", " ") for c in cols) + " |")
                out.append("")
            if s.svg:
                out += ["(chart in the HTML card)", ""]
        return "\n".join(out)

    def save(self, path: str | Path) -> Path:
        """Write ``.html`` or ``.md`` (temp + rename)."""
        path = Path(path)
        text = {".html": lambda: self.html, ".htm": lambda: self.html, ".md": lambda: self.markdown}.get(path.suffix.lower())
        if text is None:
            raise InvalidInput(f"a card is written as .html or .md, not {path.suffix or 'a file without a suffix'}")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text(), encoding="utf-8")
        tmp.replace(path)
        return path

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<ModelCard {self.ref}: {', '.join(s.title for s in self.sections)}>"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1f2328}"
        "h1{margin-bottom:0}.sub{color:#59636e;margin-top:4px}h2{border-bottom:1px solid #d1d9e0;padding-bottom:4px}"
        "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #d1d9e0;padding:3px 8px;text-align:left}"
        "th{background:#f6f8fa}.chart{margin-top:8px}")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _when(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _signature_rows(sig: dict[str, Any] | None) -> tuple[str, list[dict[str, Any]]]:
    if not sig:
        return "No signature: the model takes what it is given.", []
    if sig.get("kind") == "columns":
        return "", [{"column": c["name"], "type": c["type"], "missing values": "allowed" if c.get("missing") else "refused"}
                    for c in sig["columns"]]
    return f"A tensor of {sig.get('dtype')} with shape {sig.get('shape')}.", []


def _baseline_rows(frame) -> list[dict[str, Any]]:
    rows = []
    for col in frame.columns:
        s = frame[col]
        if s.dtype.kind in "biuf":
            rows.append({"feature": col, "rows": int(s.count()), "mean": float(s.mean()), "std": float(s.std()),
                         "min": float(s.min()), "max": float(s.max()), "top values": ""})
        else:
            top = s.astype(str).value_counts(normalize=True).head(3)
            rows.append({"feature": col, "rows": int(s.count()),
                         "top values": ", ".join(f"{k} ({v:.0%})" for k, v in top.items())})
    return rows


def _deployment_sections(reg, mv, name: str, since: str) -> list[Section]:
    """What one deployment serving ``mv`` collected about it."""
    from .monitoring import data as D
    from .monitoring.alerts import recent_firings
    from .monitoring.api import _root, drift, monitor

    record = reg.get_deployment(name)
    entry = next((m for m in record.models if (m["name"], m["version"]) == (mv.name, mv.version)), None)
    role = None if entry is None else (f"in the shadow of its route (a copy of {entry['shadow']:.0%} of the requests)"
                                       if entry.get("shadow") else f"{entry.get('traffic', 100):g}% of its route's traffic")
    out = [Section(f"Deployment {name}", f"{record.target} at {record.endpoint or 'no address'}, revision "
                   f"{record.revision}, {role}, status {record.status}." if role is not None
                   else f"{record.target}, revision {record.revision}.")]
    _, deployment_root = _root(name, reg, must_exist=False)
    # a shadow's answers are collected apart; the labels are the deployment's
    root = D.shadow_root(deployment_root) if entry is not None and entry.get("shadow") else deployment_root
    start = D.to_utc(since)
    table = D.read_requests(root, start, None, mv.ref, columns=["request_id", "row", "status_code", "latency_ms", "prediction"])
    rows = table.to_pandas()
    if rows.empty:
        out[0].text += f" No traffic of {mv.ref} collected in the last {since}."
        return out
    stats = D.request_stats(table)
    live = {"requests": stats["requests"], "rows": len(rows), "errors": stats["errors"],
            "latency p50 ms": stats["latency_p50_ms"], "latency p99 ms": stats["latency_p99_ms"]}
    lab = D.labelled(deployment_root, rows)
    if len(lab):
        live["labelled rows"] = len(lab)
        live["accuracy"] = float(D.correct(lab).mean())
    out.append(Section(f"Live numbers ({name}, last {since})", rows=[live]))
    try:
        table = drift(name, window=since, version=mv.ref)
        if len(table):
            out.append(Section(f"Drift ({name})", f"Reference: {table.attrs.get('reference', '')}.", rows=[
                {k: r[k] for k in ("feature", "kind", "psi", "ks_pvalue", "chi2_pvalue", "js_distance", "drifted")}
                for r in table.to_dict("records")]))
    except MlopsLabError as exc:
        out.append(Section(f"Drift ({name})", f"not computed: {exc}"))
    events = reg.alert_events(name, limit=20)
    fired = recent_firings(reg, name)
    out.append(Section(f"Alerts ({name})", _alerts_text(fired) if events else
                       "No alert has fired." + ("" if reg.alert_rules(name)[0] else " No rules are set (set_alerts)."),
                       rows=[{"time": _when(e["time"]), "event": e["status"], "rule": e["rule"]["kind"], "value": e["value"],
                              "threshold": e["rule"]["threshold"], "delivery": e["delivery"].get("status", "")}
                             for e in events]))
    chart = monitor(name, since=since)
    out.append(Section(f"Monitoring ({name})", svg=chart.to_svg()))
    return out


def _alerts_text(fired: dict[str, Any]) -> str:
    n, now = fired["firings"], fired["count"]
    return (f"{n} firing{'' if n == 1 else 's'} in the last 24 hours; "
            f"{now or 'no'} rule{'' if now == 1 else 's'} firing now.")


@in_workspace
def model_card(ref: Any, *, since: str = "7d") -> ModelCard:
    """The card of version ``ref``, with the traffic its deployments collected in the last
    ``since``. A version with no deployment or no traffic gets a card that says so."""
    reg = current_registry()
    mv = reg.get_version(ref)
    aliases = f" · @{', @'.join(mv.aliases)}" if mv.aliases else ""
    size = f"{mv.size / 1e6:.2f} MB" if mv.size >= 1e6 else f"{mv.size / 1e3:.1f} kB"
    subtitle = f"{mv.flavor} model, registered {_when(mv.created_at)}{aliases} · {size} in {len(mv.files)} file{'' if len(mv.files) == 1 else 's'}"
    sections = [Section("Description", mv.description or "No description (set_description).")]
    text, rows = _signature_rows(mv.signature)
    sections.append(Section("Signature", text, rows))
    if mv.tags or mv.properties:
        sections.append(Section("Tags and properties", rows=[{"key": k, "value": v, "kind": kind} for kind, d in
                                                            (("tag", mv.tags), ("property", mv.properties)) for k, v in d.items()]))
    sections.append(Section("Lineage", "" if mv.lineage else "No lineage recorded.",
                            rows=[{"key": k, "value": v} for k, v in (mv.lineage or {}).items()]))
    sections.append(Section("Requirements", ", ".join(mv.requirements) if mv.requirements else "None recorded."))
    if mv.has_baseline:
        base = reg.get_baseline(mv.ref)
        sections.append(Section("Baseline", f"{len(base):,} rows registered with the version (the reference for drift).",
                                rows=_baseline_rows(base)))
    else:
        sections.append(Section("Baseline", "No baseline registered: drift is measured against the first live window."))
    if not mv.deployments:
        sections.append(Section("Deployments", "Not deployed."))
    else:
        sections.append(Section("Deployments", "Serving now in " + ", ".join(mv.deployments) + "."))
        for name in mv.deployments:
            sections += _deployment_sections(reg, mv, name, since)
    return ModelCard(mv.ref, subtitle, sections)
