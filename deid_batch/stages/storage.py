"""Storage: where paths that are URLs (``s3://``, ``gs://``, ``az://``, ...) are read and written.

Every place that takes a path (inputs, ``--out``, ``--ids``, ``--vars``, ``--manifest``,
``--key-file``) also takes an fsspec URL; this module is the only one that talks to fsspec.
Plain paths and ``file://`` URLs stay on the local code paths (temporary file + link/rename);
:func:`normalise` turns ``file://`` into a plain absolute path, so only remote URLs reach fsspec.

* Credentials and endpoints come the standard way of each filesystem (for S3: the AWS environment
  variables, ``AWS_ENDPOINT_URL`` for S3-compatible stores, ``AWS_PROFILE`` and
  ``~/.aws/config``); ``storage_options`` (``--storage-options JSON``) are passed to fsspec as they
  are. They may hold secrets: they are never logged, put in the manifest or in a fingerprint.
* Objects are written whole with one put (:func:`put_object`, :meth:`Folder.write_bytes`): a put
  is atomic (a reader sees the old object, the new one or none), so no temporary object is ever
  made. Without ``overwrite`` the put is conditional (``If-None-Match: *``), so two writers of
  the same key cannot both win.
* A run's stamp (what lets a resumed run recognise its own outputs) is kept in the object's
  metadata on S3 (``x-amz-meta-deid-batch-run-stamp``); other filesystems keep no stamp and an
  identical object already there counts as written (see README, Deviations).

Functions here are pure and picklable (no state of their own; fsspec caches its filesystem
instances per process, which keeps connections open on a worker).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from deid_batch.dicom import reading
from deid_batch.dicom.writing import Outcome
from deid_batch.errors import ConfigError
from deid_batch.hygiene import private_file, private_folder
from deid_batch.schemas import Reason, Status

__all__ = [
    "STAMP_KEY",
    "Folder",
    "StorageOptions",
    "exists",
    "fetch_input",
    "filesystem",
    "has_files",
    "inside",
    "is_url",
    "join",
    "list_entries",
    "load_input",
    "normalise",
    "put_object",
    "read_bytes",
    "upload_file",
    "write_bytes",
]

StorageOptions = Mapping[str, Any]
#: object metadata key holding the run stamp (S3 lowercases metadata keys)
STAMP_KEY = "deid-batch-run-stamp"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _scheme(path: str) -> str | None:
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for a remote URL (``s3://...``); False for plain paths and ``file://`` URLs."""
    scheme = _scheme(os.fspath(path)) if isinstance(path, str) else None
    return scheme is not None and scheme not in ("file", "local")


def normalise(path: str | os.PathLike[str]) -> str:
    """One spelling per place: absolute local paths, ``scheme://bucket/key`` URLs without a trailing
    ``/`` or repeated ``/`` (``.`` and ``..`` segments resolved)."""
    text = os.fspath(path)
    scheme = _scheme(text)
    if scheme in ("file", "local"):
        return os.path.abspath(text.split("://", 1)[1])
    if scheme is None:
        return os.path.abspath(text)
    rest = text.split("://", 1)[1]
    norm = posixpath.normpath("/" + rest).lstrip("/")
    return f"{scheme}://{norm}" if norm != "." else f"{scheme}://"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a URL or a local path."""
    if is_url(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def filesystem(url: str, options: StorageOptions | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it (``bucket/key``)."""
    try:
        import fsspec.core
    except ImportError:
        raise ConfigError(f"{url}: URLs need fsspec; install deid-batch[s3] (pip install 'deid-batch[s3]')") from None
    try:
        # listings are not cached: other processes (workers, an earlier run) write to the same prefixes
        fs, path = fsspec.core.url_to_fs(url, **{"use_listings_cache": False, **dict(options or {})})
        return fs, str(path)
    except (ImportError, ValueError) as exc:
        scheme = _scheme(url) or "?"
        raise ConfigError(
            f"{url}: no filesystem for {scheme}:// URLs ({type(exc).__name__}); install its fsspec package "
            "(s3fs for s3://: pip install 'deid-batch[s3]'; gcsfs for gs://; adlfs for az://)"
        ) from None
    except TypeError:
        raise ConfigError(f"{url}: --storage-options holds an option this filesystem does not take; "
                          "check the option names against its fsspec documentation") from None


def _full(fs: Any, path: str) -> str:
    return str(fs.unstrip_protocol(path))


