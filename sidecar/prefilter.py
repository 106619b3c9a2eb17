"""Required literals of a regex: a cheap substring test that skips lines a regex cannot match."""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

# Syntax the stdlib parser would read differently from `regex`: a brace that is not a plain
# `{m,n}` repeat (fuzzy matching `{e<=1}`, `\\p{L}`), version-1 set operations, branch resets.
_REGEX_ONLY = re.compile(r"\{(?!\d*,?\d*\})|\(\?V1|\(\?\||\[\[:|\\[pPNX]")

_c: Any = None
_parser: Any = None
try:  # the parser behind `re`; the `regex` module's syntax is mostly a superset of it
    _c = importlib.import_module("re._constants")
    _parser = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - a Python without these just gets no prefilter
    pass


def required_literal(pattern: str) -> str | None:
    """The longest literal text that every match of `pattern` must contain, or None.

    None means "no cheap test is known": always run the regex. Patterns the stdlib parser does not
    understand (`regex`-only syntax) and case-insensitive ones get None, which is always safe.
    """
    if _parser is None or _REGEX_ONLY.search(pattern):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "error"
            )  # e.g. "Possible nested set": a `regex`-only `[[:digit:]]`
            parsed = _parser.parse(pattern, 0)
    except (re.error, RecursionError, OverflowError, ValueError, TypeError, Warning):
        return None
    if parsed.state.flags & (_c.SRE_FLAG_IGNORECASE | _c.SRE_FLAG_VERBOSE):
        return None
    runs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            runs.append("".join(current))
            current.clear()

    def walk(items: Any) -> None:
        for op, arg in items:
            if op is _c.LITERAL:
                current.append(chr(arg))
            elif op is _c.SUBPATTERN:
                _group, add_flags, _del_flags, inner = arg
                if add_flags & _c.SRE_FLAG_IGNORECASE:
                    flush()
                else:
                    walk(inner)
            elif op is getattr(_c, "ATOMIC_GROUP", None):
                walk(arg)
            elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) or op is getattr(
                _c, "POSSESSIVE_REPEAT", None
            ):
                low, _high, inner = arg
                flush()
                if low >= 1:
                    walk(inner)
                    flush()
            elif op is _c.AT:
                continue  # zero-width anchors do not break a run of literal characters
            else:
                flush()

    walk(parsed)
    flush()
    return max(runs, key=len) if runs else None


def chunk_safe(pattern: str) -> bool:
    """True when searching a block of lines with `pattern` compiled MULTILINE finds, in each
    line, what searching that line alone finds, provided no match contains a newline.

    What could see past a line's end is refused: lookarounds, string anchors (`\\A`, `\\Z`),
    flags turned off inside the pattern, and any syntax the stdlib parser cannot read (`regex`'s
    own). Line anchors (`^`, `$`) and word boundaries are the same at a line's edges as at a
    string's (a newline is not a word character). docs/design.md, "Parsing a chunk at once".
    """
    if _parser is None or _REGEX_ONLY.search(pattern) or "\\G" in pattern or "\\K" in pattern:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed = _parser.parse(pattern, 0)
    except (re.error, RecursionError, OverflowError, ValueError, TypeError, Warning):
        return False
    refused_at = {_c.AT_BEGINNING_STRING, _c.AT_END_STRING}

    def safe(items: Any) -> bool:
        for op, arg in items:
            if op in (_c.ASSERT, _c.ASSERT_NOT):
                return False
            if op is _c.AT and arg in refused_at:
                return False
            if op is _c.SUBPATTERN:
                _group, _add, del_flags, inner = arg
                if del_flags or not safe(inner):
                    return False
            elif op is _c.BRANCH:
                if not all(safe(branch) for branch in arg[1]):
                    return False
            elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) or op is getattr(
                _c, "POSSESSIVE_REPEAT", None
            ):
                if not safe(arg[2]):
                    return False
            elif op is getattr(_c, "ATOMIC_GROUP", None):
                if not safe(arg):
                    return False
            elif op is _c.GROUPREF_EXISTS:
                _group, yes, no = arg
                if not safe(yes) or (no is not None and not safe(no)):
                    return False
        return True

    return safe(parsed)
