"""Private elements a recipe keeps through private-tag removal (``remove_private``).

Private tags are removed after the recipe (our default). A ``KEEP`` line that names a private
element *by its creator*, in deid's private selector form::

    KEEP (0019,"GEMS_ACQU_01",23)

keeps that element through the removal, at every depth of nested sequences, wherever the
creator ``GEMS_ACQU_01`` reserved the block of group 0019 (any block number): the element
``(0019,xx23)`` and its Private Creator element ``(0019,00xx)`` stay. The creator is compared
without case and surrounding spaces. A KEEP by bare tag (``KEEP (0019,1023)``) or by an
expander does not survive the removal: without its creator a private tag says nothing about
what it holds. ``ps3.15-retain-safe-private`` is a list of such lines (PS3.15 Table E.3.10-1).

:func:`private_keeps` reads them from a recipe (once per Recipe object); :func:`kept_private_tags`
says which private tags of one dataset level they spare. Both are pure and picklable.
"""

from __future__ import annotations

import re

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from deid_batch.recipe.fields import _creator
from deid_batch.recipe.model import Recipe

__all__ = ["Creators", "PrivateKey", "kept_private_tags", "parse_private_keep", "private_keeps",
           "record_creators"]

#: (group, creator in lower case, element low byte)
PrivateKey = tuple[int, str, int]
#: id(dataset or item) -> {private creator tag: creator} as they were before the recipe ran
Creators = dict[int, dict[BaseTag, str]]

_PRIVATE_KEEP_RE = re.compile(r'^\(?([0-9A-Fa-f]{4}),"([^"]+)",([0-9A-Fa-f]{2})\)?$')


def parse_private_keep(selector: str) -> PrivateKey | None:
    """``(gggg,"CREATOR",ee)`` (parentheses optional) -> its key; None for any other selector."""
    m = _PRIVATE_KEEP_RE.match(selector.strip())
    if m is None:
        return None
    group = int(m.group(1), 16)
    if not group & 1:
        return None
    return group, m.group(2).strip().lower(), int(m.group(3), 16)


def private_keeps(recipe: Recipe) -> frozenset[PrivateKey]:
    """The private elements ``recipe``'s KEEP lines name by creator (kept on the object)."""
    found: frozenset[PrivateKey] | None = recipe.__dict__.get("_private_keeps")
    if found is None:
        keys = (parse_private_keep(a.field) for a in recipe.header if a.action == "KEEP" and a.field)
        found = frozenset(k for k in keys if k is not None)
        object.__setattr__(recipe, "_private_keeps", found)
    return found


def record_creators(ds: Dataset, keeps: frozenset[PrivateKey]) -> Creators:
    """The Private Creator values of every level of ``ds`` (sequences converted, as the engine's
    index converts them), for the groups ``keeps`` names; empty when nothing is kept."""
    groups = {group for group, _, _ in keeps}
    found: Creators = {}
    if not groups:
        return found
    queue = [ds]
    while queue:
        dataset = queue.pop()
        for element in dataset.elements():
            tag = element.tag
            if tag.group in groups and 0x10 <= tag.element <= 0xFF:
                value = dataset[tag].value
                if isinstance(value, str):
                    found.setdefault(id(dataset), {})[tag] = value
                continue
            if isinstance(element, RawDataElement) and element.VR not in (None, "SQ", "UN"):
                continue
            value = dataset[tag].value
            if isinstance(value, Sequence):
                queue.extend(item for item in value if isinstance(item, Dataset))
    return found


def kept_private_tags(ds: Dataset, keeps: frozenset[PrivateKey],
                      creators: Creators | None = None) -> frozenset[BaseTag]:
    """The private tags of this level of ``ds`` that ``keeps`` spares: each kept element and
    the Private Creator element of its block (nested items are the caller's to walk). A kept
    element whose creator element is gone is given it back from ``creators``."""
    if not keeps:
        return frozenset()
    before = (creators or {}).get(id(ds), {})
    spared: set[BaseTag] = set()
    for tag in list(ds.keys()):
        if not tag.is_private or tag.element <= 0xFF:
            continue
        creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
        creator = _creator(ds, tag) if creator_tag in ds else before.get(creator_tag)
        if creator is None:
            continue
        if (tag.group, creator.strip().lower(), tag.element & 0xFF) in keeps:
            spared.add(tag)
            spared.add(creator_tag)
            if creator_tag not in ds:
                ds.add_new(creator_tag, "LO", creator)
    return frozenset(spared)
