"""The commands as a user runs them: real subprocesses, real files, exit codes and output."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE_LOGS

Run = Callable[..., subprocess.CompletedProcess[str]]
QUICKSTART = SAMPLE_LOGS / "quickstart"
QUICKSTART_LOGS = sorted(QUICKSTART.glob("*.log"))
GOLDEN = ROOT / "tests" / "golden"


class TestReplayCommand:
    def test_json_matches_golden_document(self, run_cli: Run) -> None:
        """`replay --json` on the quickstart logs prints exactly the stored expected document."""
        result = run_cli("replay", "-c", QUICKSTART / "config.yaml", "--json", *QUICKSTART_LOGS)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == json.loads(
            (GOLDEN / "quickstart.replay.json").read_text()
        )

    def test_table_names_stopped_jobs_and_savings(self, run_cli: Run) -> None:
        """The readable table shows each job, its status and a summary line."""
        result = run_cli("replay", "-c", QUICKSTART / "config.yaml", *QUICKSTART_LOGS)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("tuning job quickstart: objective val_loss (Minimize)")
        stopped = [line.split()[1] for line in lines if " Stopped " in line]
        assert stopped == ["job-05-lr-0.300", "job-07-lr-0.0005"]
        assert "2 of 8 jobs stopped" in lines[-1]

    def test_env_override_changes_the_outcome(self, run_cli: Run) -> None:
        """SIDECAR_EARLY_STOPPING__TYPE=Off: same logs, nothing stopped."""
        result = run_cli(
            "replay",
            "-c",
            QUICKSTART / "config.yaml",
            "--json",
            *QUICKSTART_LOGS,
            env={"SIDECAR_EARLY_STOPPING__TYPE": "Off"},
        )
        assert result.returncode == 0, result.stderr
        assert {j["status"] for j in json.loads(result.stdout)["jobs"]} == {"Completed"}

    def test_missing_log_is_an_error_without_traceback(self, run_cli: Run, tmp_path: Path) -> None:
        """A log that cannot be read: exit 1, one line naming it."""
        result = run_cli("replay", "-c", QUICKSTART / "config.yaml", tmp_path / "nope.log")
        assert result.returncode == 1
        assert "nope.log" in result.stderr and "Traceback" not in result.stderr


class TestConfigErrors:
    def test_wrong_config_exits_2_naming_the_field(
        self, run_cli: Run, write_config: Callable[[str], Path]
    ) -> None:
        """A wrong value: exit 2, the field, the value and the allowed words; no traceback."""
        config = write_config("objective: {metric: loss, type: Minimise}\n")
        result = run_cli("replay", "-c", config, QUICKSTART_LOGS[0])
        assert result.returncode == 2
        assert "objective.type" in result.stderr and "Minimise" in result.stderr
        assert "Minimize, Maximize" in result.stderr
        assert "Traceback" not in result.stderr

    def test_missing_config_file_exits_2(self, run_cli: Run, tmp_path: Path) -> None:
        """A config path that does not exist is a config error."""
        result = run_cli("check", "-c", tmp_path / "absent.yaml")
        assert result.returncode == 2
        assert "absent.yaml" in result.stderr

    def test_usage_error_exits_2(self, run_cli: Run) -> None:
        """argparse's own errors exit 2 too."""
        assert run_cli("replay").returncode == 2


