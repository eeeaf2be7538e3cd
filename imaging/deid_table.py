"""DICOM PS3.15 Table E.1-1 as data: which action each attribute gets under which options.

The table is ``deid_table_e1_1.json`` next to this module, generated from the standard's text
by ``tools/gen_deid_table.py`` (it names the edition and the source commit). Each row holds the
Basic Profile action and the actions of the option columns (PS3.15 E.3). The legend of the
actions is PS3.15 E.1.1:

- ``D`` replace with a non-zero length value that may be a dummy, consistent with the VR;
- ``Z`` replace with a zero length value (or a dummy);
- ``X`` remove;
- ``K`` keep (a sequence is still processed item by item);
- ``C`` clean: replace with values of similar meaning known not to identify (dates: shifted);
- ``U`` replace a UID with a non-zero length UID that is consistent within the set;
- ``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: the first unless the next is needed to keep
  the object conformant to its IOD (Type 2 / Type 1), ``U*`` replacing the UIDs inside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("deid_table_e1_1.json")

#: Option columns of Table E.1-1 that take dates (PS3.15 E.3.6).
FULL_DATES = "rtnLongFullDatesOpt"
MODIFIED_DATES = "rtnLongModifDatesOpt"
SAFE_PRIVATE = "rtnSafePrivOpt"


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1.

    Attributes
    ----------
    key
        8 lower-case hex digits; ``x`` marks a repeating-group wildcard (``50xxxxxx``);
        ``"private"`` for the row of all private attributes.
    name
        Attribute name as the standard spells it.
    basic
        Basic Profile action (``"X"``, ``"Z/D"``, ``"X/Z/U*"`` ...).
    options
        Option column key -> action, for the columns that name one.
    """

    key: str
    name: str
    basic: str
    options: dict[str, str] = field(hash=False)

    def action(self, enabled: frozenset[str]) -> str:
        """The single action to apply given the enabled option columns.

        An enabled option that names an action for this row overrides the Basic Profile
        (PS3.15 E.3: options relax or refine the Basic Profile); when two do, ``C`` (clean) wins
        over ``K`` (keep). A combined Basic Profile action resolves to its alternative that
        keeps any IOD conformant without looking the IOD up: ``U*`` (replace the UIDs in the
        sequence) for ``X/Z/U*``, ``D`` (dummy) when offered, else ``Z`` (empty). Removal is
        thus never chosen for an attribute that may be Type 1 or 2 in some IOD.
        """
        chosen = [a for k, a in self.options.items() if k in enabled]
        if chosen:
            return "C" if "C" in chosen else chosen[0]
        parts = self.basic.split("/")
        if len(parts) == 1:
            return parts[0]
        if "U*" in parts:
            return "U"
        return "D" if "D" in parts else "Z"


class ProfileTable:
    """Table E.1-1 loaded for lookup by tag."""

    def __init__(self, standard: str, source: dict[str, str],
                 option_names: dict[str, dict[str, str]], rules: tuple[Rule, ...]) -> None:
        self.standard = standard
        self.source = source
        self.option_names = option_names
        self.rules = rules
        self.exact: dict[int, Rule] = {
            int(r.key, 16): r for r in rules if r.key != "private" and "x" not in r.key
        }
        self._masked = [(*_mask_of(r.key), r) for r in rules
                        if r.key != "private" and "x" in r.key]
        self.private_rule = next(r for r in rules if r.key == "private")

    def rule_for(self, tag: int) -> Rule | None:
        """The rule of standard (even-group) tag ``tag``, exact or repeating-group; else None.

        Private tags (odd group) are answered by :attr:`private_rule`.
        """
        rule = self.exact.get(tag)
        if rule is not None:
            return rule
        for mask, value, r in self._masked:
            if tag & mask == value:
                return r
        return None


def _mask_of(key: str) -> tuple[int, int]:
    """``(mask, value)`` of a wildcard key: ``tag & mask == value`` matches it."""
    mask = int("".join("0" if c == "x" else "f" for c in key), 16)
    value = int(key.replace("x", "0"), 16)
    return mask, value


@lru_cache(maxsize=1)
def load_table(path: str | None = None) -> ProfileTable:
    """Load Table E.1-1 (default: the generated file shipped with the package)."""
    doc = json.loads(Path(path or TABLE_PATH).read_text())
    rules = tuple(
        Rule(r["tag"], r["name"], r["basic"], dict(r["options"])) for r in doc["attributes"]
    )
    return ProfileTable(doc["standard"], dict(doc["source"]), dict(doc["options"]), rules)

