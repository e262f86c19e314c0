"""DICOM PS3.15 Annex E (Table E.1-1) as built-in recipes: the table as data, the recipe generator.

The table is checked in as ``deid_batch/data/ps3.15-table-e1-1.csv`` (edition and source in its
first lines). :func:`generate` turns it into the recipe files ``deid.ps3.15-basic`` and one
``deid.ps3.15-<option>`` per supported option, written in deid's recipe language plus our
``deid_func:`` built-ins (:mod:`deid_batch.recipe.keyed`), so a user can copy and edit them.
A test checks that the checked-in recipes equal the generated ones::

    python -m deid_batch.recipe.ps315 generate          # rewrite deid_batch/data/deid.ps3.15-*
    python -m deid_batch.recipe.ps315 generate --check  # exit 1 if a checked-in file differs
    python -m deid_batch.recipe.ps315 import-table confidentiality_profile_attributes.json

How each table action becomes recipe lines (the conservative reading of the compound actions,
which keeps Type 1 and Type 2 attributes present):

- ``X`` -> ``REMOVE``; ``Z`` and ``X/Z`` -> ``BLANK`` (present, zero length), but an ``X/Z``
  sequence is kept like a ``D`` one (empty, it is invalid where it is Type 3; removed, where it
  is Type 2);
- ``D``, ``X/D``, ``X/Z/D``, ``Z/D`` -> ``REPLACE`` with a dummy valid for the VR; a sequence
  stays, its items de-identified by the table at every depth, with the free text inside
  (TextValue, UnformattedTextValue) and the code values of an identifying code sequence
  replaced by dummies;
- ``U`` (and the ``U*`` of ``X/Z/U*`` sequences) -> ``REPLACE endswith:UID deid_func:keyed_uid``
  (plus the few UI attributes whose keyword does not end in UID): every UI value at any depth
  that is not a DICOM-defined UID gets a keyed UID (``select:VR:UI`` would say the same but
  reads every element, which turns off the batched REMOVE pass);
- curves (50xx groups) and overlays (60xx groups, as a whole: their Type 1 Overlay Data goes) are
  removed; private attributes are removed by the engine after the recipe (``remove_private``);
  standard attributes not in the table are kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR

from deid_batch.recipe.keyed import CID_7050, DUMMY

__all__ = ["OPTIONS", "Option", "Row", "generate", "load_table", "main", "recipe_text"]

DATA = Path(__file__).parent.parent / "data"
TABLE = DATA / "ps3.15-table-e1-1.csv"
#: Table E.3.10-1 Safe Private Attributes (edition and source in the file's first lines)
SAFE_PRIVATE = DATA / "ps3.15-table-e3-10-1.csv"
EDITION = "DICOM PS3.15 2024e"
SOURCE = ("innolitics/dicom-standard standard/confidentiality_profile_attributes.json at commit "
          "7f4749d09ed3ef2fa70637d376d423a4b13523cd (parsed from the 2024e web edition)")

#: CSV columns after tag/keyword/name: the table's own columns, in its order.
COLUMNS = ("std_comp_iod", "basic", "rtn_safe_priv", "rtn_uids", "rtn_dev_id", "rtn_inst_id",
           "rtn_pat_chars", "rtn_long_full_dates", "rtn_long_modif_dates", "clean_desc",
           "clean_struct_cont", "clean_graph")
_JSON_COLUMNS = ("stdCompIOD", "basicProfile", "rtnSafePrivOpt", "rtnUIDsOpt", "rtnDevIdOpt",
                 "rtnInstIdOpt", "rtnPatCharsOpt", "rtnLongFullDatesOpt", "rtnLongModifDatesOpt",
                 "cleanDescOpt", "cleanStructContOpt", "cleanGraphOpt")


@dataclass(frozen=True)
class Option:
    """One option of the profile that we ship as a built-in recipe."""

    name: str  # built-in recipe name
    column: str  # CSV column
    code: str  # CID 7050 code value
    meaning: str  # CID 7050 code meaning


BASIC = Option("ps3.15-basic", "basic", "113100", "Basic Application Confidentiality Profile")
OPTIONS: tuple[Option, ...] = (
    Option("ps3.15-retain-uids", "rtn_uids", "113110", "Retain UIDs Option"),
    Option("ps3.15-retain-device-identity", "rtn_dev_id", "113109", "Retain Device Identity Option"),
    Option("ps3.15-retain-institution-identity", "rtn_inst_id", "113112",
           "Retain Institution Identity Option"),
    Option("ps3.15-retain-patient-characteristics", "rtn_pat_chars", "113108",
           "Retain Patient Characteristics Option"),
    Option("ps3.15-retain-modified-dates", "rtn_long_modif_dates", "113107",
           "Retain Longitudinal Temporal Information Modified Dates Option"),
    Option("ps3.15-clean-descriptors", "clean_desc", "113105", "Clean Descriptors Option"),
    Option("ps3.15-retain-safe-private", "rtn_safe_priv", "113111", "Retain Safe Private Option"),
)
assert all(CID_7050[o.code] == o.meaning for o in (BASIC, *OPTIONS))


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1."""

    tag: str  # "(0008,0050)", "(50XX,XXXX)", "(GGGG,EEEE) WHERE GGGG IS ODD"
    keyword: str  # pydicom keyword ("" for repeating groups and private attributes)
    name: str
    actions: dict[str, str]  # column -> action ("" when the cell is empty)

    @property
    def vr(self) -> str:
        tag = _int_tag(self.tag)
        return dictionary_VR(tag) if tag is not None and dictionary_has_tag(tag) else ""


