"""Discovery: turn the user's sources (folders, files) into the list of every input entry.

Runs on the client, no dask. Takes a path or an iterable of paths; returns absolute path strings
(:func:`discover`, a list) or the same paths in Arrow buffers (:func:`discover_paths`, what the
pipeline uses: no Python string per file is kept).

* Every non-directory entry is listed, whatever it is: regular files, symlinks (to files, to
  folders, broken or looping), FIFOs, sockets, devices. Each one gets its own manifest row later
  (:func:`deid_batch.dicom.reading.classify_entry` says what it is); nothing is silently dropped.
* Folders are descended with :func:`os.scandir` without following directory symlinks, so a
  symlink loop cannot make the walk loop. A folder that cannot be listed is itself listed as an
  entry (it gets an ``unreadable`` row).
* The order is deterministic: sources in the order given, each folder walked depth-first with
  names sorted (its files, then its sub-folders). Each entry is listed once: a file given twice,
  a folder given twice, a folder inside another given folder, or a folder reached through a
  symlinked source path is walked once (folders are keyed by device and inode).
* A folder source that holds no file at all is logged as a warning (a mistyped or unmounted
  path often looks like that); the run goes on with the other sources.
* Memory: :func:`discover_paths` returns a :class:`PathList`: Arrow string chunks of
  :data:`CHUNK` entries, every chunk but the first in a spill file on disk (the path length + 4
  bytes per entry there: ~104 MB of disk for a million 100-character paths; in memory a plain
  ``list[str]`` costs ~160 MB); the client keeps 8 bytes per chunk. The visited-folder set costs
  ~100 bytes per folder; one folder's entries and at most one chunk are held as Python strings at a
  time. Time: 100,000 entries in ~0.5 s on a local disk.

:func:`check_output_location` refuses an output folder equal to or inside an input folder, and an
input inside the output folder (symlinks resolved), before anything is read or written.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import stat
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from deid_batch.errors import ConfigError
from deid_batch.stages import storage

__all__ = ["CHUNK", "PathList", "check_output_location", "discover", "discover_paths"]

Source = str | os.PathLike[str]

logger = logging.getLogger(__name__)

#: entries per Arrow chunk of :func:`discover_paths` (Python strings are held for one chunk at most)
CHUNK = 4096


class PathList:
    """The discovered paths, in order: Arrow string chunks of :data:`CHUNK` entries.

    The first chunk stays in memory; from the second one on, every chunk goes to a spill file
    (an Arrow IPC file, mode 0600, in the temporary folder; removed by :meth:`close` or when the
    list is garbage collected) and is read back only for the ranges asked for. So the client holds
    the chunk lengths, not the paths: a partition's paths exist as Python strings only while its
    task is being submitted.
    """

    def __init__(self) -> None:
        self._memory: list[pa.Array] = []
        self._pending: list[str] = []
        self._bounds: list[int] = [0]  # start of each chunk, and the end
        self._spill: str | None = None
        self._writer: Any = None
        self._reader: Any = None
        self._finalizer: Any = None

    # building --------------------------------------------------------------------------------
    def append(self, path: str) -> None:
        self._pending.append(path)
        if len(self._pending) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        # the system allocator gives the chunk's exact pages back to the OS when it is spilled
        chunk = pa.array(self._pending, pa.string(), memory_pool=pa.system_memory_pool())
        self._pending = []
        self._bounds.append(self._bounds[-1] + len(chunk))
        if not self._memory and self._writer is None:
            self._memory.append(chunk)
            return
        if self._writer is None:
            _remove_orphans()
            fd, self._spill = tempfile.mkstemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-", suffix=".arrow")
            os.close(fd)  # mkstemp: mode 0600 (source paths are often named after patients)
            self._finalizer = weakref.finalize(self, _remove, self._spill)
            self._writer = pa.ipc.new_file(self._spill, _SCHEMA)
            for kept in self._memory:  # the file holds every chunk (chunk k is its batch k)
                self._writer.write_batch(pa.record_batch([kept], schema=_SCHEMA))
        self._writer.write_batch(pa.record_batch([chunk], schema=_SCHEMA))

    def finish(self) -> PathList:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._reader = pa.ipc.open_file(pa.OSFile(self._spill))
        return self

    # reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._bounds[-1] + len(self._pending)

    @property
    def num_chunks(self) -> int:
        return len(self._bounds) - 1

    def chunk(self, k: int) -> pa.Array:
        """Chunk ``k`` (read from the spill file for all but the first)."""
        if k == 0 and self._memory:
            return self._memory[0]
        return self._reader.get_batch(k).column(0)

    def chunks(self) -> Iterator[pa.Array]:
        for k in range(self.num_chunks):
            yield self.chunk(k)

    def take_range(self, start: int, stop: int) -> list[str]:
        """The paths ``start`` to ``stop`` (exclusive) as a list of str."""
        stop = min(stop, len(self))
        out: list[str] = []
        k = max(0, bisect.bisect_right(self._bounds, start) - 1)
        while start < stop and k < self.num_chunks:
            first, end = self._bounds[k], self._bounds[k + 1]
            piece = self.chunk(k).slice(start - first, min(stop, end) - start)
            out.extend(piece.to_pylist())
            start, k = min(stop, end), k + 1
        return out

    def to_pylist(self) -> list[str]:
        return self.take_range(0, len(self))

    def to_arrow(self) -> pa.ChunkedArray:
        """Every path in one chunked array (in memory: for small runs and checks that need them all)."""
        return pa.chunked_array(list(self.chunks()), pa.string())

    def close(self) -> None:
        """Remove the spill file (the list cannot be read any more)."""
        self._reader = None
        if self._finalizer is not None:
            self._finalizer()


_SCHEMA = pa.schema([pa.field("path", pa.string())])


_SPILL_PREFIX = "deid-batch-paths-"


def _remove_orphans() -> None:
    """Remove the spill files of this user's runs that were killed (their process is gone).

    A run removes its spill file when it ends, even on an error; only a killed process (SIGKILL,
    out of memory, a node lost) leaves one, and the paths in it are often named after patients.
    """
    folder = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(folder) if n.startswith(_SPILL_PREFIX) and n.endswith(".arrow")]
    except OSError:
        return
    for name in names:
        pid_text = name[len(_SPILL_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        path = os.path.join(folder, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            logger.info("removing the path list a killed run left behind in %s", folder)
            _remove(path)
        except OSError:
            continue  # not ours to judge (another user's process, or the file went away)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _as_list(sources: Source | Iterable[Source]) -> list[str]:
    if isinstance(sources, (str, os.PathLike)):
        return [os.fspath(sources)]
    return [os.fspath(s) for s in sources]


def _is_dir(path: str) -> bool | None:
    """``os.path.isdir(path)``; None when nothing is there (``not os.path.lexists(path)``)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False if os.path.lexists(path) else None


