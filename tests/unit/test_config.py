"""Config validation: SageMaker spellings, defaults, environment overrides, one clear error per field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import Config, EarlyStoppingType, ObjectiveType, load_config
from sidecar.errors import ConfigError
from sidecar.templates import render_template

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = "objective: {metric: val_loss}\n"


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(text, env=env or {}, source="test.yaml")


class TestDefaults:
    def test_minimal_config_gets_documented_defaults(self) -> None:
        """Only the objective metric is required; everything else has its documented default."""
        config = load(MINIMAL)
        assert config.tuning_job == "default"
        assert config.objective.type is ObjectiveType.MINIMIZE
        assert config.early_stopping.type is EarlyStoppingType.AUTO
        assert config.early_stopping.rule == "sagemaker"
        assert config.early_stopping.min_jobs == 3
        assert config.early_stopping.start_epoch == 1
        assert config.store == "sqlite:///var/lib/sidecar/history.db"
        assert (config.http.host, config.http.port) == ("0.0.0.0", 9108)
        assert config.max_line_bytes == 1 << 20
        assert config.stop.backend == "signal"
        assert config.stop.grace_seconds == 30
        assert config.epoch.offset == 0

    def test_design_example_config_is_valid(self) -> None:
        """The full example configuration (docs/configuration.md) loads as it is."""
        config = load((ROOT / "tests" / "golden" / "design_example.yaml").read_text())
        assert config.tuning_job == "xgb-hpo-42"
        assert config.objective.type is ObjectiveType.MAXIMIZE
        assert config.preset == "xgboost"
        assert [d.name for d in config.all_definitions()][-1] == "validation:auc"

    def test_json_is_accepted(self) -> None:
        """A JSON document is valid YAML and loads the same."""
        config = load('{"tuning_job": "j", "objective": {"metric": "m", "type": "Maximize"}}')
        assert config.tuning_job == "j"
        assert config.objective.type is ObjectiveType.MAXIMIZE


class TestSageMakerSpellings:
    @pytest.mark.parametrize("word", ["Maximize", "maximize", "MAXIMIZE", "MaXiMiZe"])
    def test_objective_type_in_any_case(self, word: str) -> None:
        """`Minimize`/`Maximize` are SageMaker's words, accepted in any letter case."""
        assert (
            load(f"objective: {{metric: m, type: {word}}}").objective.type is ObjectiveType.MAXIMIZE
        )

    @pytest.mark.parametrize(
        ("word", "expected"),
        [
            ("Off", EarlyStoppingType.OFF),
            ("AUTO", EarlyStoppingType.AUTO),
            ("off", EarlyStoppingType.OFF),
        ],
    )
    def test_early_stopping_type_in_any_case(self, word: str, expected: EarlyStoppingType) -> None:
        """`Auto`/`Off` in any letter case."""
        assert load(MINIMAL + f"early_stopping: {{type: {word}}}").early_stopping.type is expected

    @pytest.mark.parametrize("keys", [("Name", "Regex"), ("name", "regex"), ("NAME", "REGEX")])
    def test_metric_definition_keys_in_any_case(self, keys: tuple[str, str]) -> None:
        """SageMaker's `{Name, Regex}` pasted as they are, or in lower case."""
        name, regex = keys
        config = load(
            MINIMAL
            + f"metric_definitions:\n  - {{{name}: val_loss, {regex}: 'val_loss=([0-9.]+)'}}\n"
        )
        assert config.metric_definitions[0].name == "val_loss"
        assert config.metric_definitions[0].regex == "val_loss=([0-9.]+)"


class TestEnvironmentOverrides:
    def test_top_level_string_field(self) -> None:
        """SIDECAR_<FIELD> overrides a top-level field."""
        config = load(
            MINIMAL + "tuning_job: from-file\n",
            {"SIDECAR_TUNING_JOB": "from-env", "SIDECAR_STORE": "sqlite://x.db"},
        )
        assert config.tuning_job == "from-env"
        assert config.store == "sqlite://x.db"

    def test_structured_field_is_read_as_yaml(self) -> None:
        """Structured and numeric fields take YAML text."""
        config = load(
            MINIMAL,
            {
                "SIDECAR_OBJECTIVE": "{metric: acc, type: Maximize}",
                "SIDECAR_MAX_LINE_BYTES": "4096",
            },
        )
        assert config.objective.metric == "acc"
        assert config.max_line_bytes == 4096

    def test_nested_field_with_double_underscore(self) -> None:
        """SIDECAR_<FIELD>__<SUBFIELD> overrides one nested field and keeps its siblings."""
        config = load(
            MINIMAL + "early_stopping: {min_jobs: 5, start_epoch: 2}\n",
            {"SIDECAR_EARLY_STOPPING__MIN_JOBS": "7"},
        )
        assert config.early_stopping.min_jobs == 7
        assert config.early_stopping.start_epoch == 2

    def test_unrelated_environment_is_ignored(self) -> None:
        """Other SIDECAR_ variables (e.g. test settings) do not make the config invalid."""
        assert (
            load(MINIMAL, {"SIDECAR_TEST_POSTGRES_DSN": "x", "PATH": "/bin"}).tuning_job
            == "default"
        )

    def test_bad_environment_value_names_the_field(self) -> None:
        """A wrong override fails like a wrong file value."""
        with pytest.raises(ConfigError, match=r"http\.port"):
            load(MINIMAL, {"SIDECAR_HTTP__PORT": "70000"})


