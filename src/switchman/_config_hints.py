"""What a configuration error should say: the key path, the problem, and the nearest right key or value.

    routes.default.strategi: unknown key 'strategi' (did you mean 'strategy'?)
    server.timeouts.zzz: unknown key 'zzz' (allowed: connect, first_byte, total)

The configuration classes are walked from the root class down the error's key path (mapping keys
and list indexes stepped through), so a typo is caught at any depth.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["did_you_mean", "format_validation_error"]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the nearest of `choices`, or "" when none is near."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The configuration class that holds the keys at `loc` (mapping keys and list indexes stepped through)."""
    annotation: Any = root
    for part in loc:
        model = _model_in(annotation)
        if model is None:  # `part` is a mapping key or a list index: step to the element type
            annotation = _element(annotation)
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        annotation = field.annotation
    return _model_in(annotation)


def _element(annotation: Any) -> Any:
    """The element type of a list or dict annotation (through `| None`)."""
    for option in (annotation, *get_args(annotation)):
        if get_origin(option) in (list, dict):
            return get_args(option)[-1]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class an annotation is (or the one member of a union that is)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (UnionType, Union):
        return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)
    return None


def _hint(item: Any, root: type[BaseModel]) -> str:
    """What to write instead: the nearest allowed key or value."""
    loc, kind = item["loc"], item["type"]
    if kind == "extra_forbidden" and loc:
        model = _model_at(root, loc[:-1])
        if model is None:
            return ""
        keys = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
        return did_you_mean(str(loc[-1]), keys) or f" (allowed: {', '.join(sorted(keys))})"
    if kind == "literal_error" and isinstance(item.get("input"), str):
        return did_you_mean(item["input"], re.findall(r"'([^']*)'", item.get("ctx", {}).get("expected", "")))
    return ""


def format_validation_error(error: ValidationError, source: str, *, root: type[BaseModel]) -> str:
    """The errors of validating `root` from a file, one line each: key path, problem, the nearest right key."""
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key {str(item['loc'][-1])!r}"
        if not item["loc"]:  # the whole-file checks: each line already names its key path
            lines += [f"  {line}" for line in message.splitlines()]
            continue
        lines.append(f"  {path}: {message}{_hint(item, root)}")
    return "\n".join(lines)