class _Keys:
    """Identity of an entry independent of the path spelling: (device, inode of its folder,
    name); for many paths in few folders, each folder is stat'ed once."""

    def __init__(self) -> None:
        self._folders: dict[str, tuple[int, int] | None] = {}

    def __call__(self, path: str) -> tuple[int, int, str] | None:
        parent, name = os.path.split(path)
        if parent not in self._folders:
            try:
                st = os.stat(parent or ".")
                self._folders[parent] = (st.st_dev, st.st_ino)
            except OSError:
                self._folders[parent] = None
        ident = self._folders[parent]
        return None if ident is None else (ident[0], ident[1], name)


def discover(sources: Source | Iterable[Source],
             storage_options: storage.StorageOptions | None = None) -> list[str]:
    """:func:`discover_paths` as a list of str (for small interactive use)."""
    found = discover_paths(sources, storage_options)
    try:
        return found.to_pylist()
    finally:
        found.close()


def discover_paths(sources: Source | Iterable[Source],
                   storage_options: storage.StorageOptions | None = None) -> PathList:
    """Absolute paths of every entry under ``sources``, each once, in a deterministic order.

    Parameters
    ----------
    sources : path or iterable of paths
        Folders to walk and/or files (or any other entries) to include as they are. A URL
        (``s3://bucket/prefix``) lists every object under the prefix, sorted by key
        (:func:`deid_batch.stages.storage.list_entries`); ``file://`` URLs are local paths.
    storage_options : mapping, optional
        Passed to fsspec for URL sources (credentials, endpoint).

    Returns
    -------
    PathList
        Absolute paths (``os.path.abspath``: normalised, symlinks in the path not resolved), in
        Arrow chunks of :data:`CHUNK` entries, all but the first in a spill file.

    Raises
    ------
    ConfigError
        A source does not exist (the message names it), or no source was given.
    """
    given = [storage.normalise(s) for s in _as_list(sources)]
    if not given:
        raise ConfigError("no input given: name at least one folder or file")
    if any(storage.is_url(s) for s in given):
        urls = PathList()
        for entry in _discover_mixed(given, storage_options):
            urls.append(entry)
        return urls.finish()
    is_dir = [_is_dir(s) for s in given]  # one stat per source (a list of 100,000 files)
    missing = [s for s, d in zip(given, is_dir) if d is None]
    if missing:
        raise ConfigError(
            "input not found: " + ", ".join(repr(s) for s in missing) + "; check the path"
        )
    key_of = _Keys()
    explicit = {k for s, d in zip(given, is_dir) if not d and (k := key_of(s)) is not None}
    listed: set[tuple[int, int, str]] = set()  # explicit files already emitted
    visited: set[tuple[int, int]] = set()  # folders already walked
    out = PathList()
    for source, folder in zip(given, is_dir):
        if folder:  # a folder given by the user is descended, even via a symlink
            before, seen = len(out), len(visited)
            _walk(source, out, visited, explicit, listed)
            if len(out) == before and len(visited) > seen:  # walked (not a repeat) and empty
                logger.warning("input folder %s holds no files; check the path", source)
            continue
        key = key_of(source)
        if key is None or key not in listed:
            out.append(source)
            if key is not None:
                listed.add(key)
    return out.finish()


