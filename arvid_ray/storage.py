"""URIs → pyarrow filesystems: the one place every stage gets a filesystem and a path from.

Design trade-off: a location is a *string* until this module turns it into ``(filesystem, path)``;
joins and parents are done on strings, never with ``pathlib`` (``Path("s3://b/x")`` silently becomes
``s3:/b/x``). Local paths, ``s3://`` (AWS or any S3-compatible endpoint from ``storage.s3_endpoint`` /
``AWS_ENDPOINT_URL``) and ``gs://`` are first-class; other schemes go through
``pyarrow.fs.FileSystem.from_uri``. S3 filesystems are built explicitly rather than by ``from_uri`` so
that the endpoint and the bucket's region (looked up once, on the driver) travel with the pickled
filesystem to Ray workers on other nodes; credentials never do: each node's Arrow reads them from the
provider's chain, so nothing Tune or Train pickles under the storage root holds a key.

On a cluster everything a worker opens lives under one *storage root* (``storage.root``, defaulting to
``ARVID_STORAGE`` and, on one machine, to ``experiment.workdir``): ingested videos, token caches,
synthetic data, Tune/Train storage, run directories, evaluation samples, tracking fallbacks.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arvid_ray.config import ExperimentConfig, StorageConfig

__all__ = ["STORAGE_ENV", "REMOTE_SCHEMES", "is_remote", "scheme", "resolve", "join", "parent", "basename",
           "exists", "is_dir", "is_file", "makedirs", "read_bytes", "write_bytes", "read_text", "write_text",
           "upload_dir", "download_file", "local_copy", "storage_root", "absolute", "s3_filesystem",
           "bucket_region", "bucket_of", "StorageError", "resolve_videos_path", "VIDEOS_DIR"]

STORAGE_ENV = "ARVID_STORAGE"
VIDEOS_DIR = "videos.parquet"  # the dataset directory `arvid-ray ingest` writes inside its output
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")


class StorageError(ValueError):
    """A location cannot be used; the message names it and the fix."""


def scheme(uri: str) -> str:
    """'s3', 'gs', … or '' for a local path (``file://`` counts as local)."""
    if "://" not in uri:
        return ""
    head = uri.split("://", 1)[0].lower()
    return "" if head == "file" else head


def is_remote(uri: str) -> bool:
    """True for object-store / network URIs every node of a cluster can reach by name."""
    return scheme(uri) != ""


def _strip_file(uri: str) -> str:
    return uri[len("file://"):] if uri.lower().startswith("file://") else uri


def absolute(uri: str) -> str:
    """A local path made absolute (``~`` expanded); a remote URI unchanged except trailing '/'."""
    if is_remote(uri):
        return uri.rstrip("/") if not uri.endswith("://") else uri
    return os.path.abspath(os.path.expanduser(_strip_file(uri)))


def join(base: str, *parts: str) -> str:
    """String join that keeps ``s3://bucket`` intact; parts may contain '/'."""
    out = base.rstrip("/") if is_remote(base) else base
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}" if is_remote(out) or not out else os.path.join(out, part)
    return out


def parent(uri: str) -> str:
    """The containing location: ``s3://b/x/y`` → ``s3://b/x``; local paths by os.path."""
    if is_remote(uri):
        head, rest = uri.split("://", 1)
        rest = rest.rstrip("/")
        return f"{head}://{rest.rsplit('/', 1)[0]}" if "/" in rest else f"{head}://{rest}"
    return os.path.dirname(absolute(uri))


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/")) if is_remote(uri) else os.path.basename(absolute(uri))


# ------------------------------------------------------------------------------------ filesystems
_REGIONS: dict[tuple[str, str], str] = {}  # (endpoint or '', bucket) -> region, looked up once per process


def _region_from_head(bucket: str, endpoint: str | None) -> str | None:
    """The ``x-amz-bucket-region`` header of an unsigned HEAD on the bucket. AWS sends it with 200, 301
    and 403 alike (no credentials needed); S3-compatible servers may send it too."""
    import urllib.error
    import urllib.request

    url = f"{endpoint.rstrip('/')}/{bucket}" if endpoint else f"https://{bucket}.s3.amazonaws.com"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as resp:
            headers = resp.headers
    except urllib.error.HTTPError as exc:  # 301 / 403 still name the region
        headers = exc.headers
    except OSError:
        return None
    return (headers or {}).get("x-amz-bucket-region") or None