# (config text, fragments the one error message must contain)
BAD = [
    pytest.param(
        "objective: {metric: m, type: Minimise}",
        ["objective.type", "Minimise", "Minimize, Maximize"],
        id="bad-direction",
    ),
    pytest.param("{}", ["objective", "required"], id="missing-objective"),
    pytest.param(
        MINIMAL + "early_stopping: {min_jobs: 0}",
        ["early_stopping.min_jobs", "0", "greater than or equal to 1"],
        id="min-jobs-zero",
    ),
    pytest.param(
        MINIMAL + "early_stopping: {rule: vizier}",
        ["early_stopping.rule", "vizier", "sagemaker"],
        id="unknown-rule",
    ),
    pytest.param(
        MINIMAL + "early_stopping: {type: Sometimes}",
        ["early_stopping.type", "Sometimes", "Auto, Off"],
        id="bad-es-type",
    ),
    pytest.param(
        MINIMAL + "objectve: {metric: m}",
        ["objectve", "unknown field", "objective"],
        id="typo-top-level",
    ),
    pytest.param(
        MINIMAL + "metric_definitions: [{Name: a, Regex: 'x=([0-9]'}]",
        ["metric_definitions[0].regex", "valid regular expression", "x=([0-9]"],
        id="regex-does-not-compile",
    ),
    pytest.param(
        MINIMAL + "metric_definitions: [{Name: a, Regex: 'x=[0-9]+'}]",
        ["metric_definitions[0].regex", "capture group"],
        id="regex-without-group",
    ),
    pytest.param(
        MINIMAL + "metric_definitions: [{Name: '{set}:auc', Regex: 'auc=([0-9]+)'}]",
        ["metric_definitions[0]", "set", "named groups"],
        id="template-placeholder-not-a-group",
    ),
    pytest.param(
        MINIMAL + "metric_definitions: [{Name: a, Regex: 'a=(1)', Extra: 1}]",
        ["metric_definitions[0].extra", "unknown field", "Name, Regex"],
        id="unknown-definition-key",
    ),
    pytest.param(
        MINIMAL + "sources: [{path: '/x/*.log', format: json}]",
        ["sources[0].format", "json", "docker-json"],
        id="bad-format",
    ),
    pytest.param(
        MINIMAL + "stop: {backend: slurm}",
        ["stop.backend", "slurm", "kubernetes"],
        id="bad-backend",
    ),
    pytest.param(
        MINIMAL + "http: {port: http}", ["http.port", "http", "integer"], id="port-not-a-number"
    ),
    pytest.param(
        MINIMAL + "preset: tensorflow-magic",
        ["preset", "tensorflow-magic", "xgboost"],
        id="unknown-preset",
    ),
    pytest.param(
        MINIMAL + "epoch: {regex: 'Epoch \\d+'}",
        ["epoch.regex", "capture group"],
        id="epoch-regex-without-group",
    ),
    pytest.param("- a\n- b\n", ["top level must be a mapping"], id="not-a-mapping"),
    pytest.param("objective: [unclosed", ["not valid YAML"], id="not-yaml"),
]


class TestErrors:
    @pytest.mark.parametrize(("text", "fragments"), BAD)
    def test_wrong_config_names_field_value_and_what_is_allowed(
        self, text: str, fragments: list[str]
    ) -> None:
        """A wrong config raises ConfigError (exit 2) whose message names the field, the value and what is allowed."""
        with pytest.raises(ConfigError) as info:
            load(text)
        message = str(info.value)
        assert info.value.exit_code == 2
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"


class TestTemplates:
    @pytest.mark.parametrize(
        ("template", "values", "expected"),
        [
            ("/run/training/{job}.pid", {"job": "j1"}, "/run/training/j1.pid"),
            ("{tuning_job}-{job}", {"job": "a", "tuning_job": "t"}, "t-a"),
            ("{job}-{unknown}", {"job": "a"}, "a-{unknown}"),
            (r"^x{2}\d{1,3} {job}{job}", {"job": "a"}, r"^x{2}\d{1,3} aa"),  # a regex's braces
            ("{job}", {"job": "{tuning_job}"}, "{tuning_job}"),  # a value is not filled again
            ("", {"job": "a"}, ""),
            ("no placeholders {}", {}, "no placeholders {}"),
        ],
    )
    def test_render_template_fills_known_placeholders(
        self, template: str, values: dict[str, str], expected: str
    ) -> None:
        """Known placeholders are filled; unknown ones are kept verbatim."""
        assert render_template(template, values) == expected