def _discover_mixed(given: list[str], storage_options: storage.StorageOptions | None) -> list[str]:
    """Sources with URLs among them: each URL's objects (listed by key), local ones walked; each once."""
    out: list[str] = []
    seen: set[str] = set()
    for source in given:
        found = storage.list_entries(source, storage_options) if storage.is_url(source) else discover(source)
        # (object listings arrive as one list of keys from fsspec: held as str while deduplicated)
        for entry in found:
            if entry not in seen:
                seen.add(entry)
                out.append(entry)
    return out


def _walk(
    top: str,
    out: PathList,
    visited: set[tuple[int, int]],
    explicit: set[tuple[int, int, str]],
    listed: set[tuple[int, int, str]],
) -> None:
    """Depth-first walk with sorted names; append non-directory entries to ``out``."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            ident = (st.st_dev, st.st_ino)
            if ident in visited:
                continue
            visited.add(ident)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            out.append(folder)  # cannot be listed: it gets its own (unreadable) manifest row
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(entry.path)
                continue
            if explicit:
                key = (ident[0], ident[1], entry.name)
                if key in explicit:
                    if key in listed:
                        continue
                    listed.add(key)
            out.append(entry.path)
        stack.extend(reversed(subfolders))


def _resolved(path: Source) -> str:
    return os.path.realpath(os.fspath(path))


class _Resolver:
    """``os.path.realpath`` for many paths in few folders (a file list of 100,000 files given
    to the API): each folder is resolved once, then an entry costs one ``lstat`` (a symlinked
    entry is resolved in full, and so is a path with ``..`` in it: realpath resolves a symlink
    before the ``..`` after it)."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: Source) -> str:
        text = os.fspath(path)
        if ".." in text:
            return os.path.realpath(text)
        absolute = os.path.abspath(text)
        folder, name = os.path.split(absolute)
        if not name:  # the root
            return absolute
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = os.path.realpath(folder)
        joined = os.path.join(real, name)
        return os.path.realpath(joined) if os.path.islink(joined) else joined


def check_output_location(sources: Source | Iterable[Source], output_folder: Source,
                          manifest_folder: Source | None = None) -> None:
    """Refuse an output folder (and a manifest folder) that could overwrite or be read back as input.

    Each source is resolved once for both folders (a file list of millions is walked once).

    Raises
    ------
    ConfigError
        ``output_folder`` (or ``manifest_folder``) equals or is inside an input folder, or an
        input is inside it (both compared with symlinks resolved).
    """
    given = [storage.normalise(s) for s in _as_list(sources)]  # file:// URLs are local paths
    folders = [(storage.normalise(output_folder), False)]
    if manifest_folder is not None:
        folders.append((storage.normalise(manifest_folder), True))
    if any(storage.is_url(f) for f, _m in folders) or any(storage.is_url(s) for s in given):
        for folder, is_manifest in folders:
            _check_url_location(given, folder, is_manifest)
        return
    resolved = [(_resolved(folder), folder, is_manifest) for folder, is_manifest in folders]
    resolve = _Resolver()
    for source in given:
        src = resolve(source)
        for out, folder, is_manifest in resolved:
            if out == src or (storage.under(out, src) and os.path.isdir(src)):
                raise _overlap(source, folder, is_manifest, inside_input=True)
            if storage.under(src, out):
                raise _overlap(source, folder, is_manifest, inside_input=False)


def _overlap(source: Source, folder: Source, is_manifest: bool, *, inside_input: bool) -> ConfigError:
    if is_manifest:
        return ConfigError(
            f"manifest folder {os.fspath(folder)} is inside an input folder; inputs are never modified: "
            "choose a --manifest folder outside every input"
        )
    if inside_input:
        return ConfigError(
            f"output folder {os.fspath(folder)!r} is inside input {os.fspath(source)!r}; "
            "inputs are never modified: choose an output folder outside every input"
        )
    return ConfigError(
        f"input {os.fspath(source)!r} is inside output folder {os.fspath(folder)!r}; "
        "choose an output folder that does not contain the inputs"
    )


def _check_url_location(sources: list[str], folder: str, is_manifest: bool) -> None:
    """:func:`check_output_location` when URLs are involved (normalised URLs compared)."""
    for source in sources:
        if storage.inside(folder, source):
            raise _overlap(source, folder, is_manifest, inside_input=True)
        if storage.inside(source, folder):
            raise _overlap(source, folder, is_manifest, inside_input=False)