def _region_from_api(bucket: str, endpoint: str | None) -> str | None:
    """S3 GetBucketLocation with the default credential chain (boto3, when installed: the cluster extra)."""
    try:
        import boto3
    except ImportError:
        return None
    try:
        client = boto3.client("s3", endpoint_url=endpoint or None, region_name="us-east-1")
        found = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except Exception:  # noqa: BLE001 - no credentials, access denied, no network: the caller decides
        return None
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(found, found)


def bucket_region(bucket: str, endpoint: str | None = None) -> str | None:
    """The region a bucket lives in, asked of the bucket (HEAD's ``x-amz-bucket-region``, then
    GetBucketLocation), cached per (endpoint, bucket); None when neither answers (no such bucket,
    no network). Arrow does not follow S3's region redirects, so a wrong guess fails every request."""
    key = (endpoint or "", bucket)
    if key not in _REGIONS:
        region = _region_from_head(bucket, endpoint) or _region_from_api(bucket, endpoint)
        if region is None:
            return None
        _REGIONS[key] = region
    return _REGIONS[key]


def s3_filesystem(storage: StorageConfig | None = None, bucket: str | None = None):
    """A pyarrow S3FileSystem from cfg.storage, falling back to AWS_ENDPOINT_URL / AWS_REGION env vars.

    Region: ``storage.s3_region``, else AWS_REGION / AWS_DEFAULT_REGION, else the ``bucket``'s own
    region (asked of the bucket, cached), else us-east-1. Credentials are never copied into the
    filesystem: Arrow reads them itself on every node from the provider's chain (environment variables,
    ~/.aws, web identity / IRSA, instance profile), so a filesystem Tune or Train pickles into the
    storage root carries no key.
    """
    from pyarrow import fs

    from arvid_ray.config import StorageConfig

    storage = storage or StorageConfig()
    endpoint = storage.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = storage.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and bucket:
        region = bucket_region(bucket, endpoint)
    # generous timeouts: the SDK defaults (1 s connect, 3 s request) make busy endpoints retry uploads
    kwargs: dict[str, Any] = {"region": region or "us-east-1", "anonymous": storage.s3_anonymous,
                              "connect_timeout": 10.0, "request_timeout": 120.0}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    return fs.S3FileSystem(**kwargs)


def bucket_of(uri: str) -> str:
    """``scheme://bucket`` of a remote URI (the unit a filesystem is made for: S3 regions are per bucket)."""
    kind = scheme(uri)
    return f"{kind}://{uri.split('://', 1)[1].split('/', 1)[0]}"


def _gcs_filesystem(storage: StorageConfig | None):
    from pyarrow import fs

    kwargs: dict[str, Any] = {"anonymous": bool(storage and storage.gcs_anonymous)}
    endpoint = (storage.gcs_endpoint if storage else None) or os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint:  # a GCS emulator (tests) or private endpoint: host:port, optionally with a scheme
        scheme_, _, host = endpoint.rpartition("://")
        kwargs.update(endpoint_override=host or endpoint, scheme=scheme_ or "http")
    if storage and storage.gcs_project:
        kwargs["project_id"] = storage.gcs_project
    return fs.GcsFileSystem(**kwargs)


def resolve(uri: str, storage: StorageConfig | None = None):
    """``(pyarrow filesystem, path inside it)`` for a local path, ``s3://``, ``gs://`` or other URI."""
    from pyarrow import fs

    uri = str(uri)
    kind = scheme(uri)
    if kind == "":
        return fs.LocalFileSystem(), absolute(uri)
    rest = uri.split("://", 1)[1].rstrip("/")
    if not rest:
        raise StorageError(f"{uri!r} names no bucket: use {kind}://bucket/prefix")
    if kind == "s3":
        return s3_filesystem(storage, bucket=rest.split("/", 1)[0]), rest
    if kind in ("gs", "gcs"):
        return _gcs_filesystem(storage), rest
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/ValueError/OSError by scheme
        raise StorageError(f"unsupported location {uri!r} ({exc}): use a local path, s3://bucket/prefix or "
                           f"gs://bucket/prefix") from exc


def _info(uri: str, storage: StorageConfig | None):
    filesystem, path = resolve(uri, storage)
    return filesystem.get_file_info(path)


