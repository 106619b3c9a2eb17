"""Validated configuration models: the YAML/JSON document, its defaults, environment overrides."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal

import regex
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sidecar.errors import ConfigError

ENV_PREFIX = "SIDECAR_"
DEFAULT_STORE = "sqlite:///var/lib/sidecar/history.db"
TEMPLATE_FIELDS = ("job", "tuning_job", "log_dir", "log_path")


class ObjectiveType(StrEnum):
    """Direction of the objective, in SageMaker's words."""

    MINIMIZE = "Minimize"
    MAXIMIZE = "Maximize"


class EarlyStoppingType(StrEnum):
    """SageMaker's `TrainingJobEarlyStoppingType`."""

    AUTO = "Auto"
    OFF = "Off"


def _enum_any_case(enum: type[Enum]) -> Any:
    """A before-validator accepting an enum's value in any letter case (`minimize`, `MAXIMIZE`)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            for member in enum:
                if member.value.lower() == value.strip().lower():
                    return member
            allowed = ", ".join(m.value for m in enum)
            raise ValueError(f"must be one of {allowed} (any letter case)")
        return value

    return parse


class _Model(BaseModel):
    """Base: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Objective(_Model):
    """What the rule compares: one metric and its direction."""

    metric: str = Field(min_length=1)
    type: ObjectiveType = ObjectiveType.MINIMIZE

    _type = field_validator("type", mode="before")(_enum_any_case(ObjectiveType))


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


class MetricDefinition(_Model):
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
            return {str(k).lower() if isinstance(k, str) else k: v for k, v in data.items()}
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


class EpochConfig(_Model):
    """Where a value's epoch comes from when its definition has no `epoch` group."""

    regex: str | None = None
    offset: int = 0

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        pattern = compile_user_regex(value)
        if "epoch" not in pattern.groupindex and pattern.groups == 0:
            raise ValueError("must have a capture group holding the epoch: (...) or (?P<epoch>...)")
        return value


class EarlyStopping(_Model):
    """SageMaker's early-stopping switch and the rule's parameters."""

    type: EarlyStoppingType = EarlyStoppingType.AUTO
    rule: Literal["sagemaker"] = "sagemaker"
    min_jobs: int = Field(default=3, ge=1)
    start_epoch: int = Field(default=1, ge=1)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads a bare `Off` as false
            return EarlyStoppingType.OFF
        if value is True:
            raise ValueError("must be one of Auto, Off (any letter case)")
        return _enum_any_case(EarlyStoppingType)(value)


class DockerSource(_Model):
    """Containers to follow through the Docker (or Podman) Engine API, chosen by label."""

    # at least one: an empty selection would follow every container on the host, the sidecar too
    labels: list[str] = Field(min_length=1)
    job_label: str = "sidecar.job"
    tuning_job_label: str = "sidecar.tuning_job"
    host: str | None = None


class Source(_Model):
    """Where `run` reads logs: a glob of files (`path`), or containers (`docker`)."""

    path: str | None = Field(default=None, min_length=1)
    format: Literal["plain", "docker-json", "cri", "auto"] = "auto"
    job: str = "{stem}"
    job_regex: str | None = None
    docker: DockerSource | None = None

    @field_validator("job_regex")
    @classmethod
    def _job_group(cls, value: str | None) -> str | None:
        if value is not None and "job" not in compile_user_regex(value).groupindex:
            raise ValueError("must have a named group (?P<job>...)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if (self.path is None) == (self.docker is None):
            raise ValueError(
                "set exactly one of `path` (a glob of log files) or `docker` (containers)"
            )
        return self


class SignalTarget(_Model):
    """How the signal backend finds the process to stop."""

    pid_file: str | None = None
    process_match: str | None = None
    # auto: the target's process group when it leads one (setsid, exec, a container's main
    # process; launchers such as torchrun), else the target and its descendants (a shell loop's
    # `&` jobs share the loop's group). group / tree force one. Protected processes are never
    # signalled whatever the scope (docs/design.md, "Reliability and safety").
    scope: Literal["auto", "group", "tree"] = "auto"

    @field_validator("process_match")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_user_regex(value)
        return value


class DockerTarget(_Model):
    """How the docker backend finds the container to stop."""

    container: str = "{job}"
    label: str | None = None  # e.g. `sidecar.job`: stop the container labelled sidecar.job=<job>
    host: str | None = None  # the Engine API; default DOCKER_HOST, else the local socket


class KubernetesTarget(_Model):
    """How the kubernetes backend finds the pod (or batch Job) to delete."""

    namespace: str = "default"
    pod: str = "{job}"
    job: str | None = None  # a template: delete this batch Job instead of the pod
    kubeconfig: str | None = None  # default: in-cluster config, else ~/.kube/config


class CommandTarget(_Model):
    """An argv template run without a shell."""

    argv: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("argv")
    @classmethod
    def _fixed_program(cls, value: list[str]) -> list[str]:
        if value and "{" in value[0]:
            raise ValueError("argv[0], the program, must be fixed: templates only in arguments")
        return value


class Stop(_Model):
    """How a stop decision reaches the training job."""

    backend: Literal["signal", "docker", "kubernetes", "command", "none"] = "signal"
    grace_seconds: float = Field(default=30.0, ge=0)
    marker: str | None = None
    signal: SignalTarget = Field(default_factory=SignalTarget)
    docker: DockerTarget = Field(default_factory=DockerTarget)
    kubernetes: KubernetesTarget = Field(default_factory=KubernetesTarget)
    command: CommandTarget = Field(default_factory=CommandTarget)


class Http(_Model):
    """Where `/metrics`, `/healthz` and `/readyz` are served."""

    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)


