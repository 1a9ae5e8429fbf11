"""Object storage shared by the artifact store and the collection store: ``s3://bucket/prefix``
URIs, a ``pyarrow.fs.S3FileSystem`` for AWS or any S3-compatible server, and its errors as one line."""

from __future__ import annotations

import os
from typing import Any

from .errors import InvalidInput, StorageError


def split_s3_uri(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise InvalidInput(f"{uri!r} names no bucket", hint="write s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def s3_filesystem(endpoint_url: str | None):
    """A ``pyarrow.fs.S3FileSystem`` for AWS or, with ``endpoint_url``, any S3-compatible store."""
    from pyarrow import fs

    # allow_delayed_open: a small object is sent in one PUT at close, not a three-request multipart upload.
    kwargs: dict[str, Any] = {"connect_timeout": 5, "request_timeout": 60, "allow_delayed_open": True,
                              "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3)}
    if endpoint_url:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint_url)
        kwargs["endpoint_override"] = parts.netloc or parts.path
        kwargs["scheme"] = parts.scheme or "https"
        kwargs["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # Since 2025 AWS SDKs add checksums in a chunked encoding that S3-compatible servers
        # refuse (HTTP 411); asking for checksums only where required is what their docs advise.
        os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    return fs.S3FileSystem(**kwargs)


def s3_error(exc: OSError, what: str, uri: str, endpoint_url: str | None) -> StorageError:
    """One line naming the store, the object and what went wrong, with the likely fix."""
    text = str(exc)
    at = endpoint_url or "AWS"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        bucket = split_s3_uri(uri)[0]
        return StorageError(f"could not {what}: bucket {bucket!r} does not exist at {at}",
                            hint=f"create the bucket, or point the store elsewhere (now {uri})")
    if any(s in text for s in ("ACCESS_DENIED", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId",
                               "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH")):
        return StorageError(f"could not {what}: {at} refused the credentials",
                            hint="check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the AWS profile) for " + uri)
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
        return StorageError(f"could not {what}: the store at {at} does not answer",
                            hint="check the endpoint (MLOPS_LAB_S3_ENDPOINT_URL) and that the server runs")
    return StorageError(f"could not {what}: {text.splitlines()[0] if text else type(exc).__name__}")