def exists(uri: str, storage: StorageConfig | None = None) -> bool:
    from pyarrow import fs

    return _info(uri, storage).type != fs.FileType.NotFound


def is_dir(uri: str, storage: StorageConfig | None = None) -> bool:
    from pyarrow import fs

    return _info(uri, storage).type == fs.FileType.Directory


def is_file(uri: str, storage: StorageConfig | None = None) -> bool:
    from pyarrow import fs

    return _info(uri, storage).type == fs.FileType.File


def makedirs(uri: str, storage: StorageConfig | None = None) -> None:
    filesystem, path = resolve(uri, storage)
    filesystem.create_dir(path, recursive=True)


def read_bytes(uri: str, storage: StorageConfig | None = None, filesystem=None) -> bytes:
    if filesystem is None:
        filesystem, path = resolve(uri, storage)
    else:
        path = resolve(uri, storage)[1]
    with filesystem.open_input_stream(path) as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """Write a whole file (object stores: one PUT; local: via a temp file + rename, so readers never see
    half a file)."""
    filesystem, path = resolve(uri, storage)
    if not is_remote(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return
    with filesystem.open_output_stream(path) as fh:
        fh.write(data)


def read_text(uri: str, storage: StorageConfig | None = None) -> str:
    return read_bytes(uri, storage).decode("utf-8")


def write_text(uri: str, text: str, storage: StorageConfig | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), storage)


def upload_dir(local_dir: str, uri: str, storage: StorageConfig | None = None) -> None:
    """Copy a local directory tree to ``uri`` (local or remote); a no-op when they are the same place."""
    from pyarrow import fs

    if not is_remote(uri) and absolute(uri) == absolute(local_dir):
        return
    filesystem, path = resolve(uri, storage)
    filesystem.create_dir(path, recursive=True)
    fs.copy_files(absolute(local_dir), path, source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=filesystem)


def download_file(uri: str, local_path: str, storage: StorageConfig | None = None) -> str:
    filesystem, path = resolve(uri, storage)
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    tmp = f"{local_path}.part-{os.getpid()}"
    with filesystem.open_input_stream(path) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    os.replace(tmp, local_path)
    return local_path


def local_copy(uri: str, storage: StorageConfig | None = None) -> str:
    """A local path holding ``uri``'s file: the path itself when local, else a cached download (by URI
    and size) under the system temp dir. For weights given by URI (tokenizer, I3D)."""
    import hashlib

    if not is_remote(uri):
        return absolute(uri)
    size = _info(uri, storage).size
    digest = hashlib.sha256(f"{uri}|{size}".encode()).hexdigest()[:16]
    target = os.path.join(tempfile.gettempdir(), "arvid-ray-downloads", digest, basename(uri))
    if os.path.isfile(target) and os.path.getsize(target) == size:
        return target
    return download_file(uri, target, storage)


# ------------------------------------------------------------------------------------ the root
def storage_root(cfg: ExperimentConfig) -> str:
    """The storage root: ``storage.root``, else ``$ARVID_STORAGE``, else ``experiment.workdir`` (absolute)."""
    root = cfg.storage.root or os.environ.get(STORAGE_ENV) or cfg.experiment.workdir
    return absolute(root)


def resolve_videos_path(source: str, storage: StorageConfig | None = None) -> str:
    """A videos.parquet location: ``source`` itself, or ``source/videos.parquet`` for an ingest output dir
    (local or remote; checked through arvid_ray.storage, never with pathlib on a URI)."""
    if source == "synthetic":
        raise ValueError("data.source='synthetic' must be materialised first: call arvid_ray.data.videos_path(cfg) "
                         "and set data.source to the path it returns (`arvid-ray tokenize` does this)")
    source = absolute(source)
    inner = join(source, VIDEOS_DIR)
    try:
        if is_dir(inner, storage):
            return inner
        found = exists(source, storage)
    except OSError as exc:  # unreachable bucket, bad credentials, DNS: say which field and what failed
        raise FileNotFoundError(f"data.source={source!r} cannot be read ({exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0][:300]}); check the URI, storage.s3_endpoint and "
                                f"the credentials in the environment") from exc
    if not found:
        raise FileNotFoundError(f"data.source={source!r} does not exist; use 'synthetic', a videos.parquet "
                                f"directory written by `arvid-ray ingest`, or an s3:// / gs:// URI of one")
    return source