def _int_tag(text: str) -> int | None:
    digits = text.strip("()").replace(",", "")
    try:
        return int(digits, 16) if len(digits) == 8 else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------ the table
def import_table(json_path: str | Path, out: Path = TABLE) -> int:
    """Write the CSV from innolitics' ``confidentiality_profile_attributes.json``; returns rows."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    rows = []
    for entry in data:
        tag = str(entry["tag"])
        itag = _int_tag(tag)
        keyword = dictionary_keyword(itag) if itag is not None and dictionary_has_tag(itag) else ""
        rows.append([tag, keyword, str(entry["name"]), *(str(entry.get(c, "")) for c in _JSON_COLUMNS)])
    rows.sort(key=lambda r: r[0])
    with out.open("w", encoding="utf-8", newline="") as fh:
        fh.write(f"# {EDITION}, Table E.1-1 Application Level Confidentiality Profile Attributes\n")
        fh.write(f"# source: {SOURCE}; keywords from pydicom's dictionary\n")
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["tag", "keyword", "name", *COLUMNS])
        writer.writerows(rows)
    return len(rows)


def load_table(path: Path = TABLE) -> list[Row]:
    """The rows of the checked-in table (comment lines skipped), in tag order."""
    with path.open(encoding="utf-8", newline="") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines):
        rows.append(Row(rec["tag"], rec["keyword"], rec["name"], {c: rec[c] for c in COLUMNS}))
    return rows


@dataclass(frozen=True)
class SafePrivate:
    """One row of Table E.3.10-1: a private element by group, creator and low element byte."""

    group: str  # "0019"
    creator: str  # "GEMS_ACQU_01"
    element: str  # "23" (the xx23 of (0019,xx23))
    vr: str
    meaning: str

    @property
    def selector(self) -> str:
        """deid's private selector form: ``(0019,"GEMS_ACQU_01",23)``."""
        return f'({self.group},"{self.creator}",{self.element})'


def load_safe_private(path: Path = SAFE_PRIVATE) -> list[SafePrivate]:
    """The rows of the checked-in Table E.3.10-1 (comment lines skipped), in file order."""
    with path.open(encoding="utf-8", newline="") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    return [SafePrivate(r["group"], r["creator"], r["element"], r["vr"], r["meaning"])
            for r in csv.DictReader(lines)]


