"""Built-in metric definitions for common frameworks, stored as YAML data files beside this module."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import Field

from sidecar.definitions import EpochConfig, MetricDefinition, StrictModel


class Preset(StrictModel):
    """A named set of metric definitions plus how its epochs are found."""

    description: str = ""
    origin: str = ""
    metric_definitions: list[MetricDefinition] = Field(min_length=1)
    epoch: EpochConfig = Field(default_factory=EpochConfig)


@cache
def preset_names() -> tuple[str, ...]:
    """Names of the presets shipped in the package, sorted."""
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml")))


@cache
def load_preset(name: str) -> Preset:
    """Load and validate one shipped preset (a packaging bug if it fails)."""
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return Preset.model_validate(yaml.safe_load(text))
