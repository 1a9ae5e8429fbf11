"""ipywidgets panels: the registry, the deployments and a deployment's monitoring, in a notebook.

Faces only: every button calls the core API (``mlops_lab.registry.api``,
``mlops_lab.deployers.api``, ``mlops_lab.monitoring.api``) and renders what it returns; an error
becomes one line in the panel's message area. A panel given ``refresh=SECONDS`` reloads in a
background thread (the kernel stays free) and stops when the panel is closed.
"""

from __future__ import annotations

import html
import json
import threading
from typing import Any

import ipywidgets as w

from ._html import table
from .errors import MlopsLabError

_E = html.escape
_BADGE = {"healthy": "#1a7f37", "starting": "#9a6700", "unhealthy": "#cf222e", "crashed": "#cf222e", "stopped": "#6e7781"}


def badge(state: str) -> str:
    color = _BADGE.get(state, "#6e7781")
    return (f"<span class='mlops-lab-badge' style='background:{color};color:white;border-radius:8px;"
            f"padding:0 6px;font-size:85%'>{_E(state)}</span>")


class _Panel(w.VBox):
    """A panel with a message line, an on-demand ``reload()`` and an optional refresh thread."""

    def __init__(self, children: list[w.Widget], refresh: float | None) -> None:
        self.message = w.HTML()
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()
        super().__init__([*children, self.message])
        self.reload()
        self._thread = None
        if refresh:
            self._thread = threading.Thread(target=self._loop, args=(float(refresh),), daemon=True, name=f"mlops-lab-{type(self).__name__}")
            self._thread.start()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.reload()

    @property
    def refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def reload(self) -> None:
        """Fetch and render the panel's data now."""
        with self._reload_lock:
            self._run(self._reload)

    def _reload(self) -> None:  # pragma: no cover - every panel defines it
        raise NotImplementedError

    def _run(self, action, *args, done: str | None = None) -> Any:
        """Call the core; show an error as one line instead of raising it into the kernel."""
        try:
            result = action(*args)
        except MlopsLabError as exc:
            self.say(str(exc), error=True)
            return None
        except Exception as exc:  # a button callback must not die silently in a log
            self.say(f"unexpected {type(exc).__name__}: {exc}", error=True)
            return None
        if done:
            self.say(done)
        return result

    def say(self, text: str, error: bool = False) -> None:
        color = "#cf222e" if error else "#57606a"
        self.message.value = f"<span style='color:{color}'>{_E(text)}</span>" if text else ""

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        super().close()


class RegistryPanel(_Panel):
    """The registered models and their versions; select a version to see it, deploy it, alias it.

    Examples
    --------
    >>> RegistryPanel()  # doctest: +SKIP
    """

    def __init__(self, name: str = "", tag: str = "", refresh: float | None = None) -> None:
        self.name_filter = w.Text(value=name, placeholder="name (wildcards * ?)", description="Name")
        self.tag_filter = w.Text(value=tag, placeholder="key=value", description="Tag")
        self.table = w.HTML()
        self.versions = w.Select(options=[], rows=8, description="Version")
        self.details = w.HTML()
        self.deploy_name = w.Text(placeholder="deployment name (default: the model's)", description="Deploy as")
        self.deploy_button = w.Button(description="Deploy", icon="rocket", button_style="primary")
        self.alias = w.Text(placeholder="e.g. production", description="Alias")
        self.alias_button = w.Button(description="Set alias", icon="tag")
        self.name_filter.observe(lambda _: self.reload(), "value")
        self.tag_filter.observe(lambda _: self.reload(), "value")
        self.versions.observe(lambda _: self._show(), "value")
        self.deploy_button.on_click(lambda _: self.deploy())
        self.alias_button.on_click(lambda _: self.set_alias())
        self.deployment = None
        super().__init__([
            w.HBox([self.name_filter, self.tag_filter]), self.table, self.versions, self.details,
            w.HBox([self.deploy_name, self.deploy_button]), w.HBox([self.alias, self.alias_button]),
        ], refresh)

    def _query(self) -> tuple[str | None, dict[str, Any] | None]:
        name = self.name_filter.value.strip() or None
        if name and not any(c in name for c in "*?"):
            name = f"*{name}*"
        tag = self.tag_filter.value.strip()
        if not tag:
            return name, None
        key, sep, value = tag.partition("=")
        return name, {key.strip(): (value.strip() if sep else None)}

    def _reload(self) -> None:
        from .registry.api import search_model_versions

        name, tags = self._query()
        found = search_model_versions(name=name, tags=tags)
        if not found:
            self.table.value = "<i>No model versions match. Register one: <code>%register_model clf --name churn</code></i>" \
                if not (name or tags) else "<i>No model versions match this filter.</i>"
        else:
            self.table.value = found._repr_html_()
        keep = self.versions.value
        self._found = {v.ref: v for v in found}
        self.versions.options = list(self._found)
        if keep in self._found:
            self.versions.value = keep
        self._show()

    def _show(self) -> None:
        mv = getattr(self, "_found", {}).get(self.versions.value)
        self.details.value = "" if mv is None else mv._repr_html_()

    def deploy(self):
        """Deploy the selected version (the Deploy button)."""
        from .deployers.api import deploy

        ref = self.versions.value
        if not ref:
            self.say("Select a version first.", error=True)
            return None
        self.say(f"Deploying {ref} ...")
        d = self._run(deploy, ref, self.deploy_name.value.strip() or None)
        if d is not None:
            self.deployment = d
            self.say(f"Deployed {ref} as {d.name} at {d.url}")
            self.reload()
        return d

    def set_alias(self):
        """Point the alias in the Alias box at the selected version (the Set alias button)."""
        from .refs import parse_ref
        from .registry.api import set_alias

        ref, alias = self.versions.value, self.alias.value.strip()
        if not ref or not alias:
            self.say("Select a version and type an alias.", error=True)
            return None
        r = parse_ref(ref)
        mv = self._run(set_alias, r.name, alias, r.version, done=f"{r.name}@{alias} -> version {r.version}")
        if mv is not None:
            self.reload()
        return mv


