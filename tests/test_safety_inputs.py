"""Inputs are never modified (issue 4, part 4) and outputs appear atomically (part 3).

The input tree (contents, modes, mtimes, links) is checksummed before and after runs, including
``--overwrite`` and ``--resume`` runs; an output or manifest folder inside an input folder, or an
input inside the output folder, is refused before anything is written.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from deid_batch.api import run_apply
from deid_batch.dicom.writing import TMP_MARKER
from deid_batch.errors import ConfigError
from tests.hostile import make_dicom, make_hostile_archive, tree_digest

KEY_HEX = ("3c" * 32).encode()


def apply_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deid_batch", "apply", *args, "--workers", "0",
                           "--no-progress"], capture_output=True, text=True, timeout=180)


def test_inputs_are_unchanged_by_runs_including_overwrite(tmp_path: Path) -> None:
    make_hostile_archive(tmp_path / "in", good=5)
    (tmp_path / "key").write_bytes(KEY_HEX)
    before = tree_digest(tmp_path / "in")
    common = (str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--key-file", str(tmp_path / "key"))
    assert apply_cli(*common).returncode == 1
    first = tree_digest(tmp_path / "out")
    assert apply_cli(*common, "--overwrite").returncode == 1
    assert apply_cli(*common).returncode == 1  # outputs exist: written again identically, or 'exists'
    assert tree_digest(tmp_path / "in") == before
    after = tree_digest(tmp_path / "out")
    assert {k: v.split()[0] for k, v in after.items()} == {k: v.split()[0] for k, v in first.items()}


def test_every_output_is_a_complete_readable_dicom_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    make_hostile_archive(tmp_path / "in", good=5)
    report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"))
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert sorted(map(str, files)) == sorted(report.outputs)
    for p in files:
        assert TMP_MARKER not in p.name
        ds = pydicom.dcmread(p)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("where", ["same", "inside", "inside-via-symlink"])
def test_output_inside_an_input_is_refused_before_anything_is_written(tmp_path: Path, where: str) -> None:
    make_dicom(tmp_path / "in" / "a" / "IM.dcm")
    before = tree_digest(tmp_path / "in")
    out = {"same": tmp_path / "in", "inside": tmp_path / "in" / "a" / "deid"}.get(where)
    if where == "inside-via-symlink":
        (tmp_path / "alias").symlink_to(tmp_path / "in", target_is_directory=True)
        out = tmp_path / "alias" / "deid"
    with pytest.raises(ConfigError):
        run_apply(tmp_path / "in", output_folder=str(out))
    proc = apply_cli(str(tmp_path / "in"), "--out", str(out))
    assert proc.returncode == 2
    assert "inside" in proc.stderr
    assert tree_digest(tmp_path / "in") == before


def test_input_inside_the_output_is_refused(tmp_path: Path) -> None:
    make_dicom(tmp_path / "data" / "in" / "IM.dcm")
    before = tree_digest(tmp_path / "data")
    proc = apply_cli(str(tmp_path / "data" / "in"), "--out", str(tmp_path / "data"))
    assert proc.returncode == 2
    assert tree_digest(tmp_path / "data") == before


def test_manifest_folder_inside_an_input_is_refused(tmp_path: Path) -> None:
    """The manifest (and the generated key kept with it) must not be written into the inputs."""
    make_dicom(tmp_path / "in" / "IM.dcm")
    before = tree_digest(tmp_path / "in")
    proc = apply_cli(str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                     "--manifest", str(tmp_path / "in" / "manifest"))
    assert tree_digest(tmp_path / "in") == before, "the input tree was modified"
    assert proc.returncode == 2


def test_inputs_are_opened_read_only(tmp_path: Path, monkeypatch) -> None:
    """Every open of an input path asks for read access only."""
    import builtins

    from deid_batch.dicom import reading

    make_hostile_archive(tmp_path / "in", good=2)
    root = str(tmp_path / "in")
    seen: list[tuple[str, int]] = []
    real_os_open, real_open = os.open, builtins.open

    def spy_os_open(path, flags, *args, **kwargs):
        if str(path).startswith(root):
            seen.append((str(path), flags))
        return real_os_open(path, flags, *args, **kwargs)

    def spy_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(root):
            seen.append((os.fspath(file), -1 if any(c in mode for c in "wax+") else os.O_RDONLY))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(reading.os, "open", spy_os_open)
    run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"))
    assert seen
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    assert [p for p, flags in seen if flags == -1 or flags & write_flags] == []


def test_manifest_folder_inside_the_output_is_refused(tmp_path: Path) -> None:
    """OUTDIR is shared as is: the manifest and the run key must never be written into it."""
    make_dicom(tmp_path / "in" / "IM.dcm")
    proc = apply_cli(str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                     "--manifest", str(tmp_path / "out" / "manifest"))
    leaked = [p.name for p in (tmp_path / "out").rglob("*") if p.name in ("_key", "_run.json")]
    assert leaked == [], "the run key / manifest were written into the shared output folder"
    assert proc.returncode == 2


@pytest.mark.cluster
@pytest.mark.slow
def test_a_reader_watching_the_output_never_sees_a_partial_file(tmp_path: Path) -> None:
    """Atomic writes: every visible output name always holds a complete, readable DICOM file."""
    import threading

    for i in range(150):
        make_dicom(tmp_path / "in" / f"{i % 5}" / f"IM{i}.dcm", i)
    stop = threading.Event()
    seen: dict[str, int] = {}
    bad: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            for p in (tmp_path / "out").rglob("*.dcm") if (tmp_path / "out").exists() else ():
                if str(p) in seen:
                    continue
                try:
                    data = p.read_bytes()
                    pydicom.dcmread(io.BytesIO(data)).PixelData  # noqa: B018
                    seen[str(p)] = len(data)
                except FileNotFoundError:
                    continue
                except Exception as exc:  # noqa: BLE001
                    bad.append(f"{p.name}: {type(exc).__name__}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"), workers=2, partition=5)
    finally:
        stop.set()
        watcher.join()
    assert bad == []
    assert len(seen) > 0
    for path, size in seen.items():
        assert os.path.getsize(path) == size  # what the reader saw was already the final file
    assert report.exit_code == 0
