"""Where mlops_lab keeps its state: one :class:`Settings`, built once and passed down.

Each setting comes from, in this order: an argument; its ``MLOPS_LAB_*`` environment variable; the
config file ``config.toml`` in the home folder; the default. The home folder itself comes from an
argument, ``$MLOPS_LAB_HOME`` or the per-user data folder (``$XDG_DATA_HOME/mlops_lab`` or
``~/.local/share/mlops_lab`` on Linux, ``~/Library/Application Support/mlops_lab`` on macOS,
``%LOCALAPPDATA%\\mlops_lab`` on Windows).

Every environment variable the package reads is in :data:`VARIABLES` (README's table is written
from it, and a test checks that the code reads no other).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import InvalidInput

CONFIG_FILE = "config.toml"

#: name -> (environment variable, what it sets). Settings first, then what processes hand down.
VARIABLES: dict[str, tuple[str, str]] = {
    "home": ("MLOPS_LAB_HOME", "The home folder: the SQLite registry, the local artifact and collection stores, "
                               "deployments' prepared files and logs, keys. Default: the per-user data folder."),
    "db": ("MLOPS_LAB_DB", "The registry's metadata database, any SQLAlchemy URL "
                           "(`postgresql+psycopg://user@host/db` for a team). Default: `sqlite:///HOME/registry.db`."),
    "artifacts": ("MLOPS_LAB_ARTIFACTS", "Where model files are stored: a folder, or `s3://bucket/prefix` on any "
                                         "S3-compatible store. Default: `HOME/artifacts`."),
    "collection": ("MLOPS_LAB_COLLECTION", "Where deployments write what they collect: a folder, or "
                                           "`s3://bucket/prefix`. Default: `HOME/collected`."),
    "s3_endpoint_url": ("MLOPS_LAB_S3_ENDPOINT_URL", "The S3 endpoint for `s3://` stores that are not AWS's "
                                                     "(default: `$AWS_ENDPOINT_URL_S3`, then `$AWS_ENDPOINT_URL`). "
                                                     "Credentials: the usual AWS variables or files."),
}
#: Variables mlops_lab sets for its own processes or reads in special places (documented beside the settings).
INTERNAL_VARIABLES: dict[str, str] = {
    "MLOPS_LAB_MODEL_PATHS": "Set by a scoring server for its entry scripts: reference -> local folder, read by `model_path()`.",
    "MLOPS_LAB_MODEL_DIR": "Set while an entry script's `init()` runs: the model's folder (also `AZUREML_MODEL_DIR`).",
    "MLOPS_LAB_CRASHPOINT": "Tests only: the named point at which a process kills itself, to test crash safety.",
    "MLOPS_LAB_TEST_PG_URL": "Tests only: the PostgreSQL server the suite's registry tests run on (`make test` starts one).",
    "MLOPS_LAB_TEST_K8S_BIN": "Tests only: the folder of the Kubernetes control plane's binaries (`make test` builds them with `.ci/kubernetes.sh`).",
    "MLOPS_LAB_K8S_CACHE": "`.ci/kubernetes.sh` only: where the control plane is built and cached (default `/var/cache/mlops-lab/kubernetes-VERSION`).",
}


def default_home() -> Path:
    """The per-user folder used when no home folder is given."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mlops_lab"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mlops_lab"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlops_lab"


def _read_config(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    import tomllib

    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"the config file {path} cannot be read: {exc}",
                           hint="fix or remove it; its keys are " + ", ".join(k for k in VARIABLES if k != "home")) from None
    unknown = sorted(set(doc) - set(VARIABLES) - {"home"})
    if unknown:
        raise InvalidInput(f"the config file {path} has unknown key(s) {', '.join(unknown)}",
                           hint="its keys are " + ", ".join(k for k in VARIABLES if k != "home"))
    bad = [k for k, v in doc.items() if not isinstance(v, str)]
    if bad:
        raise InvalidInput(f"the config file {path}: {', '.join(bad)} must be a string")
    doc.pop("home", None)  # the file lives in the home folder: it cannot move it
    return doc


