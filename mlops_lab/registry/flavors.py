"""How models are turned into files, and files back into models.

Four flavors cover what a data scientist registers:

``python``
    A Python object with ``predict``, ``predict_proba`` or ``__call__`` (scikit-learn, an
    XGBoost-style booster, a plain function), serialized with cloudpickle so that functions and
    classes defined in a notebook load in another process.
``file``
    A file registered as-is (pickle, joblib, ONNX or anything else).
``folder``
    A folder registered as-is.
``script``
    An Azure-ML-style scoring script with ``init()`` and ``run(data)``, plus its files.

.. warning::
   Loading a pickle or joblib file, or running a scoring script, executes code. mlops_lab only
   loads artifacts whose SHA-256 matches the one recorded at registration, but the registry
   trusts whoever registered the model: share a registry only with people you trust.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactCorrupted, InvalidModel

PREDICT_METHODS = ("predict", "predict_proba", "__call__")
MODEL_FILE = "model.pkl"


@dataclass
class Packaged:
    """A model serialized into a staging folder: the files and how to load them back."""

    flavor: str
    loader: dict[str, Any]
    source: Any  # what requirements are captured from


def predict_method(obj: Any) -> str | None:
    for name in PREDICT_METHODS:
        if name == "__call__":
            if callable(obj) and not isinstance(obj, type):
                return name
        elif callable(getattr(obj, name, None)):
            return name
    return None


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {
        ".pkl": "pickle",
        ".pickle": "pickle",
        ".joblib": "joblib",
        ".onnx": "onnx",
    }.get(suffix, "unknown")


def package(model: Any, staging: Path, entry_script: str | os.PathLike | None = None) -> Packaged:
    """Write ``model`` into ``staging`` and say how to load it."""
    if isinstance(model, (str, os.PathLike)):
        return _package_path(Path(model), staging, entry_script)
    if entry_script is not None:
        raise InvalidModel("entry_script goes with a file or a folder of model files, not an object")
    method = predict_method(model)
    if method is None:
        raise InvalidModel(
            f"a {type(model).__name__} cannot be registered: it has no predict, predict_proba "
            "or __call__ method",
            hint="register an object with one of them, a file, or a folder",
        )
    import cloudpickle

    cls = type(model)
    local = _local_modules(model)
    for mod in local:
        cloudpickle.register_pickle_by_value(mod)
    try:
        with open(staging / MODEL_FILE, "wb") as f:
            cloudpickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InvalidModel(f"the {cls.__name__} could not be serialized: {exc}") from None
    finally:
        for mod in local:
            cloudpickle.unregister_pickle_by_value(mod)
    loader = {
        "file": MODEL_FILE,
        "serializer": "cloudpickle",
        "method": method,
        "class": f"{cls.__module__}.{cls.__qualname__}",
    }
    return Packaged("python", loader, model)


def _local_modules(model: Any) -> list[Any]:
    """Modules of the project the model was built in (importable here, from no installed
    distribution): their classes and functions are stored by value, like a notebook's, so the
    model loads where that code is not on the path (a server, a container)."""
    from .environment import _collect_modules, _distribution_pin

    found: set[str] = set()
    _collect_modules(model, found, set(), depth=4)
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    out = []
    for top in found:
        if not top or top in stdlib or top in ("__main__", "builtins", "mlops_lab") or top.startswith("_"):
            continue
        mod = sys.modules.get(top)
        if mod is None or _distribution_pin(top) is not None:
            continue
        if getattr(mod, "__file__", None) is None:
            continue
        out.append(mod)
    return out


def _package_path(path: Path, staging: Path, entry_script: str | os.PathLike | None) -> Packaged:
    if not path.exists():
        raise InvalidModel(f"no such file or folder: {path}")
    if path.is_file():
        shutil.copy2(path, staging / path.name)
        files_root = staging
        loader: dict[str, Any] = {"file": path.name, "format": _file_format(path)}
        flavor = "file"
    elif path.is_dir():
        # The folder's content becomes the version's content, at its root.
        shutil.copytree(path, staging, symlinks=False, dirs_exist_ok=True)
        files_root = staging
        loader = {"format": "folder"}
        flavor = "folder"
    else:
        raise InvalidModel(f"{path} is neither a file nor a folder")
    if entry_script is not None:
        script = Path(entry_script)
        if script.is_absolute() or (not (files_root / script).exists() and script.exists()):
            if not script.is_file():
                raise InvalidModel(f"entry script {script} is not a file")
            target = files_root / script.name
            if not target.exists():
                shutil.copy2(script, target)
            rel = script.name
        else:
            if not (files_root / script).is_file():
                raise InvalidModel(f"entry script {script} is not in {path}")
            rel = script.as_posix()
        _check_script(files_root / rel)
        loader = {"entry_script": rel, "format": loader.get("format")}
        flavor = "script"
    return Packaged(flavor, loader, None)


def _check_script(path: Path) -> None:
    """A scoring script must define ``init`` and ``run``; checked without running it."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise InvalidModel(f"entry script {path.name} has a syntax error: {exc}") from None
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    missing = [f for f in ("init", "run") if f not in defined]
    if missing:
        raise InvalidModel(
            f"entry script {path.name} does not define {' and '.join(f + '()' for f in missing)}",
            hint="an Azure-ML-style scoring script defines init() and run(data)",
        )


