"""discover(): every entry listed once, deterministic, nothing followed that could loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deid_batch.errors import ConfigError
from deid_batch.stages.discover import check_output_location, discover
from tests.hostile import make_dicom, make_hostile_archive, permissions_enforced


def test_every_hostile_entry_is_listed_exactly_once(tmp_path: Path) -> None:
    expected = make_hostile_archive(tmp_path / "in")
    found = discover(tmp_path / "in")
    assert len(found) == len(set(found))
    assert sorted(found) == sorted(expected)


def test_order_is_deterministic_and_sorted_within_folders(tmp_path: Path) -> None:
    make_hostile_archive(tmp_path / "in")
    first = discover(str(tmp_path / "in"))
    assert first == discover(tmp_path / "in")
    files_of_root_good = [p for p in first if os.path.dirname(p) == str(tmp_path / "in" / "bad000")]
    assert files_of_root_good == sorted(files_of_root_good)


def test_paths_are_absolute_even_from_relative_sources(tmp_path: Path, monkeypatch) -> None:
    make_dicom(tmp_path / "in" / "a.dcm")
    monkeypatch.chdir(tmp_path)
    assert discover("in") == [str(tmp_path / "in" / "a.dcm")]


def test_symlinks_to_folders_are_listed_not_followed(tmp_path: Path) -> None:
    make_dicom(tmp_path / "in" / "real" / "a.dcm")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "in" / "real", target_is_directory=True)
    (tmp_path / "in" / "real" / "up").symlink_to(tmp_path / "in", target_is_directory=True)
    assert discover(tmp_path / "in") == [
        str(tmp_path / "in" / "link"),
        str(tmp_path / "in" / "real" / "a.dcm"),
        str(tmp_path / "in" / "real" / "up"),
    ]


def test_file_given_twice_or_also_inside_a_given_folder_is_listed_once(tmp_path: Path) -> None:
    a = make_dicom(tmp_path / "in" / "sub" / "a.dcm")
    b = make_dicom(tmp_path / "in" / "b.dcm", 1)
    found = discover([a, tmp_path / "in", str(a), b, tmp_path / "in" / "sub"])
    assert found == [str(a), str(b)]


def test_folder_reached_through_a_symlinked_source_is_walked_once(tmp_path: Path) -> None:
    a = make_dicom(tmp_path / "in" / "a.dcm")
    (tmp_path / "alias").symlink_to(tmp_path / "in", target_is_directory=True)
    assert discover([tmp_path / "in", tmp_path / "alias"]) == [str(a)]
    assert discover([tmp_path / "alias", tmp_path / "in"]) == [str(tmp_path / "alias" / "a.dcm")]


def test_missing_source_is_a_config_error_naming_it(tmp_path: Path) -> None:
    make_dicom(tmp_path / "in" / "a.dcm")
    with pytest.raises(ConfigError, match="nope-not-here"):
        discover([tmp_path / "in", tmp_path / "nope-not-here"])
    with pytest.raises(ConfigError):
        discover([])


def test_a_broken_symlink_given_as_source_is_listed(tmp_path: Path) -> None:
    (tmp_path / "broken").symlink_to(tmp_path / "missing")
    assert discover(tmp_path / "broken") == [str(tmp_path / "broken")]


def test_deep_folders_do_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    deep = tmp_path / "in"
    for k in range(60):  # path length, not Python recursion, is the limit here
        deep = deep / f"d{k % 10}"
    make_dicom(deep / "a.dcm")
    assert discover(tmp_path / "in") == [str(deep / "a.dcm")]


@pytest.mark.skipif(not permissions_enforced(), reason="chmod 000 does not deny listing here (root)")
def test_unlistable_folder_is_listed_itself(tmp_path: Path) -> None:
    locked = tmp_path / "in" / "locked"
    make_dicom(locked / "a.dcm")
    locked.chmod(0)
    try:
        assert discover(tmp_path / "in") == [str(locked)]
    finally:
        locked.chmod(0o755)


def test_output_inside_or_equal_to_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError, match="inside input"):
        check_output_location(tmp_path / "in", tmp_path / "in")
    with pytest.raises(ConfigError, match="inside input"):
        check_output_location([tmp_path / "in"], tmp_path / "in" / "out")
    (tmp_path / "alias").symlink_to(tmp_path / "in", target_is_directory=True)
    with pytest.raises(ConfigError, match="inside input"):
        check_output_location([tmp_path / "alias"], tmp_path / "in" / "deeper" / "out")


def test_input_inside_output_is_refused(tmp_path: Path) -> None:
    make_dicom(tmp_path / "out" / "in" / "a.dcm")
    with pytest.raises(ConfigError, match="inside output"):
        check_output_location(tmp_path / "out" / "in", tmp_path / "out")
    with pytest.raises(ConfigError, match="inside output"):
        check_output_location(tmp_path / "out" / "in" / "a.dcm", tmp_path / "out")


def test_a_manifest_folder_overlapping_an_input_is_refused_in_the_same_pass(tmp_path: Path) -> None:
    """One pass over a file list checks the output and the manifest folder: each is refused
    for what it overlaps, with its own message; a file list through a symlinked folder too."""
    files = [tmp_path / "in" / f"{i}.dcm" for i in range(3)]
    for f in files:
        make_dicom(f)
    (tmp_path / "alias").symlink_to(tmp_path / "in", target_is_directory=True)
    listed = [tmp_path / "alias" / f.name for f in files]
    check_output_location(listed, tmp_path / "out", tmp_path / "out.manifest")
    with pytest.raises(ConfigError, match="manifest folder .* is inside an input folder"):
        check_output_location([tmp_path / "alias"], tmp_path / "out", tmp_path / "in" / "m")
    check_output_location(listed, tmp_path / "out", tmp_path / "in" / "m")  # beside listed files
    with pytest.raises(ConfigError, match="manifest folder"):  # an input inside the manifest folder
        check_output_location(listed, tmp_path / "out", tmp_path)
    with pytest.raises(ConfigError, match="inside output"):  # the output is checked first
        check_output_location(listed, tmp_path, tmp_path / "in" / "m")


def test_sibling_output_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    check_output_location([tmp_path / "in"], tmp_path / "in-out")  # a prefix, not a parent
    check_output_location([tmp_path / "in"], tmp_path / "out")


def test_the_cached_resolver_resolves_every_path_as_realpath_does(tmp_path: Path, monkeypatch) -> None:
    from deid_batch.stages.discover import _Resolver

    (tmp_path / "in" / "a" / "b").mkdir(parents=True)
    (tmp_path / "in" / "a" / "b" / "f.dcm").write_bytes(b"x")
    (tmp_path / "in" / "alias").symlink_to(tmp_path / "in" / "a", target_is_directory=True)
    (tmp_path / "in" / "a" / "b" / "to_out.dcm").symlink_to(tmp_path / "out" / "x.dcm")
    (tmp_path / "in" / "a" / "b" / "rel").symlink_to("f.dcm")
    (tmp_path / "in" / "a" / "b" / "broken").symlink_to(tmp_path / "missing")
    (tmp_path / "in" / "a" / "b" / "chain").symlink_to(tmp_path / "in" / "alias" / "b" / "rel")
    (tmp_path / "far" / "deep").mkdir(parents=True)
    (tmp_path / "far" / "f.dcm").write_bytes(b"x")
    (tmp_path / "in" / "away").symlink_to(tmp_path / "far" / "deep", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "in" / "a")
    paths = [tmp_path / "in" / "alias" / "b" / "f.dcm", tmp_path / "in" / "a" / "b" / "to_out.dcm",
             tmp_path / "in" / "alias" / "b" / "rel", tmp_path / "in" / "a" / "b" / "broken",
             tmp_path / "in" / "a" / "b" / "chain", tmp_path / "in" / "alias" / ".." / "a" / "b",
             "b/f.dcm", "./b/../b/rel", "../alias", "/", tmp_path / "nowhere" / "x",
             tmp_path / "in" / "away" / ".." / "f.dcm"]  # realpath: the symlink before the ".."
    resolve = _Resolver()
    for path in paths + paths:  # the second time from the cache
        assert str(resolve(path)) == os.path.realpath(path), path
    with pytest.raises(ConfigError, match="inside output folder"):
        check_output_location([tmp_path / "in" / "a" / "b" / "to_out.dcm"], tmp_path / "out")