def safe_private_edition(path: Path = SAFE_PRIVATE) -> list[str]:
    """The comment lines naming the edition and source of Table E.3.10-1."""
    with path.open(encoding="utf-8") as fh:
        return [line[1:].strip() for line in fh if line.startswith("#")]


# ------------------------------------------------------------------------------ recipe lines
#: D actions handled by keyed pseudonyms rather than a fixed dummy
KEYED = {"PatientID": "deid_func:keyed_id", "PatientName": "deid_func:keyed_name"}
#: UI attributes (pydicom 3 dictionary) whose keyword does not end in "UID" (``endswith:UID``
#: misses them); class/syntax ones among them are left alone by ``keyed_uid``
UI_NOT_NAMED_UID = (
    "ReferencedSOPInstanceUIDInFile", "FailedSOPInstanceUIDList", "SOPInstanceUIDOfConcatenationSource",
    "RepositoryUniqueID", "HomeCommunityID", "ReferencedContentItem", "SelectorUIValue",
    "FindingsGroupUIDTrial", "ReferencedFindingsGroupUIDTrial", "ReferencedObservationUIDTrial",
    "ObservationSubjectUIDTrial",
)
#: attributes whose original values the clean-descriptors option removes from descriptions:
#: harvested once per file (``%values ps315_identifiers``) before any action runs
IDENTIFYING = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers",
    "IssuerOfPatientID", "AccessionNumber", "StudyID", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord",
    "RequestingPhysician", "StationName", "DeviceSerialNumber", "MilitaryRank",
    "MedicalRecordLocator", "AdmissionID", "RequestedProcedureID", "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
)
_TEXT_VRS = ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT")
_BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")


def resolve_basic(action: str) -> str:
    """The one action we perform for a basic-profile cell (the conservative choice)."""
    if action in ("X/Z/U*", "U"):
        return "U"
    if "D" in action.split("/"):
        return "D"
    if action == "X/Z":
        return "Z"
    return action


def _basic_lines(row: Row) -> list[str]:
    action = resolve_basic(row.actions["basic"])
    kw, vr = row.keyword, row.vr
    note = f"# {row.tag} {row.name}: {row.actions['basic']}"
    if not kw:
        return []  # repeating groups and private attributes: handled by the profile's own lines
    if action == "U" or vr == "UI":
        return []  # every UI value: the keyed_uid lines
    if kw in KEYED:
        return [f"REPLACE {kw} {KEYED[kw]}"]
    if action == "X":
        return [f"REMOVE {kw}"]
    if vr == "SQ" and row.actions["basic"] == "X/Z":
        # an empty sequence is invalid where it is Type 3, a removed one where it is Type 2:
        # kept, like a D sequence, with its items de-identified at every depth
        action = "D"
    if action == "Z":
        return [f"BLANK {kw}"]
    if action == "K":
        return [f"{note} -> kept"]
    if action != "D":
        raise ValueError(f"{row.tag}: unknown basic profile action {row.actions['basic']!r}")
    if vr == "SQ":
        if kw.endswith("CodeSequence"):
            return [f"REPLACE endswith:{kw}__CodeValue ANONYMOUS",
                    f"REPLACE endswith:{kw}__CodeMeaning ANONYMOUS",
                    f"REMOVE endswith:{kw}__LongCodeValue",
                    f"REMOVE endswith:{kw}__URNCodeValue"]
        return [f"{note} -> kept, its items de-identified at every depth (free text dummied)",
                f"REPLACE endswith:{kw}__TextValue ANONYMOUS",
                f"REPLACE endswith:{kw}__UnformattedTextValue ANONYMOUS"]
    if vr in _BINARY_VRS:
        return [f"REPLACE {kw} deid_func:dummy"]
    return [f"REPLACE {kw} {DUMMY[vr]}"]


