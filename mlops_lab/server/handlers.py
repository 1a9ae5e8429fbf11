"""REST handlers: they parse, call the core API in a thread (the event loop never blocks on the
registry or a probe) and write JSON. A domain error becomes its HTTP status with
``{"error": ..., "message": ...}``; every verb requires Jupyter's authentication."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..errors import DeploymentFailed, InvalidInput, MlopsLabError

NAME = r"(?P<name>[^/]+)"  # the core validates names, with a precise message


async def in_executor(handler, fn, *args: Any, **kwargs: Any) -> Any:
    """Run a core call in the extension's threads, in the server's own workspace."""
    workspace = handler.settings["mlops_lab"].workspace

    def run():
        with workspace.activate():
            return fn(*args, **kwargs)

    return await asyncio.get_running_loop().run_in_executor(handler.settings["mlops_lab_executor"], run)


class _Base(APIHandler):
    @property
    def app(self):
        return self.settings["mlops_lab"]

    async def call(self, fn, *args: Any, **kwargs: Any) -> Any:
        return await in_executor(self, fn, *args, **kwargs)

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def fail(self, exc: MlopsLabError) -> None:
        self.reply(exc.to_dict(), exc.http_status)

    def proxy_url(self, name: str) -> str:
        return url_path_join(self.base_url, "mlops-lab", "proxy", name) + "/"


def domain_errors(method):
    """Turn an mlops_lab error raised by a handler into its JSON 4xx/5xx."""

    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except MlopsLabError as exc:
            self.fail(exc)

    return wrapper


# -- models --------------------------------------------------------------------------------------


class ModelsHandler(_Base):
    @tornado.web.authenticated
    @domain_errors
    async def get(self) -> None:
        from ..registry.api import list_models

        self.reply({"models": [m.to_dict() for m in await self.call(list_models)]})


class ModelHandler(_Base):
    @tornado.web.authenticated
    @domain_errors
    async def get(self, name: str) -> None:
        self.reply(await self.call(_model, name))


class ModelCardHandler(_Base):
    """The model card of a version, as the page itself (the sidebar opens it in a new tab)."""

    @property
    def content_security_policy(self) -> str:
        # the card is self-contained: its own styles and inline SVG, nothing fetched, no script
        return "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"

    @tornado.web.authenticated
    @domain_errors
    async def get(self, name: str, version: str) -> None:
        from ..cards import model_card

        card = await self.call(model_card, f"{name}:{version}", since=self.get_argument("since", "7d"))
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        JupyterHandler.finish(self, card.html)  # APIHandler.finish would label it JSON


def _model(name: str) -> dict[str, Any]:
    from ..registry.api import get_model, list_models, search_model_versions

    found = [m for m in list_models(name) if m.name == name]
    if not found:
        get_model(name)  # ModelNotFound, with the closest names
    return {**found[0].to_dict(), "model_versions": [v.to_dict() for v in search_model_versions(name=name)]}


# -- deployments ---------------------------------------------------------------------------------


class DeploymentsHandler(_Base):
    @tornado.web.authenticated
    @domain_errors
    async def get(self) -> None:
        from ..deployers.api import list_deployments

        deployments = await self.call(list_deployments)
        self.reply({"deployments": await asyncio.gather(*(self.describe(d) for d in deployments))})

    async def describe(self, d, *, window: str | None = None) -> dict[str, Any]:
        """A deployment with its probed status (bounded by ``probe_timeout``) and traffic numbers."""
        from ..monitoring.api import summary

        timeout = self.app.probe_timeout

        async def probe():
            try:
                return (await asyncio.wait_for(self.call(d.status), timeout)).to_dict()
            except asyncio.TimeoutError:
                return {"state": "unhealthy", "reason": f"no answer within {timeout:g} s"}
            except MlopsLabError as exc:
                return {"state": "unhealthy", "reason": str(exc)}

        async def traffic():
            try:
                return await asyncio.wait_for(self.call(summary, d.name, window or self.app.rate_window), timeout * 2)
            except (asyncio.TimeoutError, MlopsLabError):
                return None

        async def alerts():
            from ..monitoring.alerts import recent_firings
            from ..workspace import current_registry

            try:
                return await self.call(lambda: recent_firings(current_registry(), d.name))
            except MlopsLabError:
                return None

        status, numbers, fired = await asyncio.gather(probe(), traffic(), alerts())
        return {**d.to_dict(), "status": status["state"], "status_reason": status.get("reason", ""),
                "proxy_url": self.proxy_url(d.name), "summary": numbers, "alerts": fired}


class DeploymentHandler(DeploymentsHandler):
    @tornado.web.authenticated
    @domain_errors
    async def get(self, name: str) -> None:
        from ..deployers.api import get_deployment

        d = await self.call(get_deployment, name)
        out = await self.describe(d, window="15min")
        out["revisions"] = [r.to_dict() for r in await self.call(d.revisions)]
        self.reply(out)

    @tornado.web.authenticated
    @domain_errors
    async def delete(self, name: str) -> None:
        from ..deployers.api import delete_deployment

        self.reply({"deleted": await self.call(delete_deployment, name)})


class DeploymentActionHandler(_Base):
    ACTIONS = ("rollback", "promote", "restart")

    @tornado.web.authenticated
    @domain_errors
    async def post(self, name: str, action: str) -> None:
        from ..deployers import api

        d = await self.call(getattr(api, action), name, progress=False)
        self.reply(d.to_dict())


class MonitorHandler(_Base):
    """The monitoring chart of a deployment as a Vega-Lite v5 spec (JupyterLab draws it with the
    Vega it ships, nothing fetched from elsewhere) and its drift table, for the main-area panel
    the sidebar opens: no kernel needed."""

    WINDOWS = ("15min", "1h", "6h", "24h", "7d")

    @tornado.web.authenticated
    @domain_errors
    async def get(self, name: str) -> None:
        since = self.get_query_argument("since", "1h")
        if since not in self.WINDOWS:
            raise InvalidInput(f"unknown window {since!r}", hint="windows: " + ", ".join(self.WINDOWS))
        self.reply(await self.call(monitor_view, name, since))


def monitor_view(name: str, since: str) -> dict[str, Any]:
    """What the panel shows: the chart's spec, the drift table's rows, the time it was made."""
    import time

    from ..deployers.api import get_deployment
    from ..monitoring.api import drift, monitor

    get_deployment(name)  # an unknown deployment is a 404 naming it, not an empty chart
    chart = monitor(name, since=since)
    table = drift(name, window=since)
    keep = [c for c in ("feature", "kind", "psi", "ks_pvalue", "chi2_pvalue", "js_distance", "drifted") if c in table.columns]
    rows = json.loads(table[keep].to_json(orient="records")) if len(table) else []
    return {"deployment": name, "since": since, "spec": chart.vegalite(), "drift": rows,
            "reference": table.attrs.get("reference"), "generated_at": time.time()}


# -- the proxy -------------------------------------------------------------------------------------

# Headers that belong to the hop between the browser and Jupyter, never to the deployment: the
# Jupyter token and cookies must not leak to a model server.
_DROP = {"authorization", "cookie", "host", "connection", "content-length", "x-xsrftoken", "transfer-encoding",
         "accept-encoding", "keep-alive", "upgrade", "te", "trailer", "proxy-authorization", "proxy-connection"}
_PASS_BACK = ("Content-Type", "X-Request-Id", "Cache-Control")


class ProxyHandler(JupyterHandler):
    """Forwards ``/mlops-lab/proxy/{deployment}/{path}`` to that deployment's recorded endpoint,
    with the deployment's key. Only recorded deployments, only their recorded address."""

    def get_login_url(self) -> str:
        # Without Jupyter's authentication: 403, as the API handlers answer (not a login redirect).
        raise tornado.web.HTTPError(403)

    async def _forward(self, name: str, path: str) -> None:
        from ..deployers.api import get_deployment

        try:
            d = await in_executor(self, get_deployment, name)
            target = _target(d.url, path, self.request.query)
        except MlopsLabError as exc:
            return self._json(exc.http_status, exc.to_dict())
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in _DROP}
        if d.keys:
            headers["Authorization"] = f"Bearer {d.keys['primary']}"
        method = self.request.method
        body = self.request.body if method in ("POST", "PUT", "PATCH") else None
        request = HTTPRequest(target, method=method, headers=headers, body=body, follow_redirects=False,
                              request_timeout=self.settings["mlops_lab"].proxy_timeout, allow_nonstandard_methods=True)
        try:
            resp = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:
            err = DeploymentFailed(f"deployment {name!r} does not answer at {d.url}: {exc}", hint="see its status and logs")
            return self._json(502, err.to_dict())
        if resp.code == 599:
            err = DeploymentFailed(f"deployment {name!r} does not answer at {d.url}: {resp.error}", hint="see its status and logs")
            return self._json(502, err.to_dict())
        self.set_status(resp.code, resp.reason)
        for header in _PASS_BACK:
            if header in resp.headers:
                self.set_header(header, resp.headers[header])
        self.finish(resp.body or b"")

    def _json(self, status: int, data: dict) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    @tornado.web.authenticated
    async def get(self, name: str, path: str) -> None:
        await self._forward(name, path)

    post = put = delete = get  # every verb is forwarded the same way