@dataclass(frozen=True)
class Settings:
    """Where one registry, its stores and its deployments live.

    Build it with :meth:`load`; a :class:`~mlops_lab.Workspace` takes it and hands it down to every
    store and process it starts. ``sources`` says where each value came from.

    Examples
    --------
    >>> Settings.load(home="/tmp/team", db="postgresql+psycopg://ml@db/registry")  # doctest: +SKIP
    """

    home: Path
    db: str
    artifacts: str
    collection: str
    s3_endpoint_url: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, *, home: str | os.PathLike | None = None, db: str | None = None, artifacts: str | None = None,
             collection: str | None = None, s3_endpoint_url: str | None = None,
             env: Mapping[str, str] | None = None) -> Settings:
        """Arguments first, then ``MLOPS_LAB_*`` variables (of ``env``, by default the process's),
        then ``config.toml`` in the home folder, then the defaults."""
        env = os.environ if env is None else env
        given = {"db": db, "artifacts": artifacts, "collection": collection, "s3_endpoint_url": s3_endpoint_url}
        sources: dict[str, str] = {}
        if home is not None and str(home):
            home_dir, sources["home"] = Path(home), "argument"
        elif env.get(VARIABLES["home"][0]):
            home_dir, sources["home"] = Path(env[VARIABLES["home"][0]]), VARIABLES["home"][0]
        else:
            home_dir, sources["home"] = default_home(), "default"
        home_dir = home_dir.expanduser().resolve()
        file = None
        values: dict[str, Any] = {}
        for key, value in given.items():
            var = VARIABLES[key][0]
            if value is not None and str(value):
                values[key], sources[key] = str(value), "argument"
            elif env.get(var):
                values[key], sources[key] = env[var], var
            else:
                if file is None:
                    file = _read_config(home_dir / CONFIG_FILE)
                if file.get(key):
                    values[key], sources[key] = file[key], str(home_dir / CONFIG_FILE)
        if "s3_endpoint_url" not in values:
            for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
                if env.get(var):
                    values["s3_endpoint_url"], sources["s3_endpoint_url"] = env[var], var
                    break
        defaults = {"db": f"sqlite:///{home_dir / 'registry.db'}", "artifacts": str(home_dir / "artifacts"),
                    "collection": str(home_dir / "collected"), "s3_endpoint_url": None}
        for key, value in defaults.items():
            if key not in values:
                values[key] = value
                sources.setdefault(key, "default")
        for key in ("artifacts", "collection"):
            values[key] = _store_uri(values[key], home_dir)
        return cls(home=home_dir, sources=dict(sources), **values)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The variables that give a child process these same settings."""
        out = {}
        for f in fields(self):
            if f.name in VARIABLES:
                value = getattr(self, f.name)
                if value is not None:
                    out[VARIABLES[f.name][0]] = str(value)
        return out

    def describe(self) -> list[dict[str, str]]:
        """Each setting, its value (a password in a URL masked) and where it came from
        (``mlops-lab config``)."""
        return [{"setting": k, "variable": var, "value": "" if getattr(self, k) is None else safe_url(str(getattr(self, k))),
                 "from": self.sources.get(k, "default")} for k, (var, _) in VARIABLES.items()]


def safe_url(url: str) -> str:
    """A URL fit to show: its password, if any, replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@")))
    return url


def _store_uri(value: str, home: Path) -> str:
    """A store location as a URI (``s3://...``) or an absolute folder; relative folders are the
    home folder's."""
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme == "file":
            return str(Path(value[len("file://"):]).expanduser().resolve())
        return value
    path = Path(value).expanduser()
    return str((path if path.is_absolute() else home / path).resolve())


def markdown_table() -> str:
    """README's table of every variable."""
    rows = ["| Variable | Setting | What it sets |", "|---|---|---|"]
    rows += [f"| `{var}` | `{key}` | {text} |" for key, (var, text) in VARIABLES.items()]
    rows += [f"| `{var}` | - | {text} |" for var, text in INTERNAL_VARIABLES.items()]
    return "\n".join(rows)
