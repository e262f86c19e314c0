"""Output layout: hash-derived, sharded, collision-free names."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from deid_batch.stages.layout import output_path, output_relpath

KEY = b"k" * 32


@given(st.text(min_size=1, max_size=80))
def test_shard_paths_are_deterministic_and_carry_no_input_text(name):
    source = "/pacs/DOE^JOHN/" + name
    rel = output_relpath(KEY, source)
    assert rel == output_relpath(KEY, source)
    parts = rel.split(os.sep)
    assert len(parts) == 3
    assert parts[2].startswith(parts[0] + parts[1])
    assert "DOE" not in rel and all(c in "0123456789abcdef./" for c in rel.replace(".dcm", ""))


def test_same_basename_in_different_folders_never_collides():
    paths = {output_path("/out", KEY, f"/pacs/patient{i}/series/IM0001.dcm") for i in range(5000)}
    assert len(paths) == 5000


def test_names_depend_on_the_key():
    assert output_relpath(KEY, "/x/IM1.dcm") != output_relpath(b"other-key" * 4, "/x/IM1.dcm")