def _header(title: str, lines: Iterable[str]) -> list[str]:
    return ["FORMAT dicom", "", f"# {title}", "#", *(f"# {line}" if line else "#" for line in lines),
            "#", "# GENERATED by `python -m deid_batch.recipe.ps315 generate` from",
            "# deid_batch/data/ps3.15-table-e1-1.csv: edit the generator, not this file",
            f"# (or copy it under another name). Table: {EDITION}, Table E.1-1.", ""]


def _basic_recipe(rows: Sequence[Row]) -> list[str]:
    out = _header(BASIC.meaning + f" ({BASIC.code}), PS3.15 Annex E", [
        "X remove; Z and X/Z blank (present, zero length); D, X/D, X/Z/D, Z/D a dummy valid for",
        "the VR (PatientID, PatientName: keyed per-patient pseudonyms); U and X/Z/U*: every UI",
        "value that is not a DICOM-defined UID gets a keyed UID (deid_func:keyed_uid); curves and",
        "overlays removed; private tags removed by the engine after the recipe; attributes not in",
        "the table kept. Options (--recipe ps3.15-basic --recipe ps3.15-<option>) replace the",
        "lines of the attributes they cover.",
    ])
    out += ["%values ps315_patient", "FIELD PatientID", "FIELD PatientName", "",
            "%values ps315_identifiers"]
    out += [f"FIELD {kw}" for kw in IDENTIFYING]
    by_action: dict[str, list[str]] = {"REMOVE": [], "BLANK": [], "REPLACE": [], "#": []}
    for row in rows:
        for line in _basic_lines(row):
            by_action[line.split(" ", 1)[0]].append(line)
    out += ["", "%header", "",
            "# Table E.1-1 lines grouped by action (each acts on its own attribute at every depth,",
            "# so the order does not change the result; grouped, the REMOVE lines run as one pass).",
            "", "# X: removed; curves (50xx) and overlays (60xx) as whole groups",
            *by_action["REMOVE"],
            *(f"REMOVE select:group:{g:04X}" for g in (*range(0x5000, 0x5020, 2),
                                                       *range(0x6000, 0x6020, 2))),
            "", "# Z (and X/Z): present, zero length", *by_action["BLANK"],
            "", "# D (and X/D, X/Z/D, Z/D): a dummy valid for the VR, or a keyed pseudonym",
            *by_action["REPLACE"],
            "", "# U (and X/Z/U*): every UI value at any depth, file meta included, gets a keyed UID,",
            "# except DICOM-defined UIDs (1.2.840.10008.*) and class, transfer syntax and coding",
            "# scheme UIDs; the UI attributes whose keyword does not end in UID are named",
            "REPLACE endswith:UID deid_func:keyed_uid",
            *(f"REPLACE {kw} deid_func:keyed_uid" for kw in UI_NOT_NAMED_UID),
            "", "# Sequences kept (their items de-identified at every depth)", *by_action["#"]]
    out += ["", "# What was done (CID 7050)", "ADD PatientIdentityRemoved YES",
            f"ADD DeidentificationMethod deid_func:deid_method code={BASIC.code}",
            f"ADD DeidentificationMethodCodeSequence deid_func:deid_method_code code={BASIC.code}"]
    return out


def _option_lines(option: Option, row: Row) -> list[str]:
    cell = row.actions[option.column]
    kw, vr = row.keyword, row.vr
    if not cell or not kw:
        return []
    if cell == "K":
        return [f"KEEP {kw}"]
    if cell != "C":
        raise ValueError(f"{row.tag}: unknown {option.column} action {cell!r}")
    if option.column == "rtn_long_modif_dates":
        if vr in ("DA", "DT"):
            return [f"JITTER {kw} deid_func:date_offset"]
        if vr == "TM":
            return [f"KEEP {kw}"]  # whole-day offsets leave the time of day unchanged
        return [f"# {row.tag} {row.name}: C ({vr}): not a date; basic profile action stays"]
    if vr in _TEXT_VRS:
        return [f"REPLACE {kw} deid_func:clean_descriptor"]
    return [f"# {row.tag} {row.name}: C ({vr}): not text; basic profile action stays"]


