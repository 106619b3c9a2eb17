"""A corpus of malformed configs through the real CLI: each one exits 2 with one message naming
the field (or saying what is wrong with the document), never a traceback, a hang or a blow-up.

Every case runs `python -m sidecar replay -c CFG LOG` (or `run -c CFG` where the problem only
shows when the daemon starts: the HTTP address) as a subprocess with its address space capped,
so an exponential expansion fails fast instead of eating the machine, and with a timeout, so a
hang is a failure. Valid configs that look wrong are in the corpus too: they must be accepted.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 60  # seconds: a config error takes well under one; reaching this is a hang
ADDRESS_SPACE = 1_000_000_000  # bytes: a python importing the sidecar needs a fraction of it
PREFIX = "sidecar: config error:"

BASE = """\
objective: {metric: loss}
metric_definitions:
  - {Name: loss, Regex: 'loss=([0-9.]+)'}
"""
"""A valid config; a case's text is appended to it unless the case says `whole`."""

LOG = "epoch 1 loss=0.9\nepoch 2 loss=0.5\nepoch 3 loss=0.3\n"


@dataclass(frozen=True)
class Case:
    """One malformed config and what its single error message must say."""

    document: str | bytes
    names: str  # the field, or what is wrong with the document, the message must contain
    whole: bool = False  # the document is the whole config, not an addition to BASE
    command: str = "replay"
    is_field: bool = True  # `names` is a field: the message starts with it
    one_line: bool = True  # a YAML parser's error spans lines (the mark, a caret)
    more: tuple[str, ...] = ()  # further problems, one line each (two fields both missing)
    env: dict[str, str] = field(default_factory=dict)
    memory: int = ADDRESS_SPACE  # the child's address-space cap, bytes

    def text(self) -> bytes:
        raw = self.document if isinstance(self.document, bytes) else self.document.encode()
        return raw if self.whole else BASE.encode() + raw


def bad(case_id: str, document: str | bytes, names: str, **options: Any) -> Any:
    """A corpus entry: pytest.param of a Case with a readable id (`marks=` passes through)."""
    marks = options.pop("marks", ())
    return pytest.param(Case(document, names, **options), id=case_id, marks=marks)


def document_problem(case_id: str, document: str | bytes, says: str, **options: Any) -> Any:
    """A corpus entry whose problem is the document itself, not a field."""
    return bad(case_id, document, says, whole=True, is_field=False, **options)


