"""Tables laid out for the width they get: a terminal, 80 columns, or a pipe into a CI log.

Numbers are never cut: their columns are as wide as their widest value. When the table does not fit,
optional columns are left out (and named below it), headers and long names wrap, and if even that is
too wide each row becomes a block of `header value` pairs. `--json` is the form for machines.

    print_table(console, "models", [Field("name", numeric=False), Field("in $/1M"), ...], rows)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["Field", "print_table"]

#: Text columns may wrap down to this width (or their longest value, when shorter); numbers never wrap.
_TEXT_MIN = 16


@dataclass(frozen=True)
class Field:
    """One column: its header, whether it holds numbers (right-aligned, never cut) or may be left out."""

    header: str
    numeric: bool = True
    optional: bool = False


def _smallest(field: Field, values: Sequence[str]) -> int:
    """A column's narrowest: whole numbers, text down to _TEXT_MIN, the header's longest word."""
    widest = max((len(v) for v in values), default=0)
    header_word = max((len(w) for w in field.header.split()), default=0)
    return max(widest if field.numeric else min(widest, _TEXT_MIN), header_word)


def _natural(field: Field, values: Sequence[str]) -> int:
    """A column's width with nothing wrapped."""
    return max([len(field.header), *(len(v) for v in values)])


def _table(
    title: str | None, fields: Sequence[Field], rows: Sequence[Sequence[str]], keep: Sequence[int],
    widths: Sequence[int], *, sections: Collection[int] = (),
) -> Table:
    """The table of the `keep` columns at these widths (Rich's own squeezing would cut numbers)."""
    # No vertical rules: spaces between columns leave the width to the values.
    # Values and the title are plain Text: model names come from configurations and clients, never markup.
    # A Text title keeps the theme's `table.title` style only if given it: Rich styles str titles alone.
    table = Table(title=None if title is None else Text(title, style="table.title"), title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for i, width in zip(keep, widths, strict=True):
        table.add_column(fields[i].header, justify="right" if fields[i].numeric else "left", width=width,
                         overflow="fold")
    for n, row in enumerate(rows):
        table.add_row(*(Text(row[i]) for i in keep), end_section=n in sections)
    return table


def _widths(console: Console, fields: Sequence[Field], rows: Sequence[Sequence[str]],
            keep: Sequence[int]) -> list[int] | None:
    """Column widths that fit the console, or None: each at its smallest, the room left unwrapping
    numeric headers first, then text."""
    columns = [[row[i] for row in rows] for i in keep]
    widths = [_smallest(fields[i], values) for i, values in zip(keep, columns, strict=True)]
    overhead = Measurement.get(console, console.options.update_width(10_000),
                               _table(None, fields, rows, keep, widths)).maximum - sum(widths)
    room = console.width - overhead - sum(widths)
    if room < 0:
        return None
    order = sorted(range(len(keep)), key=lambda n: not fields[keep[n]].numeric)  # numbers first, stable
    for n in order:
        grow = min(room, _natural(fields[keep[n]], columns[n]) - widths[n])
        widths[n] += grow
        room -= grow
    return widths


def _say(console: Console, text: str) -> None:
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _blocks(console: Console, title: str | None, fields: Sequence[Field], rows: Sequence[Sequence[str]]) -> None:
    """One record per block: the first value on its own line, then `header value` pairs packed to the width."""
    if title:
        _say(console, title)
    for row in rows:
        _say(console, row[0])
        line = ""
        for field, value in zip(fields[1:], row[1:], strict=True):
            if not value:
                continue
            pair = f"  {field.header} {value}"
            if line and len(line) + len(pair) > console.width:
                _say(console, line)
                line = ""
            line += pair
        if line:
            _say(console, line)


def print_table(
    console: Console, title: str | None, fields: Sequence[Field], rows: Sequence[Sequence[str]], *,
    sections: Collection[int] = (),
) -> list[str]:
    """Print the rows as a table that fits the console (a rule after each row index in `sections`).

    Returns the headers of the columns left out for the width.
    """
    keep = list(range(len(fields)))
    optional = [i for i in keep if fields[i].optional]
    widths = _widths(console, fields, rows, keep)
    while widths is None and optional:
        keep.remove(optional.pop())
        widths = _widths(console, fields, rows, keep)
    if widths is None:
        _blocks(console, title, fields, rows)
        return []
    console.print(_table(title, fields, rows, keep, widths, sections=sections))
    left_out = [fields[i].header for i in range(len(fields)) if i not in keep]
    if left_out:
        console.print(f"(left out for the width: {', '.join(left_out)}; widen the terminal or use --json)",
                      soft_wrap=True, markup=False, highlight=False, style="dim")
    return left_out
