"""Validated configuration models: the YAML/JSON document, its defaults, environment overrides."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal

import regex
import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sidecar.definitions import (
    EpochConfig,
    Int,
    MetricDefinition,
    Number,
    StrictModel,
    can_produce,
    compile_user_regex,
)
from sidecar.errors import ConfigError
from sidecar.presets import load_preset, preset_names
from sidecar.templates import (
    DOCKER_FIELDS,
    PATH_FIELDS,
    TEMPLATE_FIELDS,
    check_placeholders,
    placeholders,
)

ENV_PREFIX = "SIDECAR_"
DEFAULT_STORE = "sqlite:///var/lib/sidecar/history.db"
# a config document may not expand (YAML aliases) to more values than this, nor nest deeper
MAX_DOCUMENT_NODES = 100_000
MAX_DOCUMENT_DEPTH = 64


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


class Objective(StrictModel):
    """What the rule compares: one metric and its direction."""

    metric: str = Field(min_length=1)
    type: ObjectiveType = ObjectiveType.MINIMIZE

    _type = field_validator("type", mode="before")(_enum_any_case(ObjectiveType))


RuleName = Literal[
    "sagemaker",
    "optuna-median",
    "optuna-percentile",
    "optuna-successive-halving",
    "optuna-threshold",
    "katib-median",
]


class OptunaParams(StrictModel):
    """The `optuna:` block: Optuna's pruner arguments, with Optuna's names and defaults."""

    n_startup_trials: Int = Field(default=5, ge=0)
    n_warmup_steps: Int = Field(default=0, ge=0)
    interval_steps: Int = Field(default=1, ge=1)
    n_min_trials: Int = Field(default=1, ge=1)
    percentile: Number | None = Field(default=None, ge=0, le=100)  # optuna-percentile
    lower: Number | None = None  # optuna-threshold
    upper: Number | None = None
    min_resource: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"  # successive halving
    reduction_factor: Int = Field(default=4, ge=2)
    min_early_stopping_rate: Int = Field(default=0, ge=0)
    bootstrap_count: Int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _bootstrap_needs_a_min_resource(self) -> OptunaParams:
        if self.bootstrap_count > 0 and self.min_resource == "auto":
            raise ValueError("bootstrap_count > 0 needs an integer min_resource, not auto (Optuna)")
        return self


class KatibParams(StrictModel):
    """The `katib:` block: the medianstop service's settings, with Katib's names and defaults."""

    min_trials_required: Int = Field(default=3, ge=1)
    start_step: Int = Field(default=4, ge=1)


class Patience(StrictModel):
    """`patience:` — Optuna's PatientPruner around the rule."""

    patience: Int = Field(ge=0)
    min_delta: Number = Field(default=0.0, ge=0)


class CompletionCriteria(StrictModel):
    """`completion:` — SageMaker's TuningJobCompletionCriteria, for sweeps no service launches."""

    target_objective_value: Number | None = None
    max_jobs_not_improving: Int | None = Field(default=None, ge=1)
    stop_running: bool = False


class RuleSettings(StrictModel):
    """A rule and its parameters: the live one (`early_stopping`) or a shadow."""

    type: EarlyStoppingType = EarlyStoppingType.AUTO
    rule: RuleName = "sagemaker"
    min_jobs: Int = Field(default=3, ge=1)
    start_epoch: Int = Field(default=1, ge=1, le=1_000_000_000)
    optuna: OptunaParams = Field(default_factory=OptunaParams)
    katib: KatibParams = Field(default_factory=KatibParams)
    patience: Patience | None = None

    @model_validator(mode="after")
    def _rule_parameters(self) -> RuleSettings:
        optuna = self.optuna
        if self.rule == "optuna-percentile" and optuna.percentile is None:
            raise ValueError("optuna.percentile is required by rule optuna-percentile (0-100)")
        if self.rule == "optuna-threshold":
            if optuna.lower is None and optuna.upper is None:
                raise ValueError("optuna.lower or optuna.upper is required by optuna-threshold")
            if (
                optuna.lower is not None
                and optuna.upper is not None
                and optuna.lower > optuna.upper
            ):
                raise ValueError("optuna.lower must not be above optuna.upper")
        return self

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads a bare `Off` as false
            return EarlyStoppingType.OFF
        if value is True:
            raise ValueError("must be one of Auto, Off (any letter case)")
        return _enum_any_case(EarlyStoppingType)(value)


