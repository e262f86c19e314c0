"""Bad inputs never stop a run and are never lost (issue 4, part 1).

A hostile archive - every kind of bad entry mixed into good files - runs to the end with exit 1,
the manifest has exactly one row per input with the expected status and reason code, the summary
counts failures by reason, and the good files' outputs are byte-identical to a run without the
bad ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deid_batch.api import run_apply
from deid_batch.dicom.writing import TMP_MARKER
from deid_batch.schemas import Reason, Status
from tests.hostile import UNWRITABLE_REASONS, make_dicom, make_hostile_archive, manifest_rows

KEY = b"k" * 32


@pytest.fixture()
def key_file(tmp_path: Path) -> str:
    p = tmp_path / "run.key"
    p.write_bytes(KEY.hex().encode())
    return str(p)


def expected_matches(rows, expected) -> list[str]:
    """Mismatches between manifest rows and the archive's expectations (empty when all match)."""
    problems = []
    for source, output, status, code, _ in rows:
        want_status, want_reason = expected[source]
        if want_reason is Reason.WRITE_ERROR:  # conversion or write failure, either code
            ok = status == Status.FAILED.value and code in {r.value for r in UNWRITABLE_REASONS}
        else:
            ok = (status, code) == (want_status.value, want_reason.value if want_reason else None)
        if not ok:
            problems.append(f"{os.path.basename(source)}: got {status}/{code}, "
                            f"want {want_status.value}/{want_reason.value if want_reason else None}")
        if status == Status.WRITTEN.value and output is None:
            problems.append(f"{source}: written without an output path")
    return problems


def test_hostile_archive_every_input_one_row_expected_reason(tmp_path: Path, key_file: str) -> None:
    expected = make_hostile_archive(tmp_path / "in", good=6)
    report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"), key_file=key_file)
    rows = manifest_rows(report.manifest, str(tmp_path / "out"))
    assert [r[0] for r in rows] == sorted(expected)  # exactly one row per input, no extra
    assert expected_matches(rows, expected) == []
    assert report.exit_code == 1
    failed = Counter(code for _, _, status, code, _ in rows if status != Status.WRITTEN.value)
    assert +report.summary.by_reason == +failed
    written = [r for r in rows if r[2] == Status.WRITTEN.value]
    assert len(report.outputs) == len(written)
    assert not [p for p in Path(tmp_path / "out").rglob("*") if TMP_MARKER in p.name]


def test_good_outputs_are_identical_with_or_without_the_bad_files(tmp_path: Path, key_file: str) -> None:
    expected = make_hostile_archive(tmp_path / "in", good=6)
    mixed = run_apply(tmp_path / "in", output_folder=str(tmp_path / "mixed"), key_file=key_file)
    good = [p for p, (s, _) in expected.items() if s is Status.WRITTEN]
    alone = run_apply(good, output_folder=str(tmp_path / "alone"), key_file=key_file)
    assert alone.exit_code == 0
    mixed_rows = {r[0]: r for r in manifest_rows(mixed.manifest, str(tmp_path / "mixed"))}
    alone_rows = {r[0]: r for r in manifest_rows(alone.manifest, str(tmp_path / "alone"))}
    assert set(alone_rows) == set(good)
    for source in good:
        assert mixed_rows[source][1:] == alone_rows[source][1:], os.path.basename(source)
        rel = alone_rows[source][1]
        assert (tmp_path / "mixed" / rel).read_bytes() == (tmp_path / "alone" / rel).read_bytes()


