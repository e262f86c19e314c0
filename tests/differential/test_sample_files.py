"""deid-data's sample files with the recipes of deid's own test suite (spec section 8): the
per-VR actions on ctbrain1's elements (its private group 0011 holds the exotic VRs), expanders,
groups, private-creator selectors, nested private sequences and file meta on cat."""

from __future__ import annotations

from collections.abc import Callable

import pydicom
import pytest

from .conftest import Comparison, assert_same_output
from .harness import SAMPLES, Case

REPLACEMENT = {
    "AE": "NEWAE", "AS": "030Y", "AT": "00110077", "CS": "NEWCS", "DA": "19990101",
    "DS": "1.25", "DT": "20200101120000", "FD": "1.3", "FL": "2.5", "IS": "42", "LO": "NEWLO",
    "LT": "NEW LT", "OB": "x0000000001", "OD": "abcdefgh", "OF": "abcd", "OL": "abcd",
    "OV": "abcdefgh", "OW": "ab", "PN": "NEW^NAME", "SH": "NEWSH", "SL": "-7", "SS": "-3",
    "ST": "NEW ST", "SV": "-9", "TM": "120000", "UC": "NEW UC", "UI": "1.2.3.4.5", "UL": "77",
    "UN": "unvalue", "UR": "http://example.org/x", "US": "9", "UT": "NEW UT", "UV": "99",
}


def first_element_of_each_vr(name: str) -> dict[str, str]:
    """VR -> bare tag (``GGGGEEEE``) of the first top-level element of that VR in a sample."""
    found: dict[str, str] = {}
    for elem in pydicom.dcmread(SAMPLES[name], stop_before_pixels=True):
        if elem.VR not in found and elem.keyword != "SpecificCharacterSet":
            found[str(elem.VR)] = f"{elem.tag:08X}"
    return found


CTBRAIN1_BY_VR = first_element_of_each_vr("ctbrain1")
PER_VR = [
    Case(f"{action.lower()}-{vr}-{tag}", f"{action} {tag}"
         + (f" {REPLACEMENT[vr]}" if action == "REPLACE" else ""), source="ctbrain1")
    for vr, tag in sorted(CTBRAIN1_BY_VR.items())
    for action in ("BLANK", "REMOVE", "REPLACE")
    if not (action == "REPLACE" and vr == "SQ")
]