# ------------------------------------------------------------------------------ client side
def list_entries(url: str, options: StorageOptions | None = None) -> list[str]:
    """Every object under the prefix ``url`` (or ``url`` itself if it is an object), as URLs, sorted.

    Raises
    ------
    ConfigError
        Nothing is at ``url`` (the message names it), or it cannot be listed.
    """
    fs, path = filesystem(url, options)
    try:
        if fs.isfile(path):
            return [_full(fs, path)]
        keys = [k for k in fs.find(path) if not k.endswith("/")]
    except PermissionError:
        raise ConfigError(f"input {url} cannot be listed: access denied; check the credentials "
                          "(AWS_PROFILE / AWS_ACCESS_KEY_ID, --storage-options)") from None
    except OSError as exc:
        raise ConfigError(f"input {url} cannot be listed ({type(exc).__name__}); check the URL, the endpoint "
                          "(AWS_ENDPOINT_URL) and the credentials") from None
    if not keys:
        raise ConfigError(f"input not found: {url!r}; check the URL (no object has this prefix)")
    return [_full(fs, k) for k in sorted(keys)]


def exists(url: str, options: StorageOptions | None = None) -> bool:
    """Is there an object (or a prefix with objects) at ``url``?"""
    if not is_url(url):
        return os.path.lexists(url)
    fs, path = filesystem(url, options)
    try:
        return bool(fs.exists(path))
    except OSError:
        return False


