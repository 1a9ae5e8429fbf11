"""Where mlops_lab keeps its state.

All state lives under one home folder: ``$MLOPS_LAB_HOME`` or, by default, a per-user data folder
(``$XDG_DATA_HOME/mlops_lab`` or ``~/.local/share/mlops_lab`` on Linux, ``~/Library/Application
Support/mlops_lab`` on macOS, ``%LOCALAPPDATA%\\mlops_lab`` on Windows). The registry's metadata
goes to ``$MLOPS_LAB_DB`` (any SQLAlchemy URL) or, by default, a SQLite file in that folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOME_ENV = "MLOPS_LAB_HOME"
DB_ENV = "MLOPS_LAB_DB"


def default_home() -> Path:
    """The per-user folder used when ``MLOPS_LAB_HOME`` is not set."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mlops_lab"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mlops_lab"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlops_lab"


def home() -> Path:
    """The home folder in force now (``$MLOPS_LAB_HOME`` or :func:`default_home`)."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser().resolve() if value else default_home()


def db_url(home_dir: Path | None = None) -> str:
    """The registry database URL in force now."""
    value = os.environ.get(DB_ENV)
    if value:
        return value
    return f"sqlite:///{(home_dir or home()) / 'registry.db'}"
