"""``MlopsLabApp``: the server extension's settings (traitlets) and its routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Integer, Unicode

from .handlers import ROUTES


class MlopsLabApp(ExtensionApp):
    """mlops_lab in the Jupyter server: ``{base_url}/mlops-lab/api/...`` and
    ``{base_url}/mlops-lab/proxy/{deployment}/...``.

    Configure it like any Jupyter extension, e.g. in ``jupyter_server_config.py``::

        c.MlopsLabApp.probe_timeout = 1.0
    """

    name = "mlops_lab"
    load_other_extensions = True

    home = Unicode(
        "", config=True,
        help="mlops_lab home folder for this server (default: $MLOPS_LAB_HOME or the per-user folder).",
    )
    db = Unicode("", config=True, help="Registry database URL (default: $MLOPS_LAB_DB, the home's config.toml, or SQLite in the home folder).")
    artifacts = Unicode("", config=True, help="Artifact store: a folder or s3://bucket/prefix (default: $MLOPS_LAB_ARTIFACTS, config.toml, HOME/artifacts).")
    collection = Unicode("", config=True, help="Collection store: a folder or s3://bucket/prefix (default: $MLOPS_LAB_COLLECTION, config.toml, HOME/collected).")
    probe_timeout = Float(
        2.0, config=True,
        help="Seconds to wait for one deployment's status probe before reporting it as not answering.",
    )
    proxy_timeout = Float(60.0, config=True, help="Seconds the proxy waits for a deployment's answer.")
    rate_window = Unicode("5min", config=True, help="Window of the request rate shown for each deployment.")
    max_workers = Integer(
        8, config=True,
        help="Threads that run registry calls and probes, so that the server's event loop never blocks.",
    )

    def initialize_settings(self) -> None:
        from ..workspace import Workspace

        # The server's own workspace, from its settings: the process environment is left alone.
        self.workspace = Workspace(home=self.home or None, db=self.db or None, artifacts=self.artifacts or None,
                                   collection=self.collection or None)
        self.settings["mlops_lab"] = self
        self.settings["mlops_lab_executor"] = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mlops-lab")

    def initialize_handlers(self) -> None:
        self.handlers.extend(ROUTES)

    async def stop_extension(self) -> None:
        executor = self.settings.get("mlops_lab_executor")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