class EarlyStopping(RuleSettings):
    """SageMaker's early-stopping switch and the rule's parameters, and the shadow rules decided
    beside it and never acted on (`shadow`)."""

    completion: CompletionCriteria = Field(default_factory=CompletionCriteria)
    shadow: list[RuleSettings] = Field(default_factory=list, max_length=16)


class DockerSourceConfig(StrictModel):
    """Containers to follow through the Docker (or Podman) Engine API, chosen by label."""

    # at least one: an empty selection would follow every container on the host, the sidecar too
    labels: list[str] = Field(min_length=1)
    job_label: str = "sidecar.job"
    tuning_job_label: str = "sidecar.tuning_job"
    host: str | None = None


class SourceConfig(StrictModel):
    """Where `run` reads logs: a glob of files (`path`), or containers (`docker`)."""

    path: str | None = Field(default=None, min_length=1)
    format: Literal["plain", "docker-json", "cri", "auto"] = "auto"
    job: str = "{stem}"
    job_regex: str | None = None
    docker: DockerSourceConfig | None = None

    @field_validator("job_regex")
    @classmethod
    def _job_group(cls, value: str | None) -> str | None:
        if value is not None and "job" not in compile_user_regex(value).groupindex:
            raise ValueError("must have a named group (?P<job>...)")
        return value

    @field_validator("job")
    @classmethod
    def _path_placeholders(cls, value: str) -> str:
        check_placeholders(value, PATH_FIELDS)
        return value

    def template_groups(self) -> tuple[str, ...]:
        """What this source adds to stop templates: job_regex's groups, a container's names."""
        if self.job_regex is not None:
            return tuple(compile_user_regex(self.job_regex).groupindex)
        if self.docker is not None:
            return DOCKER_FIELDS
        return ()

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if (self.path is None) == (self.docker is None):
            raise ValueError(
                "set exactly one of `path` (a glob of log files) or `docker` (containers)"
            )
        return self


class SignalTarget(StrictModel):
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


class DockerTarget(StrictModel):
    """How the docker backend finds the container to stop."""

    container: str = "{job}"
    label: str | None = None  # e.g. `sidecar.job`: stop the container labelled sidecar.job=<job>
    host: str | None = None  # the Engine API; default DOCKER_HOST, else the local socket


class KubernetesTarget(StrictModel):
    """How the kubernetes backend finds the pod (or batch Job) to delete."""

    namespace: str = "default"
    pod: str = "{job}"
    job: str | None = None  # a template: delete this batch Job instead of the pod
    kubeconfig: str | None = None  # default: in-cluster config, else ~/.kube/config


class CommandTarget(StrictModel):
    """An argv template run without a shell."""

    argv: list[str] = Field(default_factory=list)
    timeout_seconds: Number = Field(default=30.0, gt=0, le=3600)

    @field_validator("argv")
    @classmethod
    def _fixed_program(cls, value: list[str]) -> list[str]:
        if value and "{" in value[0]:
            raise ValueError("argv[0], the program, must be fixed: templates only in arguments")
        return value


class Stop(StrictModel):
    """How a stop decision reaches the training job."""

    backend: Literal["signal", "docker", "kubernetes", "command", "none"] = "signal"
    grace_seconds: Number = Field(default=30.0, ge=0, le=86400)
    marker: str | None = None
    signal: SignalTarget = Field(default_factory=SignalTarget)
    docker: DockerTarget = Field(default_factory=DockerTarget)
    kubernetes: KubernetesTarget = Field(default_factory=KubernetesTarget)
    command: CommandTarget = Field(default_factory=CommandTarget)