# --- loading --------------------------------------------------------------------------------


class LoadedModel:
    """A loaded model version.

    ``predict(data)`` calls the model the way it was registered (its ``predict``,
    ``predict_proba``, the function itself, or a scoring script's ``run``); any other attribute is
    the underlying model's, so ``loaded.predict_proba(X)`` works for a scikit-learn classifier.
    ``model`` is the underlying object.
    """

    def __init__(self, model: Any, method: str, ref: str, path: Path | None = None) -> None:
        self.model = model
        self.method = method
        self.ref = ref
        self.path = path
        self._call = model if method == "__call__" else getattr(model, method)

    def predict(self, data: Any) -> Any:
        return self._call(data)

    def use_call(self, call: Any) -> None:
        """Score with ``call`` from now on: a faster function with the same results (the
        scoring server checks that first, see :mod:`mlops_lab.serving.accel`)."""
        self._call = call

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "_call"):  # not yet set: avoid recursion during unpickling
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"<LoadedModel {self.ref} {self.method} of {type(self.model).__name__}>"


class ScoringScript:
    """An Azure-ML-style scoring script loaded from a model folder: ``init()`` once, then
    ``run(data)`` per request."""

    _lock = threading.Lock()

    def __init__(self, folder: Path, script: str, ref: str) -> None:
        self.folder = folder
        self.script = script
        self.ref = ref
        module_name = f"mlops_lab_score_{abs(hash((str(folder), script)))}"
        spec = importlib.util.spec_from_file_location(module_name, folder / script)
        if spec is None or spec.loader is None:
            raise InvalidModel(f"cannot import entry script {script} of {ref}")
        module = importlib.util.module_from_spec(spec)
        with self._lock:
            # Azure ML's contract: the model's files are found through AZUREML_MODEL_DIR.
            os.environ["AZUREML_MODEL_DIR"] = str(folder)
            os.environ["MLOPS_LAB_MODEL_DIR"] = str(folder)
            sys.path.insert(0, str(folder))
            try:
                spec.loader.exec_module(module)
                module.init()
            finally:
                try:
                    sys.path.remove(str(folder))
                except ValueError:
                    pass
        self.module = module

    def run(self, data: Any) -> Any:
        return self.module.run(data)

    predict = run


def load_python(data: bytes) -> Any:
    import cloudpickle

    return cloudpickle.loads(data)