CSA = '"SIEMENS CSA HEADER"'
MEDCOM = '"SIEMENS MEDCOM HEADER"'
UPSTREAM = [
    Case("expanders", "REMOVE contains:Collimation\nREMOVE endswith:Diameter\n"
         "REMOVE startswith:Exposure", source="ctbrain1"),
    Case("expander-except-no-skip", "REMOVE except:Manufacturer", source="ctbrain1",
         disable_skip=True),
    Case("tag-expander-group", "REMOVE contains:0009", source="ctbrain1"),
    Case("tag-expander-mid-tag", "REMOVE contains:8103", source="ctbrain1"),
    Case("tag-expander-element-no-skip", "REMOVE contains:0010", source="ctbrain1",
         disable_skip=True),
    Case("replace-constant-and-private", "REPLACE AccessionNumber 987654321\n"
         "REPLACE 00190010 NEWVALUE!", source="ctbrain1"),
    Case("remove-standard-and-private", "REMOVE InstitutionName\nREMOVE 00190010",
         source="ctbrain1"),
    Case("fieldset-remove", """
        FORMAT dicom
        %fields instance_fields
        FIELD Manufacturer
        FIELD contains:Collimation
        %header
        REMOVE fields:instance_fields
        """, source="ctbrain1"),
    Case("valueset-remove", """
        FORMAT dicom
        %values cookie_names
        FIELD contains:Manufacturer
        SPLIT contains:Physician by="^";minlength=3
        %header
        REMOVE values:cookie_names
        """, source="ctbrain1"),
    Case("fieldset-remove-private", """
        FORMAT dicom
        %fields instance_fields
        FIELD 00090010
        FIELD PatientID
        %header
        REMOVE fields:instance_fields
        """, source="ctbrain1"),
    Case("valueset-private", """
        FORMAT dicom
        %values cookie_names
        FIELD 00311020
        SPLIT 00090010 by=" ";minlength=4
        %header
        REMOVE values:cookie_names
        """, source="ctbrain1"),
    Case("valueset-one-empty", """
        FORMAT dicom
        %values cookie_names
        FIELD ConversionType
        FIELD Manufacturer
        %header
        REMOVE values:cookie_names
        """, source="ctbrain1"),
    Case("jitter-values", """
        FORMAT dicom
        %values dates
        FIELD StudyDate
        %header
        JITTER values:dates 1
        """, source="ctbrain1"),
    Case("jitter-private-tag", "JITTER 00291019 1", source="ctbrain1"),
    Case("jitter-timestamp", "JITTER AcquisitionDateTime 1", source="ctbrain1"),
    Case("jitter-replace-compounding", "JITTER AcquisitionDate 1\n"
         "REPLACE AcquisitionDate 20210330", source="ctbrain1"),
    Case("private-creator-replace-then-jitter", f"REPLACE (0029,{CSA},21) 20221128\n"
         f"JITTER (0029,{CSA},21) 5", source="ctbrain1"),
    Case("private-creator-replace-then-blank", f"REPLACE (0029,{CSA},21) 20221128\n"
         f"BLANK (0029,{CSA},21)", source="ctbrain1"),
    Case("private-creator-replace-shields-from-remove", f"REPLACE (0029,{CSA},21) 20221128\n"
         f"REMOVE (0029,{CSA},21)", source="ctbrain1"),
    Case("private-creator-nested", f"REPLACE (0029,{MEDCOM},41) NESTED", source="ctbrain2"),
    Case("private-creator-nested-bare-tag", "REMOVE 00291041", source="ctbrain2"),
    Case("keep-remove-private-creator-form",
         'KEEP (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)\n'
         'REMOVE (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)', source="ctbrain1", changes=False),
    Case("remove-nested-uid", "REMOVE (0018,9346)__0__(0008,0104)", source="ctbrain1"),
    Case("remove-parent-replace-child", "REMOVE (0032,1064)\nREPLACE (0008,0104) Anonymized",
         source="ctbrain1"),
    Case("blank-parent-replace-child", 'BLANK (0032,1064)\nREPLACE (0008,0104) "Anonymized"',
         source="ctbrain1"),
    Case("remove-all-keep-add", "REMOVE ALL\nKEEP StudyDate\nADD PatientIdentityRemoved Yes",
         source="ctbrain1"),
    Case("remove-except-keep-add", "REMOVE except:Manufacturer\nKEEP StudyDate\n"
         "ADD PatientIdentityRemoved Yes", source="ctbrain1"),
    Case("remove-all-blank", "REMOVE ALL\nADD PatientIdentityRemoved Yes\nBLANK StudyDate",
         source="ctbrain1"),
    Case("file-meta-replace", "REPLACE MediaStorageSOPInstanceUID 1.2.3.4.5.4.3.2.1",
         source="cat"),
    Case("file-meta-protected", "REPLACE TransferSyntaxUID 1.2.3.4.5.4.3.2.1", source="cat",
         changes=False),
    Case("file-meta-unprotected", "REPLACE ImplementationClassUID 1.2.3.4.5.4.3.2.1",
         source="cat", disable_skip=True),
    Case("cat-private-groups", "REMOVE contains:0019\nBLANK select:group:0011", source="cat"),
    Case("cat-select-time", "REMOVE select:VR:TM\nREMOVE select:group:0020", source="cat"),
    Case("cookie-remove-all", "REMOVE ALL", source="cookie3"),
    Case("cat-remove-all-no-skip", "REMOVE ALL", source="cat", disable_skip=True),
    Case("ctbrain2-remove-all", "REMOVE ALL", source="ctbrain2"),
    Case("ctbrain2-blank-all", "BLANK ALL", source="ctbrain2"),
    Case("cookie-remove-all-no-skip", "REMOVE ALL", source="cookie4", disable_skip=True),
    Case("cookie-groups", """
        FORMAT dicom
        %values cookie_names
        SPLIT PatientName by="^";minlength=4
        %fields instance_fields
        FIELD contains:Instance
        %header
        REPLACE PatientID var:id
        REPLACE OperatorsName var:source_id
        REMOVE values:cookie_names
        REMOVE fields:instance_fields
        """, source="cookie1", variables={"id": "new-cookie-id", "source_id": "new-operator-id"}),
]


@pytest.mark.parametrize("case", PER_VR, ids=str)
def test_each_vr_of_ctbrain1_is_handled_like_deid(
    case: Case, run_case: Callable[[Case], Comparison]
) -> None:
    assert_same_output(run_case(case), case)


@pytest.mark.parametrize("case", UPSTREAM, ids=str)
def test_upstream_recipes_on_sample_files_match_deid(
    case: Case, run_case: Callable[[Case], Comparison]
) -> None:
    assert_same_output(run_case(case), case)


def test_ctbrain1_offers_an_element_of_every_vr() -> None:
    assert set(CTBRAIN1_BY_VR) == set(REPLACEMENT) | {"SQ"}
