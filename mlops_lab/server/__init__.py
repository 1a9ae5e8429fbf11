"""The Jupyter server extension: REST handlers over the core API and a proxy to deployments.

Enabled on install by ``etc/jupyter/jupyter_server_config.d/mlops_lab.json``. Importing this
package imports nothing of Jupyter; the server calls the hook below when it loads extensions.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import MlopsLabApp

    return [{"module": "mlops_lab.server", "app": MlopsLabApp}]