class TestCheckCommand:
    def test_clean_config_exits_0_and_shows_first_values(self, run_cli: Run) -> None:
        """Every definition matched: the report lists counts and first (epoch, value) pairs."""
        result = run_cli("check", "-c", QUICKSTART / "config.yaml", QUICKSTART_LOGS[0])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "valid" in result.stdout
        assert "12 line(s) matched; first: (1, 1.5811) (2, 1.1233)" in result.stdout
        assert "no problems found" in result.stdout

    def test_warnings_exit_1(
        self, run_cli: Run, write_config: Callable[[str], Path], tmp_path: Path
    ) -> None:
        """Matching nothing, a missing objective, an ambiguous group and a regex timeout are all reported."""
        log = tmp_path / "j.log"
        log.write_text("loss=0.5 acc=0.7\n" + "a" * 5000 + "b\n")
        config = write_config(
            "objective: {metric: nothing}\n"
            "regex_timeout_seconds: 0.05\n"
            "metric_definitions:\n"
            "  - {Name: loss, Regex: '(loss)=([0-9.]+)'}\n"
            "  - {Name: nothing, Regex: 'never-here=([0-9.]+)'}\n"
            "  - {Name: slow, Regex: '(a+)+$'}\n"
        )
        result = run_cli("check", "-c", config, log)
        assert result.returncode == 1
        out = result.stdout
        assert "'nothing': matched nothing" in out
        assert "objective metric 'nothing' was not extracted" in out
        assert "several capture groups" in out
        assert "'slow': the regex timed out on 1 line(s)" in out

    def test_an_objective_no_definition_produces_exits_2_after_the_report(
        self, run_cli: Run, write_config: Callable[[str], Path], tmp_path: Path
    ) -> None:
        """`val_accuracy` with only a `val_acc` definition cannot work: the report still shows
        what matched, and the exit code is a config error's, naming objective.metric."""
        log = tmp_path / "j.log"
        log.write_text("val_acc=0.7\n")
        config = write_config(
            "objective: {metric: val_accuracy, type: Maximize}\n"
            "metric_definitions:\n"
            "  - {Name: val_acc, Regex: 'val_acc=([0-9.]+)'}\n"
        )
        result = run_cli("check", "-c", config, log)
        assert result.returncode == 2
        assert "1 line(s) matched" in result.stdout
        assert (
            "objective.metric: 'val_accuracy' is not a name any metric definition" in result.stdout
        )

    def test_preset_without_config(self, run_cli: Run, tmp_path: Path) -> None:
        """`check --preset` shows what a built-in preset extracts from a log."""
        log = tmp_path / "xgb.log"
        log.write_text(
            "[0]\ttrain-auc:0.91\tvalidation-auc:0.88\n[1]#011train-auc:0.93#011validation-auc:0.89\n"
        )
        result = run_cli("check", "--preset", "xgboost", log)
        assert result.returncode == 0, result.stdout
        assert "validation:auc (2)" in result.stdout and "train:auc (2)" in result.stdout
        assert "validation:auc@1=0.88" in result.stdout

    XGB_LINES = "[0]\ttrain-logloss:0.61\tvalidation-logloss:0.63\n[1]\ttrain-logloss:0.52\tvalidation-logloss:0.55\n"

    def test_preset_definitions_that_match_nothing_are_notes_not_warnings(
        self, run_cli: Run, write_config: Callable[[str], Path], tmp_path: Path
    ) -> None:
        """sagemaker-xgboost defines 66 metrics; a log printing 2 of them is not a problem."""
        log = tmp_path / "xgb.log"
        log.write_text(self.XGB_LINES)
        config = write_config(
            "objective: {metric: 'validation:logloss'}\npreset: sagemaker-xgboost\n"
        )
        result = run_cli("check", "-c", config, log)
        assert result.returncode == 0, result.stdout
        notes = result.stdout.split("notes:")[1]
        assert "64 of the preset's 66 definition(s) matched nothing" in notes
        assert "[34] validation:accuracy" in notes
        assert "no problems found" in result.stdout

    def test_check_preset_on_a_log_notes_unmatched_definitions(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        """`check --preset` lists what the log did not print as a note and exits 0."""
        log = tmp_path / "xgb.log"
        log.write_text(self.XGB_LINES)
        result = run_cli("check", "--preset", "sagemaker-xgboost", log)
        assert result.returncode == 0, result.stdout
        assert "64 of the preset's 66 definition(s) matched nothing" in result.stdout
        assert "warnings:" not in result.stdout

    def test_user_definition_and_objective_that_match_nothing_still_warn(
        self, run_cli: Run, write_config: Callable[[str], Path], tmp_path: Path
    ) -> None:
        """Beside a preset, a user's own definition and the objective's definition that match
        nothing are warnings (exit 1); the preset's other unmatched definitions are notes."""
        log = tmp_path / "xgb.log"
        log.write_text(self.XGB_LINES)
        config = write_config(
            "objective: {metric: 'validation:auc'}\n"
            "preset: sagemaker-xgboost\n"
            "metric_definitions:\n"
            "  - {Name: mine, Regex: 'never-here=([0-9.]+)'}\n"
        )
        result = run_cli("check", "-c", config, log)
        assert result.returncode == 1
        notes, warnings = result.stdout.split("notes:")[1].split("warnings:")
        assert "63 of the preset's 66 definition(s) matched nothing" in notes
        assert "[35] validation:auc," not in notes
        assert "definition [67] 'mine': matched nothing" in warnings
        assert "definition [35] 'validation:auc': matched nothing" in warnings
        assert "objective metric 'validation:auc' was not extracted" in warnings

    def test_check_jsonl_preset_shows_the_keys_it_reads(self, run_cli: Run, tmp_path: Path) -> None:
        """The jsonl preset on a JSON-lines log: every numeric key, nested ones dotted."""
        log = tmp_path / "loop.log"
        log.write_text(
            "starting\n"
            '{"epoch": 1, "train": {"loss": 0.9}, "val_loss": 0.8, "tag": "a"}\n'
            '{"epoch": 2, "train": {"loss": 0.7}, "val_loss": 0.6, "tag": "b"}\n'
        )
        result = run_cli("check", "--preset", "jsonl", log)
        assert result.returncode == 0, result.stdout
        assert "(JSON lines)" in result.stdout
        assert "metrics: train.loss (2), val_loss (2)" in result.stdout
        assert "val_loss@1=0.8" in result.stdout

    def test_unknown_preset_exits_2(self, run_cli: Run) -> None:
        """An unknown preset names the available ones."""
        result = run_cli("check", "--preset", "nope")
        assert result.returncode == 2
        assert "xgboost" in result.stderr


class TestStatusCommand:
    def test_status_reads_what_replay_stored(self, run_cli: Run, tmp_path: Path) -> None:
        """After `replay --store`, `status --json --values` shows the jobs, stops and values."""
        url = f"sqlite://{tmp_path / 'h.db'}"
        assert (
            run_cli(
                "replay", "-c", QUICKSTART / "config.yaml", "--store", url, *QUICKSTART_LOGS
            ).returncode
            == 0
        )
        result = run_cli("status", "--store", url, "--json", "--values")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        (tj,) = doc["tuning_jobs"]
        assert tj["name"] == "quickstart"
        assert tj["objective"] == {"metric": "val_loss", "type": "Minimize"}
        golden = json.loads((GOLDEN / "quickstart.replay.json").read_text())["jobs"]
        assert [(j["job"], j["status"], j["stopped_at_epoch"]) for j in tj["jobs"]] == [
            (j["job"], j["status"], j["stopped_at_epoch"]) for j in golden
        ]
        first = tj["jobs"][0]
        assert first["values"]["val_loss"][0] == [1, 1.5811]
        assert set(first["values"]) == {"val_loss", "val_acc", "train_loss"}
        text = run_cli("status", "--store", url)
        assert "tuning job quickstart" in text.stdout and "2 Stopped" in text.stdout

    def test_status_with_config_uses_its_store(self, run_cli: Run, tmp_path: Path) -> None:
        """`status -c CFG` reads the config's store (relative to the working directory)."""
        shutil.copy(QUICKSTART / "config.yaml", tmp_path / "config.yaml")
        assert (
            run_cli(
                "replay",
                "-c",
                "config.yaml",
                "--store",
                "sqlite://quickstart.db",
                *QUICKSTART_LOGS,
                cwd=tmp_path,
            ).returncode
            == 0
        )
        result = run_cli("status", "-c", "config.yaml", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "values" not in json.loads(result.stdout)["tuning_jobs"][0]["jobs"][0]

    def test_status_of_missing_store_fails_clearly(self, run_cli: Run, tmp_path: Path) -> None:
        """No store file: exit 1, and no empty store is created."""
        result = run_cli("status", "--store", f"sqlite://{tmp_path / 'none.db'}")
        assert result.returncode == 1
        assert "no such file" in result.stderr
        assert not (tmp_path / "none.db").exists()


class TestReviewedEdges:
    """What a first user tried: each once gave a confusing or wrong answer."""

    NAN_CONFIG = (
        "tuning_job: t\nobjective: {metric: loss}\n"
        "metric_definitions: [{Name: loss, Regex: 'loss=(\\S+)'}]\n"
        "early_stopping: {min_jobs: 1}\n"
    )

    def test_replay_warns_on_stderr_about_a_log_without_objective_values(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        (tmp_path / "empty.log").write_text("nothing to see\n")
        result = run_cli(
            "replay", "-c", QUICKSTART / "config.yaml", "--json", tmp_path / "empty.log"
        )
        assert result.returncode == 0
        assert json.loads(result.stdout)["jobs"][0]["epochs"] == 0  # stdout stays the document
        assert "no 'val_loss' values in 1 log(s): empty" in result.stderr

    def test_a_nan_decision_shows_as_non_finite_not_as_missing(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        config = tmp_path / "c.yaml"
        config.write_text(self.NAN_CONFIG)
        (tmp_path / "a.log").write_text("loss=0.5\n")
        (tmp_path / "b.log").write_text("loss=nan\n")
        result = run_cli("replay", "-c", config, tmp_path / "a.log", tmp_path / "b.log")
        assert result.returncode == 0, result.stderr
        (row,) = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["b"]]
        assert row.split()[2:6] == ["Stopped", "1", "1", "non-finite"]

    def test_status_takes_a_config_or_a_store_not_both(self, run_cli: Run) -> None:
        result = run_cli("status", "-c", "x.yaml", "--store", "sqlite://y.db")
        assert result.returncode == 2
        assert "not allowed with" in result.stderr

    def test_status_values_are_shown_in_the_text_output_too(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        url = f"sqlite://{tmp_path / 'h.db'}"
        run_cli("replay", "-c", QUICKSTART / "config.yaml", "--store", url, QUICKSTART_LOGS[0])
        result = run_cli("status", "--store", url, "--values")
        assert result.returncode == 0, result.stderr
        assert f"  {QUICKSTART_LOGS[0].stem} val_loss: 1=1.5811 " in result.stdout

    def test_an_unknown_store_scheme_is_a_config_error(self, run_cli: Run, tmp_path: Path) -> None:
        config = tmp_path / "c.yaml"
        config.write_text("objective: {metric: m}\nstore: 'mysql://x/y'\n")
        result = run_cli("check", "-c", config)
        assert result.returncode == 2
        assert "store:" in result.stderr and "mysql://x/y" in result.stderr

    def test_a_config_that_is_not_utf8_is_a_config_error(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        config = tmp_path / "c.yaml"
        config.write_bytes("objective: {metric: m}\n".encode("utf-16"))
        result = run_cli("check", "-c", config)
        assert result.returncode == 2
        assert "not UTF-8" in result.stderr and "Traceback" not in result.stderr

    def test_check_warns_when_run_would_refuse_the_stop_section(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        config = tmp_path / "c.yaml"
        config.write_text(
            "objective: {metric: m}\nmetric_definitions: [{Name: m, Regex: 'm=([0-9.]+)'}]\n"
            f"sources: [{{path: '{tmp_path}/*.log'}}]\n"
        )
        result = run_cli("check", "-c", config)
        assert result.returncode == 1
        assert "for `sidecar run`: stop.signal" in result.stdout

    def test_a_bad_environment_override_is_named_in_the_error(self, run_cli: Run) -> None:
        result = run_cli(
            "check",
            "-c",
            QUICKSTART / "config.yaml",
            env={"SIDECAR_EARLY_STOPPING__MIN_JOBS": "abc"},
        )
        assert result.returncode == 2
        assert "SIDECAR_EARLY_STOPPING__MIN_JOBS" in result.stderr


@pytest.mark.parametrize("entry", [["sidecar"], ["python", "-m", "sidecar"]])
def test_both_entry_points_run(entry: list[str]) -> None:
    """The console script and `python -m sidecar` are the same program."""
    import sys

    exe = (
        shutil.which("sidecar", path=str(Path(sys.executable).parent))
        if entry == ["sidecar"]
        else sys.executable
    )
    assert exe is not None
    cmd = [exe, "--version"] if entry == ["sidecar"] else [exe, "-m", "sidecar", "--version"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "sidecar" in result.stdout


def to_docker_json(text: bytes) -> bytes:
    """Docker json-file records, splitting every line into two records (as at 16 KiB)."""
    out = []
    for line in text.splitlines(keepends=True):
        half = len(line) // 2
        for part in (line[:half], line[half:]):
            if part:
                doc = {
                    "log": part.decode(),
                    "stream": "stdout",
                    "time": "2024-05-01T10:00:00.000000001Z",
                }
                out.append(json.dumps(doc).encode() + b"\n")
    return b"".join(out)


def to_cri(text: bytes) -> bytes:
    """CRI lines as podman's conmon writes them, each split into a P chunk and an F chunk."""
    out = []
    for line in text.splitlines():
        half = len(line) // 2
        ts = b"2024-05-01T10:00:00.123456789+00:00"
        out.append(ts + b" stdout P " + line[:half] + b"\n")
        out.append(ts + b" stderr F unrelated stderr line\n")
        out.append(ts + b" stdout F " + line[half:] + b"\n")
    return b"".join(out)


@pytest.mark.parametrize("convert", [to_docker_json, to_cri], ids=["docker-json", "cri"])
def test_replay_detects_container_log_formats(
    run_cli: Run, tmp_path: Path, convert: Callable[[bytes], bytes]
) -> None:
    """The quickstart logs as Docker json-file or CRI files replay to the same golden document."""
    logs = []
    for log in QUICKSTART_LOGS:
        target = tmp_path / log.name
        target.write_bytes(convert(log.read_bytes()))
        logs.append(target)
    result = run_cli("replay", "-c", QUICKSTART / "config.yaml", "--json", *logs)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((GOLDEN / "quickstart.replay.json").read_text())
    forced = run_cli(
        "replay", "-c", QUICKSTART / "config.yaml", "--json", "--format", "plain", *logs
    )
    assert json.loads(forced.stdout) != json.loads(
        result.stdout
    )  # read as plain text, the JSON quoting differs


class TestTerminalSafety:
    def test_control_characters_in_job_names_are_escaped_in_status(
        self, run_cli: Run, tmp_path: Path
    ) -> None:
        """A job named after a log file with ESC sequences in its name: `status` and `replay`
        print them escaped, never raw (they would retitle or recolour the terminal)."""
        hostile = "j\x1b]0;pwned\x07\x1b[31m"
        log = tmp_path / f"{hostile}.log"
        log.write_text("val_loss=0.5\n")
        store = tmp_path / "h.db"
        result = run_cli(
            "replay", "-c", QUICKSTART / "config.yaml", "--store", f"sqlite://{store}", log
        )
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\\x1b]0;pwned" in result.stdout
        result = run_cli("status", "--store", f"sqlite://{store}")
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
        assert "\\x1b[31m" in result.stdout

    def test_check_warns_about_a_shell_as_the_command(
        self, run_cli: Run, write_config: Callable[[str], Path]
    ) -> None:
        """`command: {argv: [sh, -c, 'kill {job}']}` is valid but makes a job name shell code."""
        config = write_config(
            "objective: {metric: loss}\n"
            "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
            "stop: {backend: command, command: {argv: [sh, -c, 'kill {job}']}}\n"
        )
        result = run_cli("check", "-c", config)
        assert "stop.command.argv[0] is a shell ('sh')" in result.stdout
