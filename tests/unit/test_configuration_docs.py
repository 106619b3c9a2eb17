"""docs/configuration.md cannot drift: its table of every key holds exactly the config models'
fields, each with the model's default."""

from __future__ import annotations

import enum
import json
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sidecar.config import Config
from sidecar.definitions import MetricDefinition

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# SageMaker spells these keys with capitals; the model takes any letter case
SPELLED = {"name": "Name", "regex": "Regex"}


def shown(value: Any) -> str:
    """A default as the table writes it."""
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        for inner in (candidate, *typing.get_args(candidate)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def model_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, str]:
    """Every leaf field of the config, dotted (`sources[].docker.labels`), with its default."""
    keys: dict[str, str] = {}
    for name, info in model.model_fields.items():
        spelled = SPELLED.get(name, name) if model is MetricDefinition else name
        key = prefix + spelled
        inner = submodel(info.annotation)
        if inner is not None:
            is_list = typing.get_origin(info.annotation) is list
            keys.update(model_keys(inner, key + ("[]." if is_list else ".")))
            continue
        default = info.default if info.default_factory is None else info.default_factory()  # type: ignore[call-arg]
        keys[key] = shown(default)
    return keys


def documented() -> dict[str, str]:
    section = DOC.read_text().split("## Every key", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", section, re.M)
    return dict(rows)


class TestConfigurationPage:
    def test_the_table_lists_every_key_and_no_other(self) -> None:
        """A key added to the models must be documented; a documented key must exist."""
        assert sorted(documented()) == sorted(model_keys())

    def test_each_documented_default_is_the_models(self) -> None:
        """The default a user reads is the default the sidecar uses."""
        docs = documented()
        for key, default in model_keys().items():
            assert docs.get(key) == default, key