def yaml_problem(case_id: str, document: str | bytes, says: str, **options: Any) -> Any:
    """A corpus entry the YAML parser refuses: its message spans lines (the place, a caret)."""
    return bad(case_id, document, says, is_field=False, one_line=False, **options)


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """YAML's "billion laughs": each anchor a list of `width` aliases to the previous one."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return BASE + "\n".join(lines) + "\n"


def flow_mappings(depth: int) -> str:
    """`stop: {a: {a: ... 1}}`, `depth` mappings deep."""
    return BASE + "stop: " + "{a: " * depth + "1" + "}" * depth + "\n"


def block_mappings(depth: int) -> str:
    """The same nesting in block style: one indentation level per mapping."""
    return BASE + "\n".join(f"{'  ' * i}k{i}:" for i in range(depth)) + " 1\n"


def definitions(*entries: str, objective: str = "{metric: loss}") -> str:
    """A whole config with these metric definitions (flow mappings) and objective."""
    return f"objective: {objective}\nmetric_definitions: [{', '.join(entries)}]\n"


LOSS = "{Name: loss, Regex: 'loss=([0-9.]+)'}"
NAMESPACE_REGEX = "job_regex: '(?P<namespace>[a-z]+)-(?P<job>.+)'"

FIELD_PROBLEMS = [
    # numbers: NaN, infinities, bools and out-of-range values refused, the field named
    bad("timeout-inf", "regex_timeout_seconds: .inf\n", "regex_timeout_seconds"),
    bad("timeout-nan", "regex_timeout_seconds: .nan\n", "regex_timeout_seconds"),
    bad("timeout-minus-inf", "regex_timeout_seconds: -.inf\n", "regex_timeout_seconds"),
    bad("timeout-zero", "regex_timeout_seconds: 0\n", "regex_timeout_seconds"),
    bad("timeout-over-10", "regex_timeout_seconds: 11\n", "regex_timeout_seconds"),
    bad("timeout-bool", "regex_timeout_seconds: true\n", "regex_timeout_seconds"),
    bad("timeout-word", "regex_timeout_seconds: fast\n", "regex_timeout_seconds"),
    bad("idle-timeout-inf", "idle_timeout_seconds: .inf\n", "idle_timeout_seconds"),
    bad("idle-timeout-nan", "idle_timeout_seconds: .nan\n", "idle_timeout_seconds"),
    bad("port-bool", "http: {port: true}\n", "http.port"),
    bad("port-over-65535", "http: {port: 70000}\n", "http.port"),
    bad("port-negative", "http: {port: -1}\n", "http.port"),
    bad("port-fraction", "http: {port: 80.5}\n", "http.port"),
    bad("port-nan", "http: {port: .nan}\n", "http.port"),
    bad("port-word", "http: {port: http}\n", "http.port"),
    bad("http-not-a-mapping", "http: 9108\n", "http"),
    bad("offset-huge", "epoch: {offset: 99999999999999999999}\n", "epoch.offset"),
    bad("offset-inf", "epoch: {offset: .inf}\n", "epoch.offset"),
    bad("offset-bool", "epoch: {offset: false}\n", "epoch.offset"),
    bad("min-jobs-bool", "early_stopping: {min_jobs: true}\n", "early_stopping.min_jobs"),
    bad("min-jobs-zero", "early_stopping: {min_jobs: 0}\n", "early_stopping.min_jobs"),
    bad("start-epoch-zero", "early_stopping: {start_epoch: 0}\n", "early_stopping.start_epoch"),
    bad("max-line-bytes-1", "max_line_bytes: 1\n", "max_line_bytes"),
    bad("max-buffered-zero", "max_buffered_values: 0\n", "max_buffered_values"),
    bad("metric-series-huge", "max_metric_series: 1e9\n", "max_metric_series"),
    bad("exit-code-256", "early_stopped_exit_code: 256\n", "early_stopped_exit_code"),
    bad("grace-negative", "stop: {grace_seconds: -1}\n", "stop.grace_seconds"),
    bad(
        "command-timeout-zero",
        "stop: {command: {argv: [kill], timeout_seconds: 0}}\n",
        "stop.command.timeout_seconds",
    ),
    # enumerations
    bad("es-type-maybe", "early_stopping: {type: Maybe}\n", "early_stopping.type"),
    bad("es-type-bare-on", "early_stopping: {type: On}\n", "early_stopping.type"),
    bad("es-rule", "early_stopping: {rule: hyperband}\n", "early_stopping.rule"),
    bad("log-level", "log_level: verbose\n", "log_level"),
    bad("stop-backend", "stop: {backend: ssh}\n", "stop.backend"),
    bad("signal-scope", "stop: {signal: {scope: everything}}\n", "stop.signal.scope"),
    bad("store-mysql", "store: 'mysql://x'\n", "store"),
    bad("preset-unknown", "preset: no-such-preset\n", "preset"),
    bad("tuning-job-empty", "tuning_job: ''\n", "tuning_job"),
    # unknown keys: a typo must not silently fall back to a default
    bad("unknown-top-level-key", "objective_metric: loss\n", "objective_metric"),
    bad("unknown-nested-key", "http: {prot: 9108}\n", "http.prot"),
    bad("unknown-deep-key", "stop: {signal: {pidfile: /run/x.pid}}\n", "stop.signal.pidfile"),
    # placeholders: a typo would stay literal text (every file one job named `{stme}`)
    bad("source-job", "sources: [{path: /x/*.log, job: '{stme}'}]\n", "sources[0].job"),
    bad("pid-file", "stop: {signal: {pid_file: '/run/{jbo}.pid'}}\n", "stop.signal.pid_file"),
    bad(
        "process-match",
        "stop: {signal: {process_match: 'train --name {jbo}'}}\n",
        "stop.signal.process_match",
    ),
    bad("marker", "stop: {marker: '/tmp/{jbo}.stop'}\n", "stop.marker"),
    bad(
        "command-argv",
        "stop: {backend: command, command: {argv: [kill, '{pdi}']}}\n",
        "stop.command.argv[1]",
    ),
    bad(
        "command-argv0-templated",
        "stop: {backend: command, command: {argv: ['{job}', x]}}\n",
        "stop.command.argv",
    ),
    bad(
        "docker-container",
        "stop: {backend: docker, docker: {container: 'trainer-{jbo}'}}\n",
        "stop.docker.container",
    ),
    bad(
        "kubernetes-pod",
        "stop: {backend: kubernetes, kubernetes: {pod: '{jbo}-0'}}\n",
        "stop.kubernetes.pod",
    ),
    bad(
        "kubernetes-namespace",
        "stop: {backend: kubernetes, kubernetes: {namespace: '{ns}'}}\n",
        "stop.kubernetes.namespace",
    ),
    bad(
        "kubernetes-job",
        "stop: {backend: kubernetes, kubernetes: {job: '{jbo}'}}\n",
        "stop.kubernetes.job",
    ),
    bad(
        "group-no-source-provides",
        "sources: [{path: /x/*.log, job_regex: '(?P<job>[a-z]+)'}]\n"
        "stop: {marker: '/tmp/{namespace}/{job}.stop'}\n",
        "stop.marker",
    ),
    bad(
        "bad-source-does-not-add-a-template-problem",
        f"sources: [{{path: /x/*.log, format: json, {NAMESPACE_REGEX}}}]\n"
        "stop: {marker: '/tmp/{namespace}/{job}.stop'}\n",
        "sources[0].format",
    ),
    # sources
    bad("source-both-kinds", "sources: [{path: /x, docker: {labels: [a=b]}}]\n", "sources[0]"),
    bad("source-neither-kind", "sources: [{format: plain}]\n", "sources[0]"),
    bad("docker-no-labels", "sources: [{docker: {labels: []}}]\n", "sources[0].docker.labels"),
    bad("source-format", "sources: [{path: /x/*.log, format: json}]\n", "sources[0].format"),
    bad(
        "job-regex-no-job-group",
        "sources: [{path: /x/*.log, job_regex: '(?P<name>.+)'}]\n",
        "sources[0].job_regex",
    ),
    bad(
        "job-regex-invalid",
        "sources: [{path: /x/*.log, job_regex: '(?P<job>['}]\n",
        "sources[0].job_regex",
    ),
    bad("sources-not-a-list", "sources: /x/*.log\n", "sources"),
    # metric definitions and the objective
    bad(
        "regex-does-not-compile",
        definitions("{Name: loss, Regex: 'loss=(['}"),
        "metric_definitions[0].regex",
        whole=True,
    ),
    bad(
        "regex-without-group",
        definitions("{Name: loss, Regex: 'loss=[0-9.]+'}"),
        "metric_definitions[0].regex",
        whole=True,
    ),
    bad(
        "second-definition-broken",
        definitions(LOSS, "{Name: acc, Regex: 'acc=(['}"),
        "metric_definitions[1].regex",
        whole=True,
    ),
    bad(
        "definition-without-regex",
        definitions("{Name: loss}"),
        "metric_definitions[0].regex",
        whole=True,
    ),
    bad(
        "definition-without-name",
        definitions("{Regex: 'loss=([0-9.]+)'}"),
        "metric_definitions[0].name",
        whole=True,
    ),
    bad(
        "definition-empty",
        definitions("{}"),
        "metric_definitions[0].name",
        whole=True,
        more=("metric_definitions[0].regex",),  # both are missing: two problems, both named
    ),
    bad(
        "jsonl-with-regex",
        definitions("{Name: loss, kind: jsonl, Regex: 'x=(1)'}"),
        "metric_definitions[0].regex",
        whole=True,
    ),
    bad(
        "name-placeholder-not-a-group",
        definitions(
            "{Name: '{set}:loss', Regex: 'loss=([0-9.]+)'}", objective="{metric: 'a:loss'}"
        ),
        "metric_definitions[0]",
        whole=True,
    ),
    bad(
        "keys-differing-in-case",
        definitions("{Name: loss, Regex: 'loss=([0-9.]+)', REGEX: 'x=(1)'}"),
        "metric_definitions[0]",
        whole=True,
    ),
    bad(
        "definitions-not-a-list",
        "objective: {metric: loss}\nmetric_definitions: {}\n",
        "metric_definitions",
        whole=True,
    ),
    bad("epoch-regex-without-group", "epoch: {regex: 'Epoch [0-9]+'}\n", "epoch.regex"),
    bad("objective-missing", "tuning_job: t\n", "objective", whole=True),
    bad(
        "objective-empty",
        definitions(LOSS, objective="{metric: ''}"),
        "objective.metric",
        whole=True,
    ),
    bad(
        "objective-type",
        definitions(LOSS, objective="{metric: loss, type: Up}"),
        "objective.type",
        whole=True,
    ),
    bad(
        "objective-no-definition-produces",
        definitions(LOSS, objective="{metric: accuracy}"),
        "objective.metric",
        whole=True,
    ),
    bad(
        "objective-without-definitions",
        "objective: {metric: loss}\n",
        "objective.metric",
        whole=True,
    ),
    # environment overrides: the same checks, and the variable named
    bad(
        "env-timeout-nan",
        "",
        "regex_timeout_seconds",
        env={"SIDECAR_REGEX_TIMEOUT_SECONDS": ".nan"},
    ),
    bad("env-port-bool", "", "http.port", env={"SIDECAR_HTTP__PORT": "true"}),
]

DOCUMENT_PROBLEMS = [
    document_problem("document-is-a-list", "- objective\n- loss\n", "top level must be a mapping"),
    document_problem("document-is-a-string", "just a sentence\n", "top level must be a mapping"),
    document_problem("invalid-utf8", b"objective: {metric: \xff\xfe}\n", "not UTF-8"),
    document_problem("billion-laughs", alias_bomb(), "expands to more than"),
    document_problem("open-brackets-20000-deep", BASE + "x: " + "[" * 20_000 + "\n", "nested"),
    document_problem(
        "brackets-20000-deep-closed", BASE + "x: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested"
    ),
    document_problem("flow-mappings-200-deep", flow_mappings(200), "nested"),
    document_problem("block-mappings-200-deep", block_mappings(200), "nested"),
    document_problem(
        "recursive-alias",
        BASE + "x: &a [*a]\n",
        "not a config",
        memory=ADDRESS_SPACE // 3,  # the unbounded loop reaches the cap sooner (300 MB is ample)
    ),
    yaml_problem("unclosed-flow-mapping", "x: {a: 1\n", "not valid YAML or JSON"),
    yaml_problem(
        "broken-json", '{"objective": {"metric": "loss",}\n', "not valid YAML or JSON", whole=True
    ),
    yaml_problem("tab-indentation", "stop:\n\t backend: none\n", "not valid YAML or JSON"),
    yaml_problem("two-documents", "---\nhttp: {port: 1}\n", "not valid YAML or JSON"),
    yaml_problem("python-tag", "x: !!python/object:os.system {}\n", "not valid YAML or JSON"),
    yaml_problem("unhashable-key", "? [a, b]\n: 1\n", "not valid YAML or JSON"),
    yaml_problem("undefined-alias", "x: *nowhere\n", "not valid YAML or JSON"),
    yaml_problem("nul-byte", b"x: lo\x00ss\n", "not valid YAML or JSON"),
    yaml_problem("escape-character", b"x: \x1b[31mred\n", "not valid YAML or JSON"),
    yaml_problem(
        "duplicate-top-level-key", "objective: {metric: loss}\n", "duplicate key 'objective'"
    ),
    yaml_problem(
        "duplicate-nested-key", "http: {port: 9100, port: 9200}\n", "duplicate key 'port'"
    ),
    yaml_problem(
        "duplicate-deep-key",
        "stop:\n  signal:\n    pid_file: /a\n    scope: group\n    pid_file: /b\n",
        "duplicate key 'pid_file'",
    ),
]

# the HTTP address is only checked when the daemon binds it
RUN_PROBLEMS = [
    bad("host-not-an-address", "http: {host: 256.1.1.1, port: 0}\n", "http.host", command="run"),
    bad(
        "host-unresolvable",
        "http: {host: no-such-host.invalid, port: 0}\n",
        "http.host",
        command="run",
    ),
    bad("host-not-this-hosts", "http: {host: 192.0.2.1, port: 0}\n", "http.host", command="run"),
    bad("host-empty", "http: {host: '', port: 0}\n", "http.host", command="run"),
]


def run_sidecar(
    *args: str | Path, env: dict[str, str] | None = None, memory: int = ADDRESS_SPACE
) -> subprocess.CompletedProcess[str]:
    """`python -m sidecar ARGS`, its address space capped; a hang is a test failure."""

    def limit_memory() -> None:  # in the child, before exec: a blow-up hits this, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    full_env.update(env or {})
    try:
        return subprocess.run(
            [sys.executable, "-m", "sidecar", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=TIMEOUT,
            preexec_fn=limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`sidecar {' '.join(map(str, args))}` still running after {TIMEOUT} s")


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"


@pytest.fixture
def tiny_log(tmp_path: Path) -> Path:
    """A three-epoch log the base config extracts `loss` from."""
    log = tmp_path / "job-1.log"
    log.write_text(LOG)
    return log


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    return path


def run_case(case: Case, config: Path, log: Path) -> subprocess.CompletedProcess[str]:
    if case.command == "run":
        return run_sidecar("run", "-c", config, env=case.env, memory=case.memory)
    return run_sidecar("replay", "-c", config, log, env=case.env, memory=case.memory)


@pytest.mark.parametrize(
    "case",
    [
        *FIELD_PROBLEMS,
        *DOCUMENT_PROBLEMS,
        *(pytest.param(*p.values, id=p.id) for p in RUN_PROBLEMS),
    ],
)
def test_malformed_config_exits_2_with_one_message_naming_the_problem(
    case: Case, tmp_path: Path, tiny_log: Path
) -> None:
    """A malformed config ends the command with exit 2 and stderr is one `config error` message
    naming the field (or what is wrong with the document): no traceback, no hang, no blow-up."""
    config = write_bytes(tmp_path, case.text())
    result = run_case(case, config, tiny_log)
    assert result.returncode == 2, shown(result)
    assert result.stderr.startswith(PREFIX), shown(result)
    assert result.stderr.count(PREFIX) == 1, shown(result)
    assert "Traceback" not in result.stderr + result.stdout, shown(result)
    assert case.names in result.stderr, shown(result)
    lines = result.stderr.strip().splitlines()
    if case.one_line:
        assert len(lines) == 1 + len(case.more), shown(result)
    if case.is_field:  # the message is about the field: it comes first (after the file's name)
        where = "" if case.command == "run" else f" {config}:"
        assert lines[0].startswith(f"{PREFIX}{where} {case.names}:"), shown(result)
        for line, name in zip(lines[1:], case.more, strict=True):
            assert line.startswith(f"{name}:"), shown(result)
    for variable in case.env:
        assert f"(set by the environment variable {variable})" in result.stderr, shown(result)


@pytest.mark.parametrize("case", RUN_PROBLEMS)
def test_daemon_refuses_an_unusable_http_address_with_exit_2_naming_it(
    case: Case, tmp_path: Path
) -> None:
    """`run` with an HTTP address it cannot bind exits 2, its last words a config error naming
    http.host, before it reads or stops anything."""
    result = run_case(case, write_bytes(tmp_path, case.text()), tmp_path / "unused.log")
    assert result.returncode == 2, shown(result)
    assert result.stderr.strip().splitlines()[-1].startswith(f"{PREFIX} {case.names}:"), shown(
        result
    )
    assert result.stderr.count(PREFIX) == 1, shown(result)
    assert "Traceback" not in result.stderr, shown(result)
    assert '"started"' not in result.stderr, shown(result)


def test_daemon_refuses_a_port_in_use_with_exit_2_naming_http_port(tmp_path: Path) -> None:
    """`run` on a port another socket listens on exits 2 with a config error naming http.port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = BASE + f"http: {{host: 127.0.0.1, port: {port}}}\n"
        result = run_sidecar("run", "-c", write_bytes(tmp_path, text.encode()))
    assert result.returncode == 2, shown(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{PREFIX} http.port: port {port} on 127.0.0.1"), shown(result)
    assert "Traceback" not in result.stderr, shown(result)


def _with_objective(addition: str) -> str:
    """BASE plus an addition; an addition setting `objective` replaces BASE's."""
    if addition.startswith("objective:"):
        return BASE.replace("objective: {metric: loss}\n", "") + addition
    return BASE + addition


VALID = [
    pytest.param(
        "stop: {signal: {process_match: 'train\\.py --trial [0-9]{2} --job {job}'}}\n",
        id="regex-quantifier-is-not-a-placeholder",
    ),
    pytest.param(
        f"sources: [{{path: '/x/*.log', {NAMESPACE_REGEX}}}]\n"
        "stop: {marker: '/tmp/{namespace}/{job}.stop'}\n",
        id="marker-placeholder-from-job-regex-group",
    ),
    pytest.param(
        f"sources: [{{path: '/x/*.log', {NAMESPACE_REGEX}}}]\n"
        "stop: {backend: kubernetes, kubernetes: {namespace: '{namespace}', pod: '{job}'}}\n",
        id="kubernetes-namespace-from-job-regex-group",
    ),
    pytest.param(
        "sources: [{docker: {labels: [sidecar.job]}}]\n"
        "stop: {backend: docker, docker: {container: '{container_id}'}}\n",
        id="container-placeholder-from-docker-source",
    ),
    pytest.param("early_stopping: {type: Off}\n", id="type-off-bare-is-yaml-false"),
    pytest.param("early_stopping: {type: OFF}\n", id="type-off-upper-case"),
    pytest.param("objective: {metric: loss, type: minimize}\n", id="objective-type-lower-case"),
    pytest.param("http: {<<: {port: 0}, host: 127.0.0.1}\n", id="merge-key"),
    pytest.param(
        "sources:\n  - &src {path: '/a/*.log', format: plain}\n  - {<<: *src, path: '/b/*.log'}\n",
        id="merge-key-overridden",
    ),
    pytest.param(
        "max_line_bytes: 64\nregex_timeout_seconds: 10\nhttp: {port: 65535}\n",
        id="bounds-are-inclusive",
    ),
    pytest.param("http: {port: 9108.0}\n", id="port-integral-float"),
    pytest.param("tuning_job: &t hpo-1\nnode: *t\n", id="small-alias"),
]


@pytest.mark.parametrize("addition", VALID)
def test_tricky_but_valid_config_is_accepted(addition: str, tmp_path: Path, tiny_log: Path) -> None:
    """A config that looks wrong but is valid (a regex quantifier in a template, a placeholder a
    source's group provides, a bare `Off`, a merge key) replays: exit 0, a JSON document."""
    config = write_bytes(tmp_path, _with_objective(addition).encode())
    result = run_sidecar("replay", "-c", config, "--json", tiny_log)
    assert result.returncode == 0, shown(result)
    assert [job["job"] for job in json.loads(result.stdout)["jobs"]] == ["job-1"]


def _as_json(text: str) -> str:
    del text
    return json.dumps(
        {
            "objective": {"metric": "loss"},
            "metric_definitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
        }
    )


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda text: "\ufeff" + text, id="utf8-byte-order-mark"),
        pytest.param(lambda text: text.replace("\n", "\r\n"), id="crlf-line-ends"),
        pytest.param(_as_json, id="json-document"),
    ],
)
def test_config_as_other_editors_write_it_is_accepted(
    transform: Callable[[str], str], tmp_path: Path, tiny_log: Path
) -> None:
    """A byte-order mark, Windows line ends or JSON do not make a valid config invalid."""
    config = write_bytes(tmp_path, transform(BASE).encode())
    result = run_sidecar("replay", "-c", config, "--json", tiny_log)
    assert result.returncode == 0, shown(result)
    assert json.loads(result.stdout)["jobs"][0]["job"] == "job-1"


def test_corpus_ids_are_unique() -> None:
    """Every case has an id of its own (a copied line would otherwise hide one)."""
    ids = [p.id for p in [*FIELD_PROBLEMS, *DOCUMENT_PROBLEMS, *RUN_PROBLEMS]]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40
