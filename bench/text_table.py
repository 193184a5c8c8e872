"""The fixed-width tables the benchmarks print: a header line, then one line per measurement as it
comes (flushed, so a long run shows its rows while it goes).

A column is (title, format spec of its values), e.g. ("items/s", ">8.1f"); the title is aligned
like the values and padded to the spec's width. Titles may repeat (two "ratio" columns).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Column = tuple[str, str]

# [[fill]align][sign][z][#][0][width]: the alignment and width the title takes from the spec
_ALIGN_WIDTH = re.compile(r"^(?:.?([<>^=]))?[+\- ]?z?#?0?(\d+)")


def _title_cell(title: str, spec: str) -> str:
    found = _ALIGN_WIDTH.match(spec)
    if found is None:
        return title
    align = found.group(1) if found.group(1) in ("<", "^") else ">"
    return f"{title:{align}{found.group(2)}}"


def print_header(columns: Sequence[Column], note: str = "") -> None:
    """Print the titles, one space apart, then `note` (e.g. the units)."""
    print(" ".join(_title_cell(title, spec) for title, spec in columns) + note)


def print_row(columns: Sequence[Column], values: Sequence[object], note: str = "") -> None:
    """Print one value per column in its spec, then `note`. ValueError if the counts differ."""
    if len(values) != len(columns):
        raise ValueError(f"{len(values)} values for {len(columns)} columns")
    cells = (f"{value:{spec}}" for value, (_, spec) in zip(values, columns, strict=True))
    print(" ".join(cells) + note, flush=True)