def load_file(fmt: str, data: bytes | None, path: Path | None) -> Any:
    if fmt == "pickle":
        assert data is not None
        return pickle.loads(data)
    if fmt == "joblib":
        try:
            import joblib
        except ImportError:
            raise InvalidModel("this model is a joblib file: pip install joblib to load it") from None
        assert data is not None
        return joblib.load(io.BytesIO(data))
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise InvalidModel("this model is an ONNX file: pip install onnxruntime to load it") from None
        assert path is not None
        return OnnxModel(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    raise InvalidModel(
        f"mlops_lab does not know how to load a {fmt!r} file",
        hint="use model_path(ref) to get its files, or register it with an entry_script",
    )


class OnnxModel:
    """An ONNX Runtime session with a ``predict`` taking the first input, returning the first output."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def predict(self, data: Any) -> Any:
        import numpy as np

        arr = np.asarray(data)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return self.session.run(None, {self.input_name: arr})[0]


def load_packaged(
    flavor: str,
    loader: dict[str, Any],
    ref: str,
    requirements: list[str],
    *,
    read_file: Callable[[str], bytes],
    folder: Callable[[], Path],
) -> LoadedModel:
    """Load a model from its checked files: ``read_file(path)`` returns one file's bytes,
    ``folder()`` a folder holding them all (for the flavors that need paths)."""
    try:
        if flavor == "python":
            obj = load_python(read_file(loader["file"]))
            return LoadedModel(obj, loader["method"], ref)
        if flavor == "file":
            fmt = loader["format"]
            if fmt == "onnx":
                obj = load_file(fmt, None, folder() / loader["file"])
            else:
                obj = load_file(fmt, read_file(loader["file"]), None)
            method = predict_method(obj)
            if method is None:
                raise InvalidModel(
                    f"{ref}: the object in {loader['file']} has no predict, predict_proba or __call__"
                )
            return LoadedModel(obj, method, ref)
        if flavor == "script":
            path = folder()
            return LoadedModel(ScoringScript(path, loader["entry_script"], ref), "run", ref, path)
        raise InvalidModel(
            f"{ref} is a folder registered as-is; mlops_lab cannot call it by itself",
            hint=f"use model_path({ref!r}) for its files, or register it with entry_script=",
        )
    except ModuleNotFoundError as exc:
        reqs = " ".join(requirements) or exc.name
        raise InvalidModel(
            f"{ref} needs the module {exc.name!r}, which is not installed", hint=f"pip install {reqs}"
        ) from None


METADATA_FILE = "MLOPS_LAB_MODEL.json"


def read_metadata(folder: Path) -> dict[str, Any]:
    """The metadata ``download_model`` writes beside a version's files."""
    import orjson

    try:
        return orjson.loads((folder / METADATA_FILE).read_bytes())
    except FileNotFoundError:
        raise InvalidModel(f"{folder} holds no {METADATA_FILE}: not a downloaded model") from None


def metadata_files(meta: dict[str, Any]) -> dict[str, bytes]:
    """The small files ``download_model`` writes beside a version's own: its metadata and, if it
    has any, its requirements."""
    import orjson

    out = {METADATA_FILE: orjson.dumps(meta, option=orjson.OPT_INDENT_2)}
    if meta.get("requirements"):
        out["requirements.txt"] = ("\n".join(meta["requirements"]) + "\n").encode()
    return out


def fetch_version(store_uri: str, endpoint_url: str | None, meta: dict[str, Any], dest: Path) -> Path:
    """A version's files, as ``download_model`` writes them, into the new folder ``dest`` straight
    from the artifact store ``store_uri`` (each file checked against its hash), with no registry
    database: what a scoring server in a pod does with the metadata its spec carries."""
    from .artifacts import open_store, unpack

    store = open_store(store_uri, dest.parent, endpoint_url)
    return unpack(store, [(f["path"], f["sha256"]) for f in meta["files"]], dest,
                  f"{meta['name']}:{meta['version']}", extra=metadata_files(meta))


def verify_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a downloaded model against the SHA-256 in its metadata; return the
    metadata, or raise :class:`ArtifactCorrupted` naming the file."""
    from .artifacts import sha256_file

    root = Path(folder)
    meta = read_metadata(root)
    ref = f"{meta['name']}:{meta['version']}"
    for f in meta["files"]:
        path = root / f["path"]
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise ArtifactCorrupted(str(path), f["sha256"], None, ref=ref) from None
        if actual != f["sha256"]:
            raise ArtifactCorrupted(str(path), f["sha256"], actual, ref=ref)
    return meta


def load_folder(folder: str | os.PathLike) -> tuple[LoadedModel, dict[str, Any]]:
    """Load a model downloaded with ``download_model`` (no registry needed), checking every
    file against the SHA-256 recorded in its metadata first."""
    import hashlib

    root = Path(folder)
    meta = verify_folder(root)
    ref = f"{meta['name']}:{meta['version']}"

    def read_file(rel: str) -> bytes:
        data = (root / rel).read_bytes()
        expected = next(f["sha256"] for f in meta["files"] if f["path"] == rel)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:  # changed between the check above and now
            raise ArtifactCorrupted(str(root / rel), expected, actual, ref=ref)
        return data

    model = load_packaged(
        meta["flavor"], meta["loader"], ref, meta.get("requirements", []),
        read_file=read_file, folder=lambda: root,
    )
    return model, meta
