"""The diff itself: ``diff_files`` sees every kind of difference the suite relies on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from .harness import Difference, diff_files


def test_a_file_equals_itself(generated_file: Callable[..., Path]) -> None:
    path = generated_file()
    assert diff_files(path, path) == []


def test_two_builds_of_the_generated_file_are_identical(
    generated_file: Callable[..., Path],
) -> None:
    assert diff_files(generated_file(), generated_file()) == []


def test_a_nested_value_change_is_reported_with_its_tag_path(
    generated_file: Callable[..., Path],
) -> None:
    def edit(ds: Dataset) -> None:
        deepest = ds.RequestAttributesSequence[0].RequestedProcedureCodeSequence[0]
        deepest.EquivalentCodeSequence[1].CodeValue = "CHANGED"

    diffs = diff_files(generated_file(), generated_file(edit))
    assert diffs == [
        Difference("(0040,0275)[0]/(0032,1064)[0]/(0008,0121)[1]/(0008,0100)", "value",
                   "'EQ1'", "'CHANGED'")
    ]


def test_a_removed_sequence_is_reported_once_not_per_descendant(
    generated_file: Callable[..., Path],
) -> None:
    edited = generated_file(lambda ds: delattr(ds, "RequestAttributesSequence"))
    diffs = diff_files(generated_file(), edited)
    assert diffs == [Difference("(0040,0275)", "only-in-a", "1 item(s)", "")]


def test_item_counts_vr_file_meta_and_preamble_are_compared(
    generated_file: Callable[..., Path],
) -> None:
    def edit(ds: Dataset) -> None:
        ds.ReferencedImageSequence = ds.ReferencedImageSequence[:1]
        ds["PatientAge"].VR = "LO"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        ds.preamble = b"\x00" * 128
        ds.add_new(0x00091020, "LO", "EXTRA")

    kinds = {(d.path, d.kind) for d in diff_files(generated_file(), generated_file(edit))}
    assert kinds == {
        ("(0008,1140)", "items"),
        ("(0008,1140)[1]/(0008,1150)", "only-in-a"),
        ("(0008,1140)[1]/(0008,1155)", "only-in-a"),
        ("(0010,1010)", "vr"),
        ("file_meta/(0002,0003)", "value"),
        ("preamble", "preamble"),
        ("(0009,1020)", "only-in-b"),
    }


def test_the_same_number_written_differently_is_a_difference(
    generated_file: Callable[..., Path],
) -> None:
    """Raw value bytes are compared, so DS '72.5' and '72.50' differ although equal as floats."""

    def edit(ds: Dataset) -> None:
        ds.PatientWeight = "72.50"

    assert [d.kind for d in diff_files(generated_file(), generated_file(edit))] == ["value"]