_OPTION_NOTES = {
    "rtn_uids": ["K: every UID kept (the basic profile's keyed_uid lines are replaced)."],
    "rtn_long_modif_dates": [
        "C: dates (DA, DT) shifted by a keyed per-patient offset of 1 to 3652 days back",
        "(deid_func:date_offset), so intervals within a patient survive; times (TM) kept.",
        "K for the attributes of the Full Dates option is not applied (dates are modified)."],
    "rtn_safe_priv": [
        "K: the safe private attributes of Table E.3.10-1 kept, each named by its creator:",
        'KEEP (gggg,"CREATOR",ee) keeps (gggg,xxee) wherever CREATOR reserved the block xx of',
        "group gggg, at every depth, through the removal of private tags (any recipe may use",
        "such lines); every other private attribute is still removed.", ""],
    "clean_desc": [
        "C: the text kept, every occurrence of this file's own identifying values (names and",
        "their components, IDs, dates, accession number, institution...) removed",
        "(deid_func:clean_descriptor, values harvested by %values ps315_identifiers)."],
}


def _option_recipe(option: Option, rows: Sequence[Row]) -> list[str]:
    notes = ["Refines ps3.15-basic: give it after --recipe ps3.15-basic. Its lines replace the",
             "basic profile's lines for the same attributes.", "",
             *_OPTION_NOTES.get(option.column, ["K: kept; C: text cleaned (deid_func:clean_descriptor)."])]
    out = _header(f"{option.meaning} ({option.code}), PS3.15 Annex E", notes)
    out += ["%header", ""]
    if option.column == "rtn_uids":
        out += ["KEEP endswith:UID", *(f"KEEP {kw}" for kw in UI_NOT_NAMED_UID)]
    if option.column == "rtn_safe_priv":
        out += [f"# {line}" for line in safe_private_edition()]
        for safe in load_safe_private():
            out += [f"# {safe.meaning}", f"KEEP {safe.selector}"]
    for row in rows:
        out += _option_lines(option, row)
    out += [""]
    if option.column == "rtn_long_modif_dates":
        out += ["ADD LongitudinalTemporalInformationModified MODIFIED"]
    out += [f"ADD DeidentificationMethod deid_func:deid_method code={option.code}",
            f"ADD DeidentificationMethodCodeSequence deid_func:deid_method_code code={option.code}"]
    return out


def recipe_text(name: str, rows: Sequence[Row] | None = None) -> str:
    """The generated text of the built-in recipe ``name`` (``ps3.15-basic`` or an option)."""
    table = list(rows) if rows is not None else load_table()
    if name == BASIC.name:
        lines = _basic_recipe(table)
    else:
        option = next((o for o in OPTIONS if o.name == name), None)
        if option is None:
            raise KeyError(name)
        lines = _option_recipe(option, table)
    return "\n".join(lines).rstrip("\n") + "\n"


def recipe_file(name: str) -> Path:
    return DATA / f"deid.{name}"


def generate(check: bool = False) -> list[str]:
    """Write (or, with ``check``, compare) every generated recipe; returns the names that differ."""
    rows = load_table()
    differ = []
    for name in (BASIC.name, *(o.name for o in OPTIONS)):
        text = recipe_text(name, rows)
        path = recipe_file(name)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            differ.append(name)
            if not check:
                path.write_text(text, encoding="utf-8")
    return differ


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deid_batch.recipe.ps315", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="write the ps3.15 recipes from the table")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    p = sub.add_parser("import-table", help="write the table CSV from innolitics' JSON")
    p.add_argument("json", help="confidentiality_profile_attributes.json")
    args = parser.parse_args(argv)
    if args.command == "import-table":
        print(f"{import_table(args.json)} rows -> {TABLE}")
        return 0
    differ = generate(check=args.check)
    verb = "differ" if args.check else "written"
    print(f"{verb}: {', '.join(differ) or 'none'}")
    return 1 if args.check and differ else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