class DeploymentPanel(_Panel):
    """Every deployment with a live status badge; send a test request; update, roll back,
    promote or delete the selected one (delete asks for confirmation).

    Examples
    --------
    >>> DeploymentPanel(refresh=5)  # doctest: +SKIP
    """

    def __init__(self, refresh: float | None = 5.0) -> None:
        self.table = w.HTML()
        self.selected = w.Dropdown(options=[], description="Deployment")
        self.request = w.Textarea(placeholder='{"data": [[1.0, 2.0]]}', description="Request", layout=w.Layout(width="60%"))
        self.send_button = w.Button(description="Send", icon="paper-plane")
        self.response = w.HTML()
        self.update_ref = w.Text(placeholder="model:VERSION", description="Update to")
        self.traffic = w.BoundedFloatText(value=100, min=0, max=100, step=5, description="Traffic %")
        self.shadow = w.Checkbox(value=False, description="Shadow", indent=False, layout=w.Layout(width="auto"),
                                 tooltip="beside the serving version on a copy of the requests: answers collected, never returned")
        self.update_button = w.Button(description="Update", icon="arrow-up")
        self.promote_button = w.Button(description="Promote", icon="check")
        self.rollback_button = w.Button(description="Roll back", icon="undo")
        self.restart_button = w.Button(description="Restart", icon="refresh", tooltip="the current revision again, at the same address (e.g. after a crash)")
        self.delete_button = w.Button(description="Delete", icon="trash", button_style="danger")
        self.confirm_button = w.Button(description="Yes, delete it", button_style="danger", layout=w.Layout(display="none"))
        self.cancel_button = w.Button(description="Cancel", layout=w.Layout(display="none"))
        self.send_button.on_click(lambda _: self.send_request())
        self.update_button.on_click(lambda _: self.update())
        self.promote_button.on_click(lambda _: self._act("promote"))
        self.rollback_button.on_click(lambda _: self._act("rollback"))
        self.restart_button.on_click(lambda _: self._act("restart"))
        self.delete_button.on_click(lambda _: self._confirming(True))
        self.cancel_button.on_click(lambda _: self._confirming(False))
        self.confirm_button.on_click(lambda _: self.delete())
        super().__init__([
            self.table, self.selected, w.HBox([self.request, self.send_button]), self.response,
            w.HBox([self.update_ref, self.traffic, self.shadow, self.update_button]),
            w.HBox([self.promote_button, self.rollback_button, self.restart_button, self.delete_button, self.confirm_button,
                    self.cancel_button]),
        ], refresh)

    def _reload(self) -> None:
        from .deployers.api import list_deployments

        deployments = list_deployments()
        rows = []
        for d in deployments:
            try:
                st = d.status()
                state, reason = st.state, st.reason
            except MlopsLabError as exc:
                state, reason = "unhealthy", str(exc)
            rows.append([f"<b>{_E(d.name)}</b>", badge(state) + (f" <small>{_E(reason)}</small>" if reason else ""),
                         f"<code>{_E(d.url)}</code>", d._models_html(), str(d.revision)])
        self.table.value = (table(["deployment", "status", "url", "models (traffic)", "revision"], rows) if rows else
                            "<i>No deployments yet. Deploy a version: <code>%deploy churn:1</code></i>")
        keep = self.selected.value
        self.selected.options = [d.name for d in deployments]
        if self.selected.options:
            self.selected.value = keep if keep in self.selected.options else self.selected.options[0]

    def _name(self) -> str | None:
        if not self.selected.value:
            self.say("Select a deployment first.", error=True)
        return self.selected.value

    def send_request(self) -> Any:
        """Send the request box's JSON to the selected deployment's ``/score`` (the Send button)."""
        from .deployers.api import get_deployment

        name = self._name()
        if not name:
            return None
        try:
            body = json.loads(self.request.value or "null")
        except ValueError as exc:
            self.say(f"The request is not JSON: {exc}", error=True)
            return None
        answer = self._run(lambda: get_deployment(name).call("score", body))
        if answer is not None:
            self.response.value = f"<pre>{_E(json.dumps(answer, indent=1)[:5000])}</pre>"
            self.say("")
        return answer

    def update(self):
        """Serve the version in the Update box (as a canary when Traffic % is below 100, as a
        shadow on a copy of every request when Shadow is ticked)."""
        from .deployers.api import update
        from .deployers.base import _share

        name, ref = self._name(), self.update_ref.value.strip()
        if not name or not ref:
            self.say("Select a deployment and type the version to serve.", error=True) if name else None
            return None
        shadow = bool(self.shadow.value)
        traffic = self.traffic.value if self.traffic.value < 100 and not shadow else None
        self.say(f"Updating {name} to {ref}{' as a shadow' if shadow else ''} ...")
        d = self._run(lambda: update(name, ref, traffic=traffic, shadow=shadow))
        if d is not None:
            served = ", ".join(f"{m['name']}:{m['version']}{_share(m, d.models)}" for m in d.models)
            self.say(f"{name} serves {served} (revision {d.revision})")
            self.reload()
        return d

    def _act(self, verb: str):
        from .deployers import api

        name = self._name()
        if not name:
            return None
        d = self._run(getattr(api, verb), name)
        if d is not None:
            self.say(f"{name}: {verb} done, revision {d.revision}")
            self.reload()
        return d

    def _confirming(self, on: bool) -> None:
        if on and not self._name():
            return
        self.confirm_button.layout.display = "" if on else "none"
        self.cancel_button.layout.display = "" if on else "none"
        self.delete_button.disabled = on
        if on:
            self.say(f"Delete {self.selected.value}? It stops serving and frees its model versions.", error=True)
        else:
            self.say("")

    def delete(self) -> bool:
        """Delete the selected deployment (the confirmation button)."""
        from .deployers.api import delete_deployment

        name = self._name()
        self._confirming(False)
        if not name:
            return False
        done = self._run(delete_deployment, name, done=f"Deleted {name}.")
        self.reload()
        return bool(done)


class MonitorPanel(_Panel):
    """The monitoring chart of a deployment, refreshed on an interval, with a time window.

    Examples
    --------
    >>> MonitorPanel("churn", refresh=30)  # doctest: +SKIP
    """

    WINDOWS = ("15min", "1h", "6h", "24h", "7d")

    def __init__(self, deployment: str, since: str = "24h", refresh: float | None = 30.0) -> None:
        self.deployment = deployment
        options = list(self.WINDOWS) if since in self.WINDOWS else [since, *self.WINDOWS]
        self.window = w.ToggleButtons(options=options, value=since, description="Window")
        self.output = w.Output()
        self.chart = None
        self.window.observe(lambda _: self.reload(), "value")
        super().__init__([self.window, self.output], refresh)

    def _reload(self) -> None:
        from .monitoring.api import monitor

        chart = monitor(self.deployment, since=self.window.value)
        self.chart = chart
        data = chart.mimebundle(static=False)  # a live front end draws the spec itself
        # Set the outputs directly: works from a background thread and without a kernel.
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
