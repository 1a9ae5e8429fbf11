"""The one error hierarchy of mlops_lab.

Every public function raises a subclass of :class:`MlopsLabError` for anything a user can cause or
fix. Each face renders it in its own way: the HTTP handlers as a JSON 4xx/5xx using
``http_status``, the CLI as an exit code using ``exit_code``, the magics as a one-line error.

The classes also derive from the matching built-in exception (``LookupError``, ``ValueError``, ...)
so that ordinary Python code can catch them without knowing mlops_lab.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "MlopsLabError",
    "NotFound",
    "ModelNotFound",
    "VersionNotFound",
    "AliasNotFound",
    "DeploymentNotFound",
    "InvalidInput",
    "InvalidName",
    "InvalidReference",
    "InvalidModel",
    "InvalidRequest",
    "MalformedRequest",
    "PayloadTooLarge",
    "Unauthorized",
    "ModelError",
    "DeploymentFailed",
    "Conflict",
    "VersionInUse",
    "AlreadyExists",
    "ArtifactCorrupted",
    "StorageError",
    "StorageFull",
    "RegistrySchemaError",
]


class MlopsLabError(Exception):
    """Base class of every error mlops_lab raises on purpose.

    Attributes
    ----------
    http_status:
        The HTTP status a web face answers with.
    exit_code:
        The process exit code the CLI ends with (0 is never used).
    hint:
        What the user can do about it, or ``None``.
    """

    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def to_dict(self) -> dict:
        """A JSON-ready description: ``{"error": class name, "message": ..., ...}``."""
        out = {"error": type(self).__name__, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


# --- not found ------------------------------------------------------------------------------


class NotFound(MlopsLabError, LookupError):
    """Something that was asked for does not exist."""

    http_status = 404
    exit_code = 3


def _did_you_mean(suggestions: Sequence[str]) -> str | None:
    if not suggestions:
        return None
    return "did you mean " + ", ".join(repr(s) for s in suggestions) + "?"


class ModelNotFound(NotFound):
    """No registered model has this name."""

    def __init__(self, name: str, suggestions: Iterable[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        super().__init__(
            f"no model named {name!r} in the registry", hint=_did_you_mean(self.suggestions)
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "name": self.name, "suggestions": self.suggestions}


class VersionNotFound(NotFound):
    """The model exists but not this version."""

    def __init__(self, name: str, version: int, existing: Sequence[int] = ()) -> None:
        self.name = name
        self.version = version
        self.existing = list(existing)
        if self.existing:
            hint = f"{name!r} has versions {_ranges(self.existing)}"
        else:
            hint = f"{name!r} has no versions left"
        super().__init__(f"model {name!r} has no version {version}", hint=hint)


class AliasNotFound(NotFound):
    """The model exists but has no such alias."""

    def __init__(self, name: str, alias: str, existing: Sequence[str] = ()) -> None:
        self.name = name
        self.alias = alias
        self.existing = list(existing)
        hint = (
            "its aliases are " + ", ".join(repr(a) for a in self.existing)
            if self.existing
            else f"set one with set_alias({name!r}, {alias!r}, VERSION)"
        )
        super().__init__(f"model {name!r} has no alias {alias!r}", hint=hint)


class DeploymentNotFound(NotFound):
    """No deployment has this name."""

    def __init__(self, name: str, suggestions: Iterable[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        super().__init__(f"no deployment named {name!r}", hint=_did_you_mean(self.suggestions))


# --- invalid input --------------------------------------------------------------------------


class InvalidInput(MlopsLabError, ValueError):
    """The caller passed something mlops_lab cannot accept."""

    http_status = 422
    exit_code = 4


class InvalidName(InvalidInput):
    """A model, alias, tag or deployment name breaks the naming rules."""

    def __init__(self, kind: str, value: object, rule: str) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"invalid {kind} {value!r}: {rule}")


class InvalidReference(InvalidInput):
    """A model reference could not be parsed."""

    def __init__(self, ref: object, why: str) -> None:
        self.ref = ref
        super().__init__(
            f"invalid model reference {ref!r}: {why}",
            hint="use 'name', 'name:VERSION' or 'name@ALIAS'",
        )


class InvalidModel(InvalidInput):
    """The object, file or folder given as a model cannot be registered or loaded as asked."""


class InvalidRequest(InvalidInput):
    """A scoring request does not match the model's signature (HTTP 422).

    ``field`` names the column, input or key at fault and ``row`` the row, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None, hint: str | None = None) -> None:
        self.field = field
        self.row = row
        super().__init__(message, hint=hint)

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.field is not None:
            out["field"] = self.field
        if self.row is not None:
            out["row"] = self.row
        return out


class MalformedRequest(InvalidRequest):
    """A scoring request's body cannot be read at all (not JSON, not CSV) (HTTP 400)."""

    http_status = 400


class PayloadTooLarge(InvalidRequest):
    """A scoring request's body is over the server's limit (HTTP 413)."""

    http_status = 413


class Unauthorized(MlopsLabError):
    """A scoring request without a valid key (HTTP 401)."""

    http_status = 401
    exit_code = 8


class ModelError(MlopsLabError):
    """The model raised while scoring (HTTP 500); ``error_id`` is in the deployment's log."""

    def __init__(self, message: str, error_id: str) -> None:
        self.error_id = error_id
        super().__init__(message, hint=f"error id {error_id} in the deployment's logs")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "error_id": self.error_id}


class DeploymentFailed(MlopsLabError):
    """A deployment, update or rollback could not be brought up; what served before still does."""

    http_status = 502
    exit_code = 9


# --- conflicts ------------------------------------------------------------------------------


class Conflict(MlopsLabError):
    """The operation clashes with the current state of the registry."""

    http_status = 409
    exit_code = 5


class VersionInUse(Conflict):
    """A model version cannot be deleted while a deployment serves it."""

    def __init__(self, ref: str, deployments: Sequence[str]) -> None:
        self.ref = ref
        self.deployments = list(deployments)
        names = ", ".join(repr(d) for d in self.deployments)
        super().__init__(
            f"model version {ref} is used by deployment {names}",
            hint="update or delete that deployment first",
        )


class AlreadyExists(Conflict):
    """Something with this name exists already."""


# --- storage --------------------------------------------------------------------------------


class ArtifactCorrupted(MlopsLabError):
    """An artifact's content no longer matches the hash recorded at registration."""

    exit_code = 6

    def __init__(self, path: str, expected: str, actual: str | None, *, ref: str = "") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        what = f" of {ref}" if ref else ""
        if actual is None:
            msg = f"artifact file {path}{what} is missing (expected sha256 {expected})"
        else:
            msg = (
                f"artifact file {path}{what} was changed after registration: "
                f"expected sha256 {expected}, found {actual}"
            )
        super().__init__(msg, hint="the model was not loaded; re-register it from its source")


class StorageError(MlopsLabError, OSError):
    """The registry's database or artifact folder could not be read or written."""

    exit_code = 7


class StorageFull(StorageError):
    """No space left where mlops_lab writes; nothing was recorded."""

    http_status = 507


class RegistrySchemaError(StorageError):
    """The registry database was written by a newer mlops_lab, or is not a registry at all."""


def _ranges(values: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    vals = sorted(set(values))
    parts: list[str] = []
    start = prev = vals[0]
    for v in vals[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = v
    parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ", ".join(parts)
