"""Task type of a request: what kind of step an agent is taking, from the caller or detected.

An agent's steps differ in what a cheap model can do: choosing a label from a closed set or pulling
fields out of a text is easy, writing code or solving a problem is not. Rules match on the task
(`when: {task: code}`), so it must be known before any rule or strategy runs.

The caller's word wins (`X-Switchman-Task`, a `task:<type>` tag, `metadata.task`); otherwise
`detect_task` decides from the request alone with compiled regular expressions over the last user
message (tens of microseconds, no model, no data shipped). The classes, by what the step asks the
model to produce:

    tool_use        the request offers tools, or its last message is a tool result
    code            a program, function, query or fix to one
    classification  one label from a closed set (sentiment, category, a multiple-choice letter)
    extraction      fields, entities or values pulled out of the given text
    summarisation   a shorter version of the given text
    reasoning       a derived answer: arithmetic, algebra, logic, proofs, step-by-step problems
    chat            anything else: open questions, advice, writing
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ._request import RouteRequest, message_text

__all__ = ["TASKS", "detect_task", "resolve_task", "task_from_tags", "task_of"]

TASKS: Final = ("classification", "extraction", "summarisation", "code", "reasoning", "tool_use", "chat")

# Only the head and tail of a long message are read: the instruction is nearly always at one end,
# and a bounded scan keeps detection time flat however long the pasted document is.
_HEAD, _TAIL = 1500, 500
# Words: lower-cased, punctuation (except the + of c++ and the # of c#) turned into spaces, then split;
# str.translate and str.split run in C, several times faster than a word regex.
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation if c not in "+#"} | {c: " " for c in "0123456789"})
#: The same table for ASCII bytes: str.translate reads its dict for every call (~1 µs), bytes.translate does not.
_ASCII_PUNCTUATION = bytes(ord(" ") if b in _PUNCTUATION else b for b in range(256))

# Lexical cues are looked up in the message's set of words and word pairs (one regex pass, then set
# lookups), which is several times faster than one case-insensitive alternation per cue.
#: (task, words or word pairs, weight): a cue adds its weight once when any of its entries occurs.
_CUES: Final[tuple[tuple[str, frozenset[str], float], ...]] = (
    ("code", frozenset({"python", "javascript", "typescript", "java", "c++", "rust", "golang", "sql", "bash",
                        "html", "css", "traceback", "compiler", "stack trace", "syntax error", "unit test",
                        "unit tests", "regex", "function that", "a function", "python function"}), 1.0),
    ("classification", frozenset({"classify", "categorize", "categorise", "sentiment", "which category",
                                  "single choice", "true or", "correct answer", "the letter", "yes or",
                                  "correct option", "the label", "one label"}), 2.0),
    ("extraction", frozenset({"extract", "parse", "pull out", "find all", "named entities", "list all",
                              "the entities", "entity", "entities"}), 2.0),
    ("extraction", frozenset({"as json", "into json", "in json", "a table", "key value", "fields"}), 0.75),
    ("summarisation", frozenset({"summarize", "summarise", "summary", "summarization", "summarisation", "tl dr",
                                 "condense", "key points", "key takeaways", "shorten", "recap", "gist",
                                 "one sentence", "two sentences", "three sentences", "a paragraph"}), 2.0),
    ("reasoning", frozenset({"solve", "calculate", "compute", "prove", "derive", "equation", "probability",
                             "how many", "step by", "integral", "derivative", "theorem", "riddle", "puzzle",
                             "sum of", "product of", "remainder"}), 1.5),
)
#: First words of the word-pair cues: only pairs starting with one are built.
_PAIR_STARTS: Final = frozenset(entry.split()[0] for _, cue, _ in _CUES for entry in cue if " " in entry)
_CODE_VERBS: Final = frozenset({"write", "implement", "create", "fix", "debug", "refactor", "optimize",
                                "optimise", "complete"})
_CODE_NOUNS: Final = frozenset({"function", "program", "script", "class", "method", "code", "query",
                                "regex", "algorithm", "api", "endpoint", "snippet"})
# Each `^` of a MULTILINE pattern is tried at every position of the text; written as a match at the start
# plus a search for "\n" and the rest, sre scans for the "\n" at memchr speed (~10x faster on a long
# text, same answers: under MULTILINE `^` is the text's start or just after a "\n").
_CODE_LINE = r"[ \t]*(?:def |class \w+[:(]|import \w|from \w+ import|#include|public static|function \w+\(|const \w+ =)"
_CODE_FIRST_LINE, _CODE_NEXT_LINE = re.compile(_CODE_LINE), re.compile("\n" + _CODE_LINE)
_OPTIONS = r"\s*\(?[A-E][).:]\s+\S.*\n\s*\(?[B-F][).:]\s+\S"
_OPTIONS_FIRST, _OPTIONS_NEXT = re.compile(_OPTIONS, re.IGNORECASE), re.compile("\n" + _OPTIONS, re.IGNORECASE)
# Arithmetic, `\d[ \t]*[-+*/^×÷=][ \t]*\(?\d`: no literal starts it, so sre would try it at every
# position; the operator and what follows are searched for instead, and the digit before is checked by hand.
_AFTER_OPERATOR = re.compile(r"[-+*/^×÷=][ \t]*\(?\d")


def _source_lines(text: str) -> bool:
    """A code fence, or a line that starts like source code."""
    return (
        "```" in text
        or _CODE_FIRST_LINE.match(text) is not None
        or ("\n" in text and _CODE_NEXT_LINE.search(text) is not None)  # `in`: no regex call for one line
    )


def _lettered_options(text: str) -> bool:
    """Two lines that start like lettered options: "A) ..." then "B) ..."."""
    if "\n" not in text:  # both patterns need one: no regex call for a single line
        return False
    return _OPTIONS_FIRST.match(text) is not None or _OPTIONS_NEXT.search(text) is not None


def _arithmetic(text: str) -> bool:
    """A digit, an operator and a digit ("3 * (4"), or LaTeX's \\frac or \\sqrt."""
    if "\\frac" in text or "\\sqrt" in text:
        return True
    for found in _AFTER_OPERATOR.finditer(text):
        i = found.start() - 1
        while i >= 0 and text[i] in " \t":
            i -= 1
        if i >= 0 and text[i].isdecimal():  # \d: a Unicode decimal digit (category Nd), as str.isdecimal
            return True
    return False


