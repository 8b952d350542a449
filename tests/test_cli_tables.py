"""Tables for people at any width: numbers whole, optional columns left out and named, blocks when narrow."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from switchman.cli._tables import Field, print_table

FIELDS = [Field("name", numeric=False), Field("in $/1M"), Field("out $/1M"), Field("cached $/1M", optional=True),
          Field("context"), Field("capabilities", numeric=False)]
ROWS = [
    ["gpt-4o-mini", "0.15", "0.6", "0.075", "128,000", "json, tools, vision"],
    ["meta-llama/Llama-3.3-70B-Instruct-Turbo", "0.88", "0.88", "—", "131,072", "json, tools"],
    ["claude-sonnet-4-5", "3", "15", "0.3", "200,000", "json, reasoning, tools, vision"],
]


def render(width: int) -> str:
    out = io.StringIO()
    print_table(Console(file=out, width=width, color_system=None), "models", FIELDS, ROWS)
    return out.getvalue()


@pytest.mark.parametrize("width", [200, 80, 60, 40, 24])
def test_every_number_is_whole_at_any_width(width: int) -> None:
    text = render(width)
    assert "…" not in text
    tokens = set(re.findall(r"[\d,.]+", text))
    for row in ROWS:
        for value in (row[1], row[2], row[4]):  # the columns that are never left out
            assert value in tokens, (value, text)
    if width >= 60:  # a table: nothing beyond the width
        assert all(len(line) <= width for line in text.splitlines())


def test_a_wide_console_gets_the_whole_table_on_one_line_per_model() -> None:
    text = render(200)
    assert "cached $/1M" in text and "left out" not in text
    assert any("meta-llama/Llama-3.3-70B-Instruct-Turbo" in line and "131,072" in line for line in text.splitlines())


def test_a_narrower_console_leaves_optional_columns_out_and_names_them() -> None:
    assert "left out" not in render(80)
    text = render(66)
    assert "left out for the width: cached $/1M" in text
    assert "0.075" not in text  # that column's values went with it
    assert any("claude-sonnet-4-" in line and "200,000" in line for line in text.splitlines())  # name wrapped


def test_too_narrow_for_a_table_gives_one_block_per_record() -> None:
    text = render(40)
    lines = text.splitlines()
    assert lines[0] == "models" and "meta-llama/Llama-3.3-70B-Instruct-Turbo" in lines
    assert "  cached $/1M 0.075" in text  # nothing is left out of a block
    assert "┃" not in text and "─" not in text


def test_the_title_keeps_the_theme_style_while_shown_as_typed() -> None:
    out = io.StringIO()
    print_table(Console(file=out, width=120, force_terminal=True, color_system="standard"), "route [/x]", FIELDS, ROWS)
    assert "\x1b[3mroute [/x]" in out.getvalue()  # italic, as Rich draws a str title