def _target(endpoint: str, path: str, query: str) -> str:
    """The deployment URL for a proxied path; refuses anything but plain http(s) to the recorded host."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeploymentFailed(f"recorded endpoint {endpoint!r} is not an http(s) address; the proxy will not follow it")
    path = path.lstrip("/")
    url = f"{endpoint.rstrip('/')}/{path}"
    if urlsplit(url).netloc != parts.netloc:  # e.g. a path that smuggles "@host" or "//host"
        raise DeploymentFailed(f"refusing to proxy {path!r}: it leaves the deployment's address")
    return url + (f"?{query}" if query else "")


ROUTES = [
    (r"/mlops-lab/api/models/?", ModelsHandler),
    (rf"/mlops-lab/api/models/{NAME}/?", ModelHandler),
    (rf"/mlops-lab/api/models/{NAME}/(?P<version>[0-9]+)/card/?", ModelCardHandler),
    (r"/mlops-lab/api/deployments/?", DeploymentsHandler),
    (rf"/mlops-lab/api/deployments/{NAME}/?", DeploymentHandler),
    (rf"/mlops-lab/api/deployments/{NAME}/(?P<action>rollback|promote|restart)/?", DeploymentActionHandler),
    (rf"/mlops-lab/api/deployments/{NAME}/monitor/?", MonitorHandler),
    (rf"/mlops-lab/proxy/{NAME}/(?P<path>.*)", ProxyHandler),
]
