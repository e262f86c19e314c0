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
* Memory: :func:`discover_paths` keeps the paths in Arrow string chunks of :data:`CHUNK` entries:
  the path length + 4 bytes per entry (~104 MB for a million 100-character paths; a plain
  ``list[str]`` costs 57 bytes more per entry); the visited-folder set costs ~100 bytes per folder;
  one folder's entries (and at most one chunk) are held as Python strings at a time. Time: 100,000
  entries in ~0.3 s on a local disk.

:func:`check_output_location` refuses an output folder equal to or inside an input folder, and an
input inside the output folder (symlinks resolved), before anything is read or written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from deid_batch.errors import ConfigError
from deid_batch.stages import storage

__all__ = ["CHUNK", "check_output_location", "discover", "discover_paths"]

Source = str | os.PathLike[str]

logger = logging.getLogger(__name__)

#: entries per Arrow chunk of :func:`discover_paths` (Python strings are held for one chunk at most)
CHUNK = 65536


class _Paths:
    """An append-only path list kept in Arrow string chunks (a Python str per entry only until flushed)."""

    def __init__(self) -> None:
        self.chunks: list[pa.Array] = []
        self.pending: list[str] = []
        self.count = 0

    def append(self, path: str) -> None:
        self.pending.append(path)
        self.count += 1
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.chunks.append(pa.array(self.pending, pa.string()))
            self.pending = []

    def __len__(self) -> int:
        return self.count

    def array(self) -> pa.ChunkedArray:
        self.flush()
        return pa.chunked_array(self.chunks, pa.string())


def _as_list(sources: Source | Iterable[Source]) -> list[str]:
    if isinstance(sources, (str, os.PathLike)):
        return [os.fspath(sources)]
    return [os.fspath(s) for s in sources]


def _key(path: str) -> tuple[int, int, str] | None:
    """Identity of an entry independent of the path spelling: (device, inode of folder, name)."""
    parent, name = os.path.split(path)
    try:
        st = os.stat(parent or ".")
    except OSError:
        return None
    return st.st_dev, st.st_ino, name


def discover(sources: Source | Iterable[Source],
             storage_options: storage.StorageOptions | None = None) -> list[str]:
    """:func:`discover_paths` as a list of str (for small interactive use)."""
    paths: list[str] = discover_paths(sources, storage_options).to_pylist()
    return paths


def discover_paths(sources: Source | Iterable[Source],
                   storage_options: storage.StorageOptions | None = None) -> pa.ChunkedArray:
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
    pyarrow.ChunkedArray of string
        Absolute paths (``os.path.abspath``: normalised, symlinks in the path not resolved), in
        chunks of at most :data:`CHUNK` entries.

    Raises
    ------
    ConfigError
        A source does not exist (the message names it), or no source was given.
    """
    given = [storage.normalise(s) for s in _as_list(sources)]
    if not given:
        raise ConfigError("no input given: name at least one folder or file")
    if any(storage.is_url(s) for s in given):
        return pa.chunked_array([pa.array(_discover_mixed(given, storage_options), pa.string())], pa.string())
    missing = [s for s in given if not os.path.lexists(s)]
    if missing:
        raise ConfigError(
            "input not found: " + ", ".join(repr(s) for s in missing) + "; check the path"
        )
    explicit = {k for s in given if not os.path.isdir(s) and (k := _key(s)) is not None}
    listed: set[tuple[int, int, str]] = set()  # explicit files already emitted
    visited: set[tuple[int, int]] = set()  # folders already walked
    out = _Paths()
    for source in given:
        if os.path.isdir(source):  # a folder given by the user is descended, even via a symlink
            before, seen = len(out), len(visited)
            _walk(source, out, visited, explicit, listed)
            if len(out) == before and len(visited) > seen:  # walked (not a repeat) and empty
                logger.warning("input folder %s holds no files; check the path", source)
            continue
        key = _key(source)
        if key is None or key not in listed:
            out.append(source)
            if key is not None:
                listed.add(key)
    return out.array()


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
    out: _Paths,
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


def _resolved(path: Source) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def check_output_location(sources: Source | Iterable[Source], output_folder: Source) -> None:
    """Refuse an output folder that could overwrite or be read back as input.

    Raises
    ------
    ConfigError
        ``output_folder`` equals or is inside an input folder, or an input is inside
        ``output_folder`` (both compared with symlinks resolved).
    """
    given = [storage.normalise(s) for s in _as_list(sources)]  # file:// URLs are local paths
    output_folder = storage.normalise(output_folder)
    if storage.is_url(output_folder) or any(storage.is_url(s) for s in given):
        _check_url_location(given, output_folder)
        return
    out = _resolved(output_folder)
    for source in given:
        src = _resolved(source)
        if out == src or (src.is_dir() and out.is_relative_to(src)):
            raise ConfigError(
                f"output folder {os.fspath(output_folder)!r} is inside input {os.fspath(source)!r}; "
                "inputs are never modified: choose an output folder outside every input"
            )
        if src.is_relative_to(out):
            raise ConfigError(
                f"input {os.fspath(source)!r} is inside output folder {os.fspath(output_folder)!r}; "
                "choose an output folder that does not contain the inputs"
            )


def _check_url_location(sources: list[str], output_folder: str) -> None:
    """:func:`check_output_location` when URLs are involved (normalised URLs compared)."""
    for source in sources:
        if storage.inside(output_folder, source):
            raise ConfigError(
                f"output folder {output_folder!r} is inside input {source!r}; "
                "inputs are never modified: choose an output folder outside every input"
            )
        if storage.inside(source, output_folder):
            raise ConfigError(
                f"input {source!r} is inside output folder {output_folder!r}; "
                "choose an output folder that does not contain the inputs"
            )
