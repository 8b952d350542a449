"""The shipped front-end: vendored files as they came from npm, their licences, and CSP-clean templates."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import switchman.ui

UI = Path(switchman.ui.__file__).parent
VENDOR = UI / "static" / "vendor"
#: htmx.org 2.0.11 and uplot 1.6.32 from the npm registry (see static/vendor/README.md).
PINNED = {
    "htmx.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}


def test_vendored_files_are_the_pinned_releases_with_their_licences() -> None:
    for name, digest in PINNED.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert "Zero-Clause BSD" in (VENDOR / "htmx.LICENSE").read_text()
    assert "MIT License" in (VENDOR / "uPlot.LICENSE").read_text()
    total = sum(f.stat().st_size for f in (UI / "static").rglob("*") if f.is_file())
    assert total < 200_000  # small enough to ship in the wheel


def test_templates_need_no_inline_script_or_style() -> None:
    """The Content-Security-Policy allows scripts and styles from the server only."""
    for template in (UI / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"\sstyle=", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name
        for script in re.findall(r"<script([^>]*)>", text):
            assert "src=" in script or 'type="application/json"' in script, (template.name, script)