def test_cli_hostile_archive_exits_1_and_summarises_failures_by_reason(tmp_path: Path, key_file: str) -> None:
    make_hostile_archive(tmp_path / "in", good=3)
    proc = subprocess.run(
        [sys.executable, "-m", "deid_batch", "apply", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
         "--workers", "0", "--key-file", key_file, "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    for code in ("truncated", "not-dicom", "empty", "dicomdir", "not-regular"):
        assert code in text, code
    assert "Traceback" not in text


@pytest.mark.slow
@pytest.mark.cluster
def test_thousand_file_hostile_archive_on_a_cluster(tmp_path: Path, key_file: str) -> None:
    """Issue 4 done-when: every hostile kind mixed into 1,000 good files (a synthetic PACS export,
    repeated basenames), on 2 worker processes: exit 1, one row per input with the expected reason,
    and every good output byte-identical to a run over the good files alone."""
    from deid_batch.synth import generate_archive

    good = [str(p) for p in generate_archive(tmp_path / "in" / "export", 1000, seed=11)]
    expected = make_hostile_archive(tmp_path / "in" / "junk", good=0, copies=2)
    expected.update({p: (Status.WRITTEN, None) for p in good})
    report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"), key_file=key_file,
                       workers=2)
    rows = manifest_rows(report.manifest, str(tmp_path / "out"))
    assert [r[0] for r in rows] == sorted(expected)
    assert expected_matches(rows, expected) == []
    assert report.exit_code == 1
    alone = run_apply(good, output_folder=str(tmp_path / "alone"), key_file=key_file, workers=2)
    assert alone.exit_code == 0
    mixed_out = {r[0]: r[1] for r in rows}
    for r in manifest_rows(alone.manifest, str(tmp_path / "alone")):
        assert mixed_out[r[0]] == r[1]
        assert (tmp_path / "out" / r[1]).read_bytes() == (tmp_path / "alone" / r[1]).read_bytes()


def test_scan_accounts_for_every_hostile_input_without_crashing(tmp_path: Path) -> None:
    """`deid-batch scan`: one identifiers row per readable file, one error row per other entry."""
    import pyarrow.parquet as pq

    expected = make_hostile_archive(tmp_path / "in", good=3)
    proc = subprocess.run(
        [sys.executable, "-m", "deid_batch", "scan", str(tmp_path / "in"), "--ids",
         str(tmp_path / "ids.parquet"), "--workers", "0", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert proc.returncode in (0, 1)
    ids = pq.read_table(tmp_path / "ids.parquet").column("source").to_pylist()
    errors = pq.read_table(tmp_path / "ids.errors.parquet").column("source").to_pylist()
    assert sorted(ids + errors) == sorted(expected)
    assert not set(ids) & set(errors)


def test_get_identifiers_survives_unconvertible_and_too_deep_files(tmp_path: Path) -> None:
    """Files that read but whose elements cannot be converted, or nest 1000 levels with defined
    lengths (lazy until flattened), become error rows instead of stopping the scan."""
    import struct

    from deid_batch import get_identifiers
    from tests.hostile import _unwritable, pixel_data_offset_bytes

    (tmp_path / "in").mkdir()
    _unwritable(tmp_path / "in" / "zz.dcm")
    data = make_dicom(tmp_path / "in" / "deep.dcm", 1).read_bytes()
    inner = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 4) + b"LEAF"
    for _ in range(1000):  # defined lengths: pydicom reads it lazily, flattening recurses
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
        inner = struct.pack("<HH2s2xL", 0x0040, 0xA730, b"SQ", len(item)) + item
    at = pixel_data_offset_bytes(data)
    (tmp_path / "in" / "deep.dcm").write_bytes(data[:at] + inner + data[at:])
    make_dicom(tmp_path / "in" / "ok.dcm", 2)
    table, errors = get_identifiers(tmp_path / "in", return_errors=True)
    assert table.column("source").to_pylist() == [str(tmp_path / "in" / "ok.dcm")]
    assert sorted(errors.column("source").to_pylist()) == [
        str(tmp_path / "in" / "deep.dcm"), str(tmp_path / "in" / "zz.dcm")]


def test_a_kept_value_is_never_silently_altered_by_the_writer(tmp_path: Path) -> None:
    """A value pydicom cannot write back as it is must give a write-error row, not a changed value.

    Here a kept text element (WindowCenterWidthExplanation, kept by the default recipe) holds
    non-ASCII text in UTF-8; if SpecificCharacterSet is removed, pydicom encodes the text in the
    default repertoire and replaces what it cannot encode with '?', silently.
    """
    import pydicom

    from tests.hostile import build_dataset

    ds = build_dataset(5)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.WindowCenterWidthExplanation = "Fenêtre 中文"
    make_dicom(tmp_path / "in" / "utf8.dcm", dataset=ds)
    report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"))
    (_, output, status, code, _), = manifest_rows(report.manifest)
    if status == Status.WRITTEN.value:
        assert pydicom.dcmread(output).WindowCenterWidthExplanation == "Fenêtre 中文"
    else:
        assert (status, code) == (Status.FAILED.value, Reason.WRITE_ERROR.value)


def test_an_input_given_twice_or_reachable_twice_gets_one_row(tmp_path: Path, key_file: str) -> None:
    a = make_dicom(tmp_path / "in" / "sub" / "a.dcm", 1)
    make_dicom(tmp_path / "in" / "b.dcm", 2)
    (tmp_path / "alias").symlink_to(tmp_path / "in", target_is_directory=True)
    report = run_apply([a, str(a), tmp_path / "in", tmp_path / "alias", tmp_path / "in" / "sub"],
                       output_folder=str(tmp_path / "out"), key_file=key_file)
    rows = manifest_rows(report.manifest)
    assert [r[0] for r in rows] == sorted([str(a), str(tmp_path / "in" / "b.dcm")])
    assert report.exit_code == 0


def test_a_file_the_process_may_not_read_is_unreadable_and_the_run_goes_on(
        tmp_path: Path, key_file: str, monkeypatch) -> None:
    """chmod 000 does not stop root, so the permission error is injected at open (in-process)."""
    locked = make_dicom(tmp_path / "in" / "locked.dcm", 1)
    make_dicom(tmp_path / "in" / "ok.dcm", 2)
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"), key_file=key_file)
    rows = {r[0]: r for r in manifest_rows(report.manifest)}
    assert rows[str(locked)][2:4] == ("failed", "unreadable")
    assert rows[str(tmp_path / "in" / "ok.dcm")][2] == "written"
    assert report.exit_code == 1
