"""Object storage (S3 and S3-compatible stores): list, read, presign, and the options LanceDB needs.

Why one small module: videos, manifests and the index itself may live at `s3://bucket/key`, and the
indexer, the store and the server all need the same three things from the store (a listing with
sizes and ETags, a short-lived URL a decoder or a browser can read with range requests, and the
credentials and endpoint LanceDB should use). They get them here, from one client configured the way
every AWS tool is: credentials from the usual `AWS_*` variables, `~/.aws` profiles (`AWS_PROFILE`) or
an instance role; `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for S3-compatible stores (MinIO, Ceph,
moto in the tests); `AWS_REGION` / `AWS_DEFAULT_REGION` (default us-east-1).

Decoders never hold credentials: they get a presigned HTTPS URL, which ffprobe, decord and PyAV read
with HTTP range requests (they fetch the index and the sampled frames, not a copy of the file).

`boto3` is imported on first use, so a laptop that never names `s3://` never pays for it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

SCHEME = "s3://"
PRESIGN_SECONDS = 6 * 3600  # long enough for one video's decode (a decoder's budget is far shorter)


class ObjectStoreError(RuntimeError):
    """An object store cannot be used as asked; the message names the URI and the problem."""


def is_uri(value: object) -> bool:
    """True for `s3://...`, also after `pathlib.Path` collapsed the double slash (`s3:/bucket/key`):
    command-line options typed as paths arrive like that."""
    text = str(value)
    return text.startswith(SCHEME) or text.startswith("s3:/")


def normalize(value: object) -> str:
    """`s3://bucket/key` from a string or a `Path` that collapsed it; other values unchanged as str."""
    text = str(value)
    if text.startswith("s3:/") and not text.startswith(SCHEME):
        text = SCHEME + text[len("s3:/"):]
    return text


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, value: object) -> S3Uri:
        text = normalize(value)
        if not text.startswith(SCHEME):
            raise ObjectStoreError(f"{text}: not an s3:// URI")
        bucket, _, key = text[len(SCHEME):].partition("/")
        if not bucket:
            raise ObjectStoreError(f"{text}: no bucket name")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def name(self) -> PurePosixPath:
        """The key as a path (for its name, stem and suffix)."""
        return PurePosixPath(self.key or self.bucket)

    def join(self, relative: str) -> S3Uri:
        """`relative` resolved against this key's folder (how a manifest names its videos)."""
        folder = self.key.rsplit("/", 1)[0] if "/" in self.key else ""
        parts: list[str] = [p for p in folder.split("/") if p]
        for part in relative.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return S3Uri(self.bucket, "/".join(parts))


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    mtime: float  # LastModified, seconds since the epoch (a changed object has a newer one)
    etag: str


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@functools.lru_cache(maxsize=4)
def _client(endpoint_url: str | None, region_name: str):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ObjectStoreError("s3:// needs boto3: pip install 'vidsearch[s3]'") from exc
    # path-style addressing works with every S3-compatible store; AWS accepts it too
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)


def client():
    """The S3 client for the current environment (cached per endpoint and region)."""
    return _client(endpoint(), region())


def _call(uri: object, what: str, fn, **kwargs):
    try:
        return fn(**kwargs)
    except Exception as exc:  # botocore's errors: name the object and the operation
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        raise ObjectStoreError(f"{normalize(uri)}: cannot {what}: {code or type(exc).__name__}: {exc}") from exc


def _info(bucket: str, key: str, size: int, modified, etag: str) -> ObjectInfo:
    return ObjectInfo(f"{SCHEME}{bucket}/{key}", int(size), modified.timestamp(), etag.strip('"'))


def head(uri: object) -> ObjectInfo:
    loc = S3Uri.parse(uri)
    r = _call(uri, "read its metadata", client().head_object, Bucket=loc.bucket, Key=loc.key)
    return _info(loc.bucket, loc.key, r["ContentLength"], r["LastModified"], r["ETag"])


def list_objects(prefix: object) -> Iterator[ObjectInfo]:
    """Every object under `prefix` (treated as a folder: `s3://b/videos` lists `videos/...`)."""
    loc = S3Uri.parse(prefix)
    folder = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=folder)
    try:
        for page in pages:
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    yield _info(loc.bucket, obj["Key"], obj["Size"], obj["LastModified"], obj["ETag"])
    except Exception as exc:
        raise ObjectStoreError(f"{normalize(prefix)}: cannot list: {type(exc).__name__}: {exc}") from exc


def is_prefix(uri: object) -> bool:
    """A "folder": ends with '/', or names no object but has objects under it."""
    loc = S3Uri.parse(uri)
    if not loc.key or loc.key.endswith("/"):
        return True
    try:
        head(uri)
        return False
    except ObjectStoreError:
        return next(iter(list_objects(uri)), None) is not None


def read_bytes(uri: object, start: int = 0, end: int | None = None) -> bytes:
    """Bytes [start, end) of an object, with one range request (the whole object when `end` is None
    and `start` is 0)."""
    loc = S3Uri.parse(uri)
    kwargs = {"Bucket": loc.bucket, "Key": loc.key}
    if start or end is not None:
        kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    r = _call(uri, "read", client().get_object, **kwargs)
    return r["Body"].read()


def iter_chunks(uri: object, chunk: int) -> Iterator[bytes]:
    """The object streamed in chunks (no copy on disk)."""
    loc = S3Uri.parse(uri)
    body = _call(uri, "read", client().get_object, Bucket=loc.bucket, Key=loc.key)["Body"]
    yield from body.iter_chunks(chunk)


def presign(uri: object, seconds: int = PRESIGN_SECONDS) -> str:
    """A URL anyone holding it can GET (with range requests) for `seconds`, without credentials."""
    loc = S3Uri.parse(uri)
    return client().generate_presigned_url("get_object", Params={"Bucket": loc.bucket, "Key": loc.key}, ExpiresIn=seconds)


def media_location(value: object) -> str:
    """What a decoder or ffmpeg opens: a presigned URL for an object, the path itself otherwise."""
    return presign(value) if is_uri(value) else str(value)


def lance_storage_options() -> dict[str, str]:
    """LanceDB's `storage_options` for the same credentials, region and endpoint as `client()`
    (LanceDB's own environment lookup does not read AWS profiles, nor `AWS_ENDPOINT_URL`)."""
    options = {"aws_region": region()}
    import boto3

    creds = boto3.session.Session().get_credentials()  # resolved by botocore: env, profile, role
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        options["aws_access_key_id"] = frozen.access_key
        options["aws_secret_access_key"] = frozen.secret_key
        if frozen.token:
            options["aws_session_token"] = frozen.token
    url = endpoint()
    if url:
        options["aws_endpoint"] = url
        if url.startswith("http://"):
            options["allow_http"] = "true"
    return options