class Config(_Model):
    """The whole configuration document."""

    tuning_job: str = Field(default="default", min_length=1)
    objective: Objective
    preset: str | None = None
    metric_definitions: list[MetricDefinition] = Field(default_factory=list)
    epoch: EpochConfig = Field(default_factory=EpochConfig)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    sources: list[Source] = Field(default_factory=list)
    stop: Stop = Field(default_factory=Stop)
    store: str = Field(default=DEFAULT_STORE, min_length=1)
    http: Http = Field(default_factory=Http)
    max_line_bytes: int = Field(default=1 << 20, ge=64)
    # values held in memory while the store is unreachable; past this the sidecar stops reading
    max_buffered_values: int = Field(default=100_000, ge=1)
    regex_timeout_seconds: float = Field(default=0.1, gt=0)
    node: str | None = None
    idle_timeout_seconds: float = Field(default=3600.0, ge=0)
    early_stopped_exit_code: int = Field(default=0, ge=0, le=255)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if sep and scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                "must be sqlite:///abs/path.db, sqlite://rel/path.db, sqlite://:memory:, "
                "postgresql://user@host/db, or a file path"
            )
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None:
            from sidecar.presets import preset_names

            names = preset_names()
            if value not in names:
                raise ValueError(f"must be one of the built-in presets: {', '.join(names)}")
        return value

    def all_definitions(self) -> list[MetricDefinition]:
        """The preset's definitions followed by the user's own."""
        if self.preset is None:
            return list(self.metric_definitions)
        from sidecar.presets import load_preset

        return [*load_preset(self.preset).metric_definitions, *self.metric_definitions]

    def epoch_config(self) -> EpochConfig:
        """The user's epoch settings, else the preset's."""
        if self.epoch.regex is None and self.preset is not None:
            from sidecar.presets import load_preset

            return load_preset(self.preset).epoch
        return self.epoch


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


def objective_problem(config: Config) -> str | None:
    """Why no metric definition can produce the objective metric, or None when one can.

    A config whose objective is never extracted runs and never stops anything: `run`, `exec`,
    `replay` and `check` refuse it."""
    metric = config.objective.metric
    definitions = config.all_definitions()
    if any(can_produce(d, metric) for d in definitions):
        return None
    if not definitions:
        return (
            f"objective.metric: {metric!r} cannot be extracted: there are no metric definitions; "
            "set `metric_definitions` (SageMaker's {Name, Regex}) or `preset`"
        )
    names = ", ".join(dict.fromkeys(repr(d.name) for d in definitions))
    return (
        f"objective.metric: {metric!r} is not a name any metric definition produces "
        f"(definitions: {names}); set objective.metric to one of those names, or add a "
        f"definition with Name {metric!r}"
    )


_Leaf = Annotated[Any, "a YAML scalar or mapping"]


def _apply_env(
    document: dict[str, Any], env: Mapping[str, str], origins: dict[tuple[str, ...], str]
) -> dict[str, Any]:
    """Overlay `SIDECAR_<FIELD>` (and `SIDECAR_<FIELD>__<SUBFIELD>`) onto the parsed document;
    `origins` gets each overridden field's path and variable, for error messages."""
    merged = dict(document)
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in Config.model_fields:
            continue
        raw = env[key]
        target = merged
        for part in path[:-1]:
            child = target.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            target[part] = child
            target = child
        target[path[-1]] = _env_value(path, raw)
        origins[tuple(path)] = key
    return merged


def _env_value(path: list[str], raw: str) -> _Leaf:
    """Strings stay strings; structured and numeric fields are read as YAML (`{metric: x}`, `5`)."""
    if len(path) == 1 and Config.model_fields[path[0]].annotation in (str, str | None):
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def parse_document(text: str, *, source: str) -> dict[str, Any]:
    """Parse YAML (JSON is YAML) into a mapping, or raise ConfigError."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping, got {type(document).__name__}"
        )
    return document


def load_config(text: str, *, env: Mapping[str, str], source: str = "config") -> Config:
    """Validate a config document with environment overrides applied; raise ConfigError."""
    origins: dict[tuple[str, ...], str] = {}
    document = _apply_env(parse_document(text, source=source), env, origins)
    return validate_config(document, source=source, origins=origins)


def validate_config(
    document: Mapping[str, Any],
    *,
    source: str = "config",
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> Config:
    """Validate a parsed mapping into a Config; raise ConfigError with one line per problem,
    naming the environment variable for a field that one set."""
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            line = _describe(error)
            loc = tuple(str(part) for part in error["loc"])
            for path, variable in (origins or {}).items():
                if loc[: len(path)] == path:
                    line += f" (set by the environment variable {variable})"
                    break
            problems.append(line)
        raise ConfigError(f"{source}: " + "\n".join(problems)) from None


def _describe(error: Any) -> str:
    """One line: the field, what is wrong and allowed, and the value given."""
    loc = tuple(error["loc"])
    field = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_fields(loc[:-1]))
        return f"{field}: unknown field; allowed here: {allowed}"
    if kind == "missing":
        return f"{field}: required field is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind == "literal_error":
        message = "must be one of " + message.removeprefix("Input should be ")
    return f"{field}: {message}; got {_show(error.get('input'))}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_placeholders_are_groups(), MetricDefinition]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at `loc` (for 'unknown field' messages)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        model = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if model is None:
            return []
    names = list(getattr(model, "model_fields", {}))
    if model is MetricDefinition:
        names = ["Name", "Regex", "segments", "kind"]
    return names


_PLACEHOLDER = regex.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill `{job}`-style placeholders; anything else in braces (a regex's `{2}`, an unknown
    name) is left exactly as it is."""

    def fill(match: regex.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return str(_PLACEHOLDER.sub(fill, template))