class Http(StrictModel):
    """Where `/metrics`, `/healthz`, `/readyz` and the API are served."""

    host: str = "0.0.0.0"
    port: Int = Field(default=9108, ge=0, le=65535)
    # a file holding the token that allows POSTs (pushed values); without it every POST is 405
    token_file: str | None = None


class Config(StrictModel):
    """The whole configuration document."""

    tuning_job: str = Field(default="default", min_length=1)
    objective: Objective
    preset: str | None = None
    metric_definitions: list[MetricDefinition] = Field(default_factory=list)
    epoch: EpochConfig = Field(default_factory=EpochConfig)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    sources: list[SourceConfig] = Field(default_factory=list)
    stop: Stop = Field(default_factory=Stop)
    store: str = Field(default=DEFAULT_STORE, min_length=1)
    http: Http = Field(default_factory=Http)
    max_line_bytes: Int = Field(default=1 << 20, ge=64, le=64 << 20)
    # values held in memory while the store is unreachable; past this the sidecar stops reading
    max_buffered_values: Int = Field(default=100_000, ge=1, le=100_000_000)
    # distinct metric names kept per job (past it, new names are counted and skipped), and label
    # values per metric-labelled Prometheus series (past it, folded into `other`)
    max_metrics_per_job: Int = Field(default=1000, ge=1, le=1_000_000)
    max_metric_series: Int = Field(default=1000, ge=1, le=1_000_000)
    # `objective`: store only the objective's values, all the rule reads; `all` also keeps the
    # other metrics for `status --values` (each stored value costs a row write)
    store_metrics: Literal["all", "objective"] = "all"
    regex_timeout_seconds: Number = Field(default=0.1, gt=0, le=10)
    node: str | None = None
    idle_timeout_seconds: Number = Field(default=3600.0, ge=0)
    early_stopped_exit_code: Int = Field(default=0, ge=0, le=255)
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
            names = preset_names()
            if value not in names:
                raise ValueError(f"must be one of the built-in presets: {', '.join(names)}")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_placeholders(cls, stop: Stop, info: ValidationInfo) -> Stop:
        if "sources" not in info.data:
            return stop  # a source is invalid: that error says so; its groups are not known
        allowed = set(TEMPLATE_FIELDS)
        for source in info.data["sources"]:
            allowed.update(source.template_groups())
        for field, template in stop_templates(stop):
            try:
                check_placeholders(template, sorted(allowed))
            except ValueError as exc:
                # `[sub.field]` moves into the field's name in the message (see _describe)
                raise ValueError(f"[{field}] {exc}") from None
        return stop

    def all_definitions(self) -> list[MetricDefinition]:
        """The preset's definitions followed by the user's own."""
        if self.preset is None:
            return list(self.metric_definitions)
        return [*load_preset(self.preset).metric_definitions, *self.metric_definitions]

    def epoch_config(self) -> EpochConfig:
        """The user's epoch settings, else the preset's."""
        if self.epoch.regex is None and self.preset is not None:
            return load_preset(self.preset).epoch
        return self.epoch


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


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one would silently win)."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    # duplicates among the keys written in this mapping; a key overriding one merged in with
    # `<<` is YAML's intended use of merges, not a duplicate
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            continue  # unhashable: the constructor reports it
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (line {mark.line + 1}; first at line {seen[key]}): "
                "YAML would silently keep only the last one",
                mark,
            )
        seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(values, depth) of a composed document once its aliases are expanded, without expanding
    them: an alias is the very node it names, so each node's size is computed once."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()  # nodes whose children are being counted: met again, a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            if id(node) in open_nodes or any(id(c) in open_nodes for c in children):
                return MAX_DOCUMENT_NODES + 1, 0  # `x: &a [*a]`: it never ends
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_nodes.discard(id(node))
        size, depth = 1, 0
        for child in children:
            child_size, child_depth = sizes.get(id(child), (1, 0))
            size += child_size
            depth = max(depth, child_depth + 1)
        sizes[id(node)] = (min(size, MAX_DOCUMENT_NODES + 1), depth)
    return sizes[id(root)]


