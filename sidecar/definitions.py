"""Metric definitions and epoch settings: SageMaker's `{Name, Regex}` as validated models, the
compiler for users' regexes, and the config's shared field types. Pure."""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import regex
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)


def _no_bool(value: Any) -> Any:
    """YAML's `true` is not the number 1: `port: true` is a mistake, not port 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
"""An integer field: bools refused."""
Number = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_finite)]
"""A float field: bools, NaN and infinities refused."""


class StrictModel(BaseModel):
    """Base: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def compile_user_regex(pattern: str) -> regex.Pattern[str]:
    """Compile a user's regex with the `regex` module, raising ValueError with a readable reason."""
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"must be a valid regular expression ({exc})") from None


def template_fields(name: str) -> list[str]:
    """The `{placeholder}` names in a templated metric name, in order."""
    return [field for _, field, _, _ in string.Formatter().parse(name) if field]


JSONL_FIELDS = ("key",)


class MetricDefinition(StrictModel):
    """SageMaker's `{Name, Regex}`; keys accepted in any letter case.

    `kind: jsonl` (no Regex) reads lines that are JSON objects instead: every number in the object
    is a metric named by its key (nested keys joined by `.`); `Name: '{key}'` takes them all, a
    plain Name only that key.
    """

    name: str = Field(min_length=1)
    kind: Literal["regex", "jsonl"] = "regex"
    regex: str | None = Field(default=None, min_length=1, validate_default=True)
    segments: Literal["last", "all"] = "last"

    @model_validator(mode="before")
    @classmethod
    def _lower_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            lowered: dict[Any, Any] = {}
            for k, v in data.items():
                key = k.lower() if isinstance(k, str) else k
                if key in lowered:
                    raise ValueError(
                        f"the key {k!r} is given twice (keys are read in any letter case)"
                    )
                lowered[key] = v
            return lowered
        return data

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("kind") == "jsonl":
            if value is not None:
                raise ValueError("kind: jsonl reads JSON objects and takes no Regex; remove it")
            return None
        if value is None:
            if "kind" not in info.data:  # the kind itself is wrong: that error says it
                return None
            raise ValueError("required field is missing (or set `kind: jsonl`)")
        pattern = compile_user_regex(value)
        named = set(pattern.groupindex)
        unnamed = pattern.groups - len(named)
        if "value" not in named and unnamed == 0:
            raise ValueError(
                "must have a capture group holding the number: one (...) group "
                "or a named group (?P<value>...)"
            )
        return value

    @model_validator(mode="after")
    def _placeholders_are_groups(self) -> MetricDefinition:
        try:
            fields = template_fields(self.name)
        except ValueError as exc:
            raise ValueError(f"Name {self.name!r} is not a valid template ({exc})") from None
        if self.regex is None:  # kind: jsonl
            if self.segments == "all":
                raise ValueError("`segments: all` is for regex definitions, not kind: jsonl")
            unknown = [f for f in fields if f not in JSONL_FIELDS]
            if unknown:
                raise ValueError(
                    f"Name {self.name!r} uses placeholder(s) {', '.join(unknown)}; "
                    "a kind: jsonl Name may use only {key}"
                )
            return self
        missing = [f for f in fields if f not in compile_user_regex(self.regex).groupindex]
        if missing:
            raise ValueError(
                f"Name {self.name!r} uses placeholder(s) {', '.join(missing)} that are not "
                "named groups (?P<...>) of its Regex"
            )
        return self


class EpochConfig(StrictModel):
    """Where a value's epoch comes from when its definition has no `epoch` group."""

    regex: str | None = None
    offset: Int = Field(default=0, ge=-1_000_000, le=1_000_000)

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        pattern = compile_user_regex(value)
        if "epoch" not in pattern.groupindex and pattern.groups == 0:
            raise ValueError("must have a capture group holding the epoch: (...) or (?P<epoch>...)")
        return value


def _template_regex(name: str) -> regex.Pattern[str]:
    """A templated metric name as a regex over the names it can produce: `{set}:{metric}`
    matches `validation:auc`. Placeholders match any non-empty text (what a group may capture
    is not known without running it)."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(name):
        parts.append(regex.escape(literal))
        if field:
            parts.append(".+")
    return regex.compile("".join(parts), regex.DOTALL)


def can_produce(definition: MetricDefinition, metric: str) -> bool:
    """Whether a definition can yield a metric of that name (as far as names alone tell)."""
    if not template_fields(definition.name):
        return definition.name == metric
    return _template_regex(definition.name).fullmatch(metric) is not None
