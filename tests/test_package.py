"""The package's promises: cheap import, a pinned public surface, one error hierarchy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlops_lab
from mlops_lab import errors

HEAVY = ["pandas", "altair", "docker", "kubernetes", "uvicorn", "starlette", "IPython", "sqlalchemy", "pyarrow", "sklearn"]


def test_import_loads_no_heavy_module():
    """Given a fresh interpreter, when mlops_lab is imported, then no heavy library is loaded."""
    code = (
        "import sys, mlops_lab\n"
        f"heavy = {HEAVY!r}\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_first_api_call_loads_what_it_needs():
    """The lazy names resolve, and the first call imports the registry (and SQLAlchemy) on
    demand, not pandas (the home folder is this test's)."""
    code = (
        "import sys, mlops_lab\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "f = mlops_lab.list_models\n"
        "assert callable(f) and 'pandas' not in sys.modules\n"
        "assert f() == []\n"
        "assert 'sqlalchemy' in sys.modules and 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_are_pinned():
    expected = {
        "register_model", "get_model", "list_models", "search_model_versions", "load_model",
        "download_model", "model_path", "get_baseline", "set_tags", "delete_tag",
        "set_description", "set_alias", "delete_alias", "delete_model_version", "delete_model",
        "gc", "Registry", "ModelVersion", "RegisteredModel", "ModelRef", "parse_ref", "Workspace", "Settings",
    }
    assert expected <= set(mlops_lab.__all__)
    for name in mlops_lab.__all__:
        assert getattr(mlops_lab, name) is not None, name
    with pytest.raises(AttributeError):
        mlops_lab.no_such_function  # noqa: B018


def test_every_error_is_an_mlops_lab_error_with_status_and_exit_code():
    classes = [getattr(errors, n) for n in errors.__all__]
    for cls in classes:
        assert issubclass(cls, errors.MlopsLabError)
        assert 400 <= cls.http_status < 600
        assert cls.exit_code != 0
    assert issubclass(errors.ModelNotFound, LookupError)
    assert issubclass(errors.InvalidName, ValueError)
    err = errors.ModelNotFound("chrun", ["churn"])
    assert err.to_dict() == {
        "error": "ModelNotFound",
        "message": "no model named 'chrun' in the registry",
        "hint": "did you mean 'churn'?",
        "name": "chrun",
        "suggestions": ["churn"],
    }
    assert "\n" not in str(err)