def parse_document(text: str, *, source: str) -> dict[str, Any]:
    """Parse YAML (JSON is YAML) into a mapping, or raise ConfigError: never a traceback, never
    an exponential blow-up (aliases), never a document nested too deep to handle."""
    try:
        loader = _Loader(text)  # the reader refuses NUL and other control characters here
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        size, depth = _expanded_size(node)
        if size > MAX_DOCUMENT_NODES:
            raise ConfigError(
                f"{source}: the document expands to more than {MAX_DOCUMENT_NODES:,} values "
                "(YAML aliases referring to aliases?): not a config"
            )
        if depth > MAX_DOCUMENT_DEPTH:
            raise ConfigError(
                f"{source}: the document is nested {depth} levels deep (at most "
                f"{MAX_DOCUMENT_DEPTH}): not a config"
            )
        document = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{source}: the document is nested too deeply to read: not a config"
        ) from None
    finally:
        loader.dispose()
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
    inner = regex.match(r"\[([\w.\[\]]+)\] ", message)
    if inner:  # a validator of a section naming the field inside it (its message has the value)
        return f"{field}.{inner.group(1)}: {message[inner.end() :]}"
    return f"{field}: {message}; got {_show(error.get('input'))}"


def _show(value: Any, limit: int = 200) -> str:
    """The value in JSON, at most `limit` characters, without ever walking more of it than
    that takes (a YAML document with aliases can be exponentially large once expanded)."""
    out: list[str] = []
    size = 0

    def emit(text: str) -> bool:
        nonlocal size
        out.append(text)
        size += len(text)
        return size <= limit

    def walk(node: Any, depth: int) -> bool:
        if depth > 20:
            return emit("...")
        if isinstance(node, Mapping):
            if not emit("{"):
                return False
            for i, (k, v) in enumerate(node.items()):
                if (i and not emit(", ")) or not emit(json.dumps(str(k)) + ": "):
                    return False
                if not walk(v, depth + 1):
                    return False
            return emit("}")
        if isinstance(node, list | tuple):
            if not emit("["):
                return False
            for i, v in enumerate(node):
                if (i and not emit(", ")) or not walk(v, depth + 1):
                    return False
            return emit("]")
        try:
            text = json.dumps(node, default=str)
        except (TypeError, ValueError):
            text = repr(node)
        return emit(text)

    walk(value, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def stop_templates(stop: Stop) -> list[tuple[str, str]]:
    """(field, template) for every templated field of the stop section."""
    found = [
        ("signal.pid_file", stop.signal.pid_file),
        ("signal.process_match", stop.signal.process_match),
        ("marker", stop.marker),
        ("docker.container", stop.docker.container),
        ("kubernetes.namespace", stop.kubernetes.namespace),
        ("kubernetes.pod", stop.kubernetes.pod),
        ("kubernetes.job", stop.kubernetes.job),
    ]
    found += [(f"command.argv[{i}]", a) for i, a in enumerate(stop.command.argv)]
    return [(field, t) for field, t in found if t]


SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish", "busybox", "csh", "tcsh"})


def config_warnings(config: Config) -> list[str]:
    """What is valid but probably wrong: said by `check` and logged by `run` at start."""
    warnings = []
    argv = config.stop.command.argv
    if argv and argv[0].rsplit("/", 1)[-1] in SHELLS and any(placeholders(a) for a in argv[1:]):
        warnings.append(
            f"stop.command.argv[0] is a shell ({argv[0]!r}): a placeholder inside its script is "
            "shell code, and a job name holding `;` or `$(...)` would run as a command; put "
            "the program itself in argv[0] and each value in an argument of its own"
        )
    return warnings