def has_files(url: str, options: StorageOptions | None = None) -> bool:
    """Does the prefix ``url`` hold any object? One listing request."""
    fs, path = filesystem(url, options)
    try:
        return bool(fs.ls(path, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return False


def inside(child: str, parent: str) -> bool:
    """Is ``child`` equal to or under ``parent``? Both normalised with :func:`normalise`; local paths
    with symlinks resolved. A URL and a local path are never inside each other."""
    a, b = normalise(child), normalise(parent)
    if is_url(a) != is_url(b):
        return False
    if not is_url(a):
        return under(os.path.realpath(a), os.path.realpath(b))
    return under(a, b, "/")


def under(child: str, parent: str, sep: str = os.sep) -> bool:
    """Is ``child`` equal to or under ``parent``, comparing the paths as they are written
    (component-wise: ``/a/bc`` is not under ``/a/b``)?"""
    return child == parent or child.startswith(parent.rstrip(sep) + sep)


def read_bytes(url: str, options: StorageOptions | None = None) -> bytes:
    """The whole object (or local file) at ``url``; ``FileNotFoundError``/``OSError`` as for a file."""
    if not is_url(url):
        with open(url, "rb") as fh:
            return fh.read()
    fs, path = filesystem(url, options)
    return bytes(fs.cat_file(path))


def write_bytes(url: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Put ``data`` as the object at ``url`` in one atomic put (replacing what is there)."""
    fs, path = filesystem(url, options)
    fs.pipe_file(path, data)


def upload_file(local: str, url: str, options: StorageOptions | None = None) -> None:
    """Put the local file ``local`` as the object ``url`` (one put, or a multipart upload that the
    store makes visible only when complete: atomic either way)."""
    fs, path = filesystem(url, options)
    fs.put_file(local, path)


# ------------------------------------------------------------------------------ worker side
def fetch_input(url: str, options: StorageOptions | None = None) -> bytes | tuple[Status, Reason, str]:
    """The bytes of one input object, or its manifest verdict (``(status, reason, message)``).

    The message names neither the object nor any value (keys can hold patient names).
    """
    try:
        fs, path = filesystem(url, options)
        data = bytes(fs.cat_file(path))
    except ConfigError as exc:
        return Status.FAILED, Reason.UNREADABLE, str(exc).split(": ", 1)[-1]
    except FileNotFoundError:
        return Status.FAILED, Reason.UNREADABLE, "no longer exists"
    except PermissionError:
        return Status.FAILED, Reason.UNREADABLE, "access denied"
    except IsADirectoryError:
        return Status.SKIPPED, Reason.NOT_REGULAR, "a folder (prefix), not an object"
    except Exception as exc:  # noqa: BLE001 - network and service errors: this file fails, the run goes on
        return Status.FAILED, Reason.UNREADABLE, f"cannot be read ({type(exc).__name__})"
    if not data:
        return Status.FAILED, Reason.EMPTY, "empty object (0 bytes)"
    return data


def load_input(source: str, options: StorageOptions | None = None
               ) -> tuple[tuple[Status, Reason, str] | None, bytes | None]:
    """``(verdict, data)`` of one input entry for the readers.

    Local paths: ``(classify_entry(source), None)``, the file is read later by
    :func:`~deid_batch.dicom.reading.read_dataset` itself. URLs: the object is fetched here once
    (``(None, bytes)``) or gets its verdict (``(verdict, None)``).
    """
    if not is_url(source):
        return reading.classify_entry(source), None
    got = fetch_input(source, options)
    return (got, None) if isinstance(got, tuple) else (None, got)


def _is_s3(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protocol


def _same_content(fs: Any, path: str, data: bytes) -> bool:
    try:
        return int(fs.size(path)) == len(data) and bytes(fs.cat_file(path)) == data
    except OSError:
        return False


def _stamped(fs: Any, path: str, stamp_ns: int | None) -> bool:
    """Does the object carry this run's stamp? Filesystems without metadata: any identical object."""
    if stamp_ns is None:
        return False
    if not _is_s3(fs):
        return True  # no metadata to ask: an identical object counts as this run's (README, Deviations)
    try:
        meta = fs.metadata(path, refresh=True)
    except OSError:
        return False
    return bool(meta.get(STAMP_KEY) == str(stamp_ns))


def put_object(url: str, data: bytes, *, overwrite: bool, stamp_ns: int | None = None,
               options: StorageOptions | None = None) -> Outcome:
    """:func:`~deid_batch.dicom.writing.write_atomic` for objects: the same outcomes, one atomic put.

    ``EXISTS`` when another object is at ``url`` and ``overwrite`` is off (checked by the store
    itself with a conditional put); ``IDENTICAL`` when the same bytes with this run's stamp are
    there (a retried or resumed partition), or the same bytes and ``overwrite``.
    Raises ``OSError`` when the store refuses the put.
    """
    fs, path = filesystem(url, options)
    extra: dict[str, Any] = {}
    if stamp_ns is not None and _is_s3(fs):
        extra["Metadata"] = {STAMP_KEY: str(stamp_ns)}
    try:
        present = bool(fs.exists(path))
    except OSError:
        present = False
    if present:
        if _same_content(fs, path, data) and (overwrite or _stamped(fs, path, stamp_ns)):
            return Outcome.IDENTICAL
        if not overwrite:
            return Outcome.EXISTS
    try:
        fs.pipe_file(path, data, mode="overwrite" if overwrite else "create", **extra)
    except FileExistsError:  # another writer put it between the check and the put
        if _same_content(fs, path, data) and _stamped(fs, path, stamp_ns):
            return Outcome.IDENTICAL
        return Outcome.EXISTS
    return Outcome.WRITTEN


# ------------------------------------------------------------------------------ a run's folder
class Folder:
    """A folder of small files (the manifest folder): local, or a prefix of an object store.

    Local folders keep their exact behaviour (mode 0700, files 0600 written through ``NAME.tmp``
    + rename);
    on object storage every write is one put and there are no modes (use the bucket's policy).
    """

    def __init__(self, location: str, options: StorageOptions | None = None) -> None:
        self.location = normalise(location)
        self.url = is_url(self.location)
        self.options = dict(options or {})

    def path(self, name: str) -> str:
        return join(self.location, name)

    def create(self) -> None:
        if not self.url:
            private_folder(self.location)

    def exists(self, name: str | None = None) -> bool:
        target = self.location if name is None else self.path(name)
        if not self.url:
            return os.path.exists(target)
        return exists(target, self.options)

    def names(self) -> list[str]:
        """Names of the files directly in the folder (none when it does not exist)."""
        if not self.url:
            return os.listdir(self.location) if os.path.isdir(self.location) else []
        fs, path = filesystem(self.location, self.options)
        try:
            return [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False, refresh=True)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_bytes(self, name: str) -> bytes:
        return read_bytes(self.path(name), self.options)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` atomically (local: temporary file + rename; object store: one put)."""
        target = self.path(name)
        if self.url:
            write_bytes(target, data, self.options)
            return
        tmp = target + ".tmp"
        private_file(tmp)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)

    def create_private(self, name: str, data: bytes) -> None:
        """Write a new secret file (local: mode 0600, refused if it exists; objects: conditional put)."""
        target = self.path(name)
        if not self.url:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return
        fs, path = filesystem(target, self.options)
        fs.pipe_file(path, data, mode="create")

    def remove(self, name: str) -> None:
        if not self.url:
            os.unlink(self.path(name))
            return
        fs, path = filesystem(self.path(name), self.options)
        fs.rm_file(path)

    def open_dataset_source(self) -> tuple[Any, str]:
        """``(filesystem, path)`` for :func:`pyarrow.dataset.dataset` (``None`` filesystem: local)."""
        if not self.url:
            return None, self.location
        return filesystem(self.location, self.options)
