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
