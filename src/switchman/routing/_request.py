"""RouteRequest: what the decision core knows about one request.

Built once per request from the OpenAI-style body (messages, tools, response_format, max_tokens)
and the caller's context (agent, session, tags, task). Everything a strategy or policy reads is
here, already derived, so the core never parses wire formats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._slots import slot_init

__all__ = ["CODE_SCAN_CHARS", "RouteRequest", "looks_like_code", "message_text"]

# Per-message framing tokens in OpenAI chat formats, and the flat price of one image at low detail.
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_IMAGE = 85
# Code: a fence, a line ending in ";" or a line starting with a keyword. The line-start test is two
# patterns (text start, then after a "\n") rather than one `^` under MULTILINE, which sre tries at
# every position: with "\n" as its literal prefix the scan runs at memchr speed, ~8x faster.
_CODE_KEYWORDS = r"(?:def |class |import |from \S+ import |function |const |let |#include|public static)"
_CODE_FIRST_LINE = re.compile(r"[^\S\n]*" + _CODE_KEYWORDS)
_CODE_LINE = re.compile(r"\n[^\S\n]*" + _CODE_KEYWORDS)
_CODE_SEMICOLON = re.compile(r";[^\S\n]*$", re.MULTILINE)
#: Characters of each message the code detector reads (its regex holds the GIL: unbounded, a
#: multi-megabyte prompt would stall every other request of the process).
CODE_SCAN_CHARS = 32_768


def looks_like_code(text: str) -> bool:
    """Whether a message's first CODE_SCAN_CHARS characters hold a code fence or code-shaped lines."""
    text = text[:CODE_SCAN_CHARS]
    return (
        "```" in text
        or (";" in text and _CODE_SEMICOLON.search(text) is not None)
        or _CODE_FIRST_LINE.match(text) is not None
        or ("\n" in text and _CODE_LINE.search(text) is not None)  # `in`: no regex call for a single line
    )


def message_text(message: Mapping[str, Any]) -> str:
    """The text parts of one chat message (string content or a list of content parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


@slot_init
@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One request as the router sees it."""

    messages: tuple[Mapping[str, Any], ...] = ()
    prompt: str = ""
    input_tokens: int = 0
    max_tokens: int | None = None
    has_tools: bool = False
    has_images: bool = False
    has_code: bool = False
    response_format: str | None = None
    agent: str | None = None
    session: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)
    task: str | None = None

    @property
    def needs(self) -> frozenset[str]:
        """Capabilities a model must have to serve this request."""
        needs: set[str] = set()
        if self.has_tools:
            needs.add("tools")
        if self.has_images:
            needs.add("vision")
        if self.response_format in ("json_object", "json_schema"):
            needs.add("json")
        return frozenset(needs)

    @classmethod
    def from_messages(
        cls,
        messages: Sequence[Mapping[str, Any]],
        *,
        count_tokens: Callable[[str], int],
        tools: Sequence[Any] | None = None,
        response_format: Mapping[str, Any] | str | None = None,
        max_tokens: int | None = None,
        agent: str | None = None,
        session: str | None = None,
        tags: Sequence[str] | frozenset[str] = (),
        task: str | None = None,
        resolve_task: Callable[[str, tuple[Mapping[str, Any], ...], bool, frozenset[str]], str | None] | None = None,
    ) -> RouteRequest:
        """Derive everything the core needs from a chat request (pure: the token counter is given).

        `resolve_task(prompt, messages, has_tools, tags)` gives the task when the caller gave none,
        so the request is built once, its task already known (what `Decider.request` does).
        """
        texts: list[str] = []
        images = 0
        tokens = _TOKENS_PER_MESSAGE * len(messages)
        has_code = False
        prompt: str | None = None  # the last user message with text
        for message in messages:  # one pass: each message's text (as message_text), images, tokens and code
            content = message.get("content")
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):
                text = "\n".join(
                    part["text"] for part in content
                    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
                )
                images += sum(
                    1 for p in content
                    if isinstance(p, Mapping) and p.get("type") in ("image_url", "image", "input_image")
                )
            else:
                text = ""
            texts.append(text)
            tokens += count_tokens(text)
            if text:
                has_code = has_code or looks_like_code(text)
                if message.get("role") == "user":
                    prompt = text
        input_tokens = tokens + _TOKENS_PER_IMAGE * images
        if tools:
            input_tokens += sum(count_tokens(str(t)) for t in tools)
        if prompt is None:
            prompt = "\n".join(t for t in texts if t)
        fmt: str | None
        if response_format is None:  # the usual case, without an isinstance check against an ABC
            fmt = None
        elif isinstance(response_format, Mapping):
            fmt = str(response_format.get("type")) if response_format.get("type") else None
        else:
            fmt = response_format
        chat = tuple(messages)
        has_tools = bool(tools)
        tag_set = frozenset(tags)
        if not task and resolve_task is not None:  # as `resolve_task(request)`: an empty task is none
            task = resolve_task(prompt, chat, has_tools, tag_set)
        # Positional, in field order: a frozen dataclass sets each field with object.__setattr__, and
        # keywords cost a quarter more again (this runs for every request).
        return cls(chat, prompt, input_tokens, max_tokens, has_tools, images > 0, has_code, fmt, agent, session,
                   tag_set, task)

    @classmethod
    def from_prompt(cls, prompt: str, *, count_tokens: Callable[[str], int], **context: Any) -> RouteRequest:
        """A single-turn request (what offline evaluation routes)."""
        return cls.from_messages([{"role": "user", "content": prompt}], count_tokens=count_tokens, **context)