#: Structural cues no word list sees: source lines, lettered options, arithmetic.
_SHAPES: Final[tuple[tuple[str, Callable[[str], bool], float], ...]] = (
    ("code", _source_lines, 2.0),
    ("classification", _lettered_options, 2.0),
    ("reasoning", _arithmetic, 1.0),
)
#: Tie-break order: the more specific (and more expensive to get wrong) task first.
_PRIORITY: Final = {task: i for i, task in enumerate(("code", "reasoning", "extraction", "summarisation",
                                                      "classification", "chat"))}
_THRESHOLD = 1.5


def task_from_tags(tags: Iterable[str]) -> str | None:
    """The task a `task:<type>` tag names, if any (the first such tag)."""
    for tag in tags:
        if tag.startswith("task:") and len(tag) > 5:
            return tag[5:]
    return None


def _last_is_tool_result(messages: tuple[Mapping[str, Any], ...]) -> bool:
    if not messages:
        return False
    last = messages[-1]
    if last.get("role") in ("tool", "function"):
        return True
    content = last.get("content")  # Anthropic-style tool_result parts inside a user message
    return isinstance(content, list) and any(isinstance(p, Mapping) and p.get("type") == "tool_result"
                                             for p in content)


def _scan_text(prompt: str, messages: tuple[Mapping[str, Any], ...]) -> str:
    """The user's text (its head and tail when long), after the start of a system prompt.

    The user text is clipped first, so a long system prompt cannot crowd the instruction out.
    """
    text = prompt
    if len(text) > _HEAD + _TAIL:
        text = text[:_HEAD] + "\n" + text[-_TAIL:]
    if messages:
        first = messages[0]
        if first.get("role") == "system":  # an agent's step instruction often lives in its system prompt
            text = message_text(first)[:_HEAD] + "\n" + text
    return text


def _code_request(words: list[str]) -> bool:
    """A code verb followed within four words by a code noun ("write a python function")."""
    if _CODE_VERBS.isdisjoint(words):  # most prompts: one C-level pass instead of a Python loop over words
        return False
    for i, word in enumerate(words):
        if word in _CODE_VERBS and not _CODE_NOUNS.isdisjoint(words[i + 1 : i + 5]):
            return True
    return False


def _detect(prompt: str, messages: tuple[Mapping[str, Any], ...], has_tools: bool) -> str:
    if has_tools or _last_is_tool_result(messages):
        return "tool_use"
    text = _scan_text(prompt, messages)
    lowered = text.lower()
    if lowered.isascii():
        words = lowered.encode("ascii").translate(_ASCII_PUNCTUATION).decode("ascii").split()
    else:
        words = lowered.translate(_PUNCTUATION).split()
    vocabulary = set(words)
    if not _PAIR_STARTS.isdisjoint(vocabulary):
        vocabulary.update(f"{a} {b}" for a, b in itertools.pairwise(words) if a in _PAIR_STARTS)
    scores: dict[str, float] = {}
    for task, cue, weight in _CUES:
        if not cue.isdisjoint(vocabulary):
            scores[task] = scores.get(task, 0.0) + weight
    if _code_request(words):
        scores["code"] = scores.get("code", 0.0) + 2.0
    for task, found, weight in _SHAPES:
        if found(text):
            scores[task] = scores.get(task, 0.0) + weight
    if not scores:
        return "chat"
    best = max(scores.items(), key=lambda kv: (kv[1], -_PRIORITY[kv[0]]))
    return best[0] if best[1] >= _THRESHOLD else "chat"


def detect_task(request: RouteRequest) -> str:
    """The task type of a request from its content alone (one of TASKS; pure and fast)."""
    return _detect(request.prompt, request.messages, request.has_tools)


def task_of(prompt: str, messages: tuple[Mapping[str, Any], ...], has_tools: bool, tags: frozenset[str]) -> str:
    """`resolve_task` for a request still being built, from its parts (the caller gave no task)."""
    return task_from_tags(tags) or _detect(prompt, messages, has_tools)


def resolve_task(request: RouteRequest) -> str:
    """The caller's task (argument or `task:` tag) if given, else the detected one."""
    return request.task or task_from_tags(request.tags) or detect_task(request)
