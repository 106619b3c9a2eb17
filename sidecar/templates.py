"""`{job}`-style templates: filling them, filling a path safely, checking their placeholders,
and the values stop templates get. Pure."""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from typing import Any

import regex

TEMPLATE_FIELDS = ("job", "tuning_job", "log_dir", "log_path", "attempt")
PATH_FIELDS = ("stem", "name", "parent")  # what a file source's `job` template may use
DOCKER_FIELDS = ("container_id", "container")  # what a docker source adds to stop templates


_PLACEHOLDER = regex.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@functools.lru_cache(maxsize=256)
def _pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """A template split once into (literal text, placeholder name or None) pieces: a stop
    renders one pid file template for every job it protects, so the parse is remembered
    (a pure function of the template: the cache changes no answer)."""
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for m in _PLACEHOLDER.finditer(template):
        pieces.append((template[at : m.start()], m.group(1)))
        at = m.end()
    pieces.append((template[at:], None))
    return tuple(pieces)


def placeholders(template: str) -> list[str]:
    """The `{name}` placeholders of a template, in order (a regex's `{2}` is not one)."""
    return [name for _, name in _pieces(template) if name is not None]


def check_placeholders(template: str, allowed: Any) -> None:
    """ValueError naming an unknown placeholder (a typo like `{stme}` would otherwise stay
    literal text: every file merged into one job named `{stme}`)."""
    allowed = tuple(allowed)
    unknown = [name for name in placeholders(template) if name not in allowed]
    if unknown:
        names = ", ".join("{" + n + "}" for n in dict.fromkeys(unknown))
        shown = ", ".join("{" + a + "}" for a in allowed)
        raise ValueError(f"unknown placeholder {names} in {template!r}; allowed: {shown}")


# placeholders whose values are paths by design: the others are names and may not be one
PATH_VALUED = frozenset({"log_dir", "log_path"})


def render_path(template: str, values: Mapping[str, str]) -> str:
    """`render_template` for a file path (a pid file, a marker): a placeholder never adds a
    `/`, `.` or `..` (a job named `..` must not write outside the markers directory).
    ValueError names the placeholder."""
    for name in placeholders(template):
        value = values.get(name)
        if value is None or name in PATH_VALUED:
            continue
        if "/" in value or "\0" in value or value in (".", ".."):
            raise ValueError(
                f"{{{name}}} is {value!r}, which would make {template!r} a path outside its "
                "folder: refused"
            )
    return render_template(template, values)


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill `{job}`-style placeholders; anything else in braces (a regex's `{2}`, an unknown
    name) is left exactly as it is."""

    out: list[str] = []
    for literal, name in _pieces(template):
        out.append(literal)
        if name is not None:
            out.append(values[name] if name in values else "{" + name + "}")
    return "".join(out)


def template_context(
    *, job: str, tuning_job: str, log_path: str = "", extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The values `{job}`, `{tuning_job}`, `{log_dir}`, `{log_path}` for stop templates, plus the
    source's extra ones (`job_regex` groups such as `{namespace}`, a container's `{container_id}`,
    an attempt's number)."""
    context = dict(extra or {})
    context.update(
        job=job,
        tuning_job=tuning_job,
        log_path=log_path,
        log_dir=(posixpath.dirname(log_path) or ".") if log_path else "",
    )
    return context
