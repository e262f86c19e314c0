"""Linkage files for the data steward (MIDI-B's): ``uid_mapping.csv`` and ``patid_mapping.csv``.

Written in the manifest folder (never in OUTDIR), columns ``id_old,id_new``, one row per
distinct pair, sorted; local files are 0600 in the 0700 manifest folder (like the run key and
the manifest itself): they re-identify every output, keep them under your governance.

- ``uid_mapping.csv``: every UID of each written output's top level and file meta whose value
  the recipe changed (SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID,
  FrameOfReferenceUID, MediaStorageSOPInstanceUID, ...; class, transfer syntax and other
  DICOM-defined UIDs are never listed). A reference deeper in a file is the UID of the instance
  it points to, so it is in the file of that instance.
- ``patid_mapping.csv``: the original PatientID of each written output and the one it has now.

Flow: the apply worker notes these values of each file before the recipe (:func:`snapshot`,
raw elements only: nothing is converted) and pairs them with the output's (:func:`pairs`);
each partition task writes its pairs to ``_linkage-PPPPPP-<digest of its files>.csv`` in the
manifest folder (:func:`write_part`; a retried partition overwrites its own part, a partition
re-run file by file writes one part per file), and the client consolidates the parts at the end
of the run (:func:`consolidate`) into the two files, each pair once, so a resumed or retried run
gives the same files. A new (not resumed) run first removes an earlier run's parts (:func:`reset`).

When: on by default for a recipe that makes keyed pseudonyms (``deid_func:keyed_uid``,
``keyed_id``, ``keyed_name``: the PS3.15 built-ins), where these files are the only way back for
the steward; ``--linkage`` asks for them with any recipe, ``--no-linkage`` turns them off.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_batch.recipe.keyed import DICOM_ROOT, WELL_KNOWN_UID_KEYWORDS
from deid_batch.recipe.model import Recipe
from deid_batch.stages import storage

__all__ = ["PATID_FILE", "UID_FILE", "consolidate", "pairs", "reset", "snapshot", "wanted",
           "write_part"]

UID_FILE = "uid_mapping.csv"
PATID_FILE = "patid_mapping.csv"
PART_PREFIX = "_linkage-"
_KEYED = ("deid_func:keyed_uid", "deid_func:keyed_id", "deid_func:keyed_name")
_PATIENT_ID = 0x00100020

#: (is_file_meta, tag) -> the values of that element (text, split on backslash)
Snapshot = dict[tuple[bool, int], list[str]]
Pairs = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def wanted(recipe: Recipe, linkage: bool | None) -> bool:
    """Write the linkage files? ``linkage`` when given, else: does the recipe make keyed values."""
    if linkage is not None:
        return linkage
    return any(a.value is not None and a.value.startswith(_KEYED) for a in recipe.header)


def _uid_tag(tag: int) -> bool:
    if tag >> 16 & 1:
        return False
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return False
    return vr == "UI" and keyword_for_tag(tag) not in WELL_KNOWN_UID_KEYWORDS


def _text(element: Any) -> list[str]:
    if isinstance(element, RawDataElement):
        raw = element.value
        if raw is None:
            return []
        text = bytes(raw).decode("ascii", "replace")
        values = text.split("\\")
    else:
        value = element.value
        if value is None:
            return []
        values = [str(v) for v in value] if isinstance(value, (list, tuple, MultiValue)) \
            else [str(value)]
    return [v.strip("\0 ") for v in values]


def snapshot(ds: Dataset) -> Snapshot:
    """The top-level and file-meta UIDs and the PatientID of ``ds`` (read raw, nothing converted)."""
    found: Snapshot = {}
    meta = getattr(ds, "file_meta", None)
    for is_meta, container in ((False, ds), (True, meta)):
        if container is None:
            continue
        for tag in container.keys():
            itag = int(tag)
            if itag == _PATIENT_ID or _uid_tag(itag):
                values = _text(container.get_item(tag))
                if any(values):
                    found[(is_meta, itag)] = values
    return found


def pairs(before: Snapshot, ds: Dataset) -> Pairs:
    """(UID pairs, PatientID pairs) of one output: the values of ``before`` and what they are now."""
    after = snapshot(ds)
    uids: dict[tuple[str, str], None] = {}
    patids: dict[tuple[str, str], None] = {}
    for key, old_values in before.items():
        new_values = after.get(key)
        if not new_values or len(new_values) != len(old_values):
            continue
        for old, new in zip(old_values, new_values):
            if not old or not new:
                continue
            if key[1] == _PATIENT_ID:
                patids.setdefault((old, new), None)
            elif old != new and not old.startswith(DICOM_ROOT):
                uids.setdefault((old, new), None)
    return list(uids), list(patids)


def _part_name(partition: int, sources: Sequence[str]) -> str:
    digest = hashlib.sha256("\0".join(sources).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{PART_PREFIX}{partition:06d}-{digest}.csv"


def write_part(folder: str, options: storage.StorageOptions | None, partition: int,
               sources: Sequence[str], found: Iterable[Pairs]) -> None:
    """Write one task's pairs (``kind,id_old,id_new``) to its part file in the manifest folder."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["kind", "id_old", "id_new"])
    for uid_pairs, patid_pairs in found:
        writer.writerows(("uid", old, new) for old, new in uid_pairs)
        writer.writerows(("patid", old, new) for old, new in patid_pairs)
    storage.Folder(folder, options).write_bytes(_part_name(partition, sources),
                                                buf.getvalue().encode("utf-8"))


def _parts(store: storage.Folder) -> list[str]:
    return sorted(n for n in store.names() if n.startswith(PART_PREFIX) and n.endswith(".csv"))


def reset(folder: str, options: storage.StorageOptions | None = None) -> None:
    """Remove an earlier run's parts and linkage files (a new run starts from none)."""
    store = storage.Folder(folder, options)
    for name in [*_parts(store), *(n for n in (UID_FILE, PATID_FILE) if store.exists(n))]:
        store.remove(name)


def consolidate(folder: str, options: storage.StorageOptions | None = None) -> tuple[int, int]:
    """Write ``uid_mapping.csv`` and ``patid_mapping.csv`` from the parts; returns their rows."""
    store = storage.Folder(folder, options)
    found: dict[str, set[tuple[str, str]]] = {"uid": set(), "patid": set()}
    for name in _parts(store):
        reader = csv.DictReader(io.StringIO(store.read_bytes(name).decode("utf-8")))
        for row in reader:
            found[row["kind"]].add((row["id_old"], row["id_new"]))
    for kind, name in (("uid", UID_FILE), ("patid", PATID_FILE)):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id_old", "id_new"])
        writer.writerows(sorted(found[kind]))
        store.write_bytes(name, buf.getvalue().encode("utf-8"))
    return len(found["uid"]), len(found["patid"])
