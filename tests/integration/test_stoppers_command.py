"""The command backend with real processes: argv templates never reach a shell, a non-zero exit
and a timeout are retryable failures, a timed-out command is killed with everything it started.

Every command here is a real child (`python -c`); what it received is read back from a file it
wrote. Synchronisation polls with a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from sidecar.config import validate_config
from sidecar.errors import ConfigError
from sidecar.model import Decision
from sidecar.stoppers import PermanentStopError, StopDispatcher, StopError, StopRequest, StopResult
from sidecar.stoppers.command import CommandStopper
from sidecar.stoppers.factory import make_stopper
from sidecar.templates import template_context
from tests.helpers import wait_for

DEADLINE = 15.0

# Writes its arguments (after the output path) as a JSON list: what the program really received.
WRITE_ARGV = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"

# A job name a log line could carry, full of what a shell would act on.
HOSTILE_JOB = (
    "job; rm -rf victim $(touch pwned) | touch piped & touch bg > x '\"` touch ticked` "
    "{tuning_job} *"
)


def request(
    job: str = "job-b", tuning_job: str = "tj", extra: dict[str, str] | None = None
) -> StopRequest:
    return StopRequest(
        Decision(tuning_job, job, 3, 0.9, 0.5, 2, "sagemaker"),
        template_context(job=job, tuning_job=tuning_job, log_path="/logs/a b.log", extra=extra),
    )


def is_alive(pid: int) -> bool:
    """Exists and is not a zombie (read from /proc, independently of the code under test)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] not in ("Z", "X")


class TestArgvTemplates:
    def test_shell_metacharacters_in_a_job_name_arrive_as_one_literal_argument(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`;`, `$(...)`, pipes, `&`, redirections, quotes and backticks are never interpreted:
        each templated argument arrives whole, and none of the commands they spell runs."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "victim").mkdir()
        out = tmp_path / "argv.json"
        stopper = CommandStopper(
            [
                sys.executable,
                "-c",
                WRITE_ARGV,
                str(out),
                "{job}",
                "--name={job}",
                "{tuning_job}",
                "{log_dir}",
                "{log_path}",
                "{namespace}",
                "{unknown}",
            ],
            timeout=DEADLINE,
        )

        result = stopper.stop(request(HOSTILE_JOB, "tj 1", extra={"namespace": "ns$(id)"}))

        assert result is StopResult.STOPPED
        assert json.loads(out.read_text()) == [
            HOSTILE_JOB,
            f"--name={HOSTILE_JOB}",
            "tj 1",
            "/logs",
            "/logs/a b.log",
            "ns$(id)",
            "{unknown}",  # not a template value: left as written
        ]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["argv.json", "victim"]

    def test_a_value_that_would_be_an_option_is_refused_and_nothing_runs(
        self, tmp_path: Path
    ) -> None:
        """A log file named `--all.log` makes the job `--all`: `kubectl delete pod {job}` would
        delete every pod. The argument is refused (permanently) and the command never runs."""
        out = tmp_path / "argv.json"
        stopper = CommandStopper([sys.executable, "-c", WRITE_ARGV, str(out), "{job}"], timeout=5)
        with pytest.raises(PermanentStopError, match=r"argv\[4\].*'--all'.*option"):
            stopper.stop(request("--all"))
        assert not out.exists()

    def test_after_a_double_dash_a_leading_dash_is_only_a_name(self, tmp_path: Path) -> None:
        """`[kubectl, delete, pod, --, '{job}']`: after `--` the program reads no options, so a
        job named `-x` is passed as the name it is."""
        out = tmp_path / "argv.json"
        stopper = CommandStopper(
            [sys.executable, "-c", WRITE_ARGV, str(out), "--", "{job}"], timeout=5
        )
        assert stopper.stop(request("-x")) is StopResult.STOPPED
        assert json.loads(out.read_text()) == ["--", "-x"]

    def test_a_placeholder_inside_a_value_is_not_filled_again(self, tmp_path: Path) -> None:
        """A job named `{tuning_job}` stays `{tuning_job}`: values are inserted once, literally."""
        out = tmp_path / "argv.json"
        stopper = CommandStopper([sys.executable, "-c", WRITE_ARGV, str(out), "{job}"], timeout=5)
        stopper.stop(request("{tuning_job}", "secret-tj"))
        assert json.loads(out.read_text()) == ["{tuning_job}"]

    def test_argv0_is_never_templated(self, tmp_path: Path) -> None:
        """The program is the config's, byte for byte: a `{job}` in argv[0] is not filled in, so a
        job name cannot choose what runs."""
        literal = tmp_path / "{job}"
        chosen_by_log = tmp_path / "evil"
        for path, marker in ((literal, "literal"), (chosen_by_log, "evil")):
            path.write_text(f"#!/bin/sh\necho {marker} > {tmp_path}/ran\n")
            path.chmod(path.stat().st_mode | stat.S_IXUSR)

        stopper = CommandStopper([str(literal), "{job}"], timeout=DEADLINE)
        assert stopper.render(request("evil")) == [str(literal), "evil"]
        assert stopper.stop(request("evil")) is StopResult.STOPPED
        assert (tmp_path / "ran").read_text() == "literal\n"

    def test_a_config_with_a_template_in_argv0_is_rejected(self) -> None:
        """The config refuses a templated program before the daemon starts."""
        with pytest.raises(ConfigError, match=r"stop\.command\.argv.*argv\[0\]"):
            validate_config(
                {
                    "objective": {"metric": "loss"},
                    "stop": {"backend": "command", "command": {"argv": ["{job}", "x"]}},
                }
            )

    def test_the_factory_builds_it_from_the_config(self, tmp_path: Path) -> None:
        """`stop.command` with its timeout is what runs."""
        out = tmp_path / "argv.json"
        config = validate_config(
            {
                "objective": {"metric": "loss"},
                "stop": {
                    "backend": "command",
                    "command": {
                        "argv": [sys.executable, "-c", WRITE_ARGV, str(out), "{job}"],
                        "timeout_seconds": 7,
                    },
                },
            }
        )
        stopper = make_stopper(config)
        assert isinstance(stopper, CommandStopper)
        assert stopper.timeout == 7
        assert stopper.stop(request("job-7")) is StopResult.STOPPED
        assert json.loads(out.read_text()) == ["job-7"]

    def test_the_factory_rejects_an_empty_argv(self) -> None:
        """The command backend without a command is a config error naming the field."""
        config = validate_config({"objective": {"metric": "loss"}, "stop": {"backend": "command"}})
        with pytest.raises(ConfigError, match=r"stop\.command\.argv"):
            make_stopper(config)


class TestFailures:
    def test_a_non_zero_exit_is_a_retryable_failure_with_the_stderr_tail(self) -> None:
        """Exit 3 raises StopError (retried), not PermanentStopError; the message has the code
        and the end of what the command wrote to stderr."""
        stopper = CommandStopper(
            [
                sys.executable,
                "-c",
                "import sys; sys.stderr.write('x' * 5000 + 'pod not found'); sys.exit(3)",
            ],
            timeout=DEADLINE,
        )
        with pytest.raises(StopError) as caught:
            stopper.stop(request())
        assert not isinstance(caught.value, PermanentStopError)
        message = str(caught.value)
        assert "exited 3" in message
        assert message.endswith("pod not found")
        assert len(message) < 400

    def test_a_missing_program_is_a_permanent_error(self, tmp_path: Path) -> None:
        """Retrying cannot make a missing program appear: the error is permanent."""
        stopper = CommandStopper([str(tmp_path / "no-such-program"), "{job}"], timeout=5)
        with pytest.raises(PermanentStopError, match="not found"):
            stopper.stop(request())

    def test_a_program_that_is_not_executable_is_a_permanent_error(self, tmp_path: Path) -> None:
        program = tmp_path / "script"
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o644)
        if os.geteuid() == 0 and os.access(program, os.X_OK):
            pytest.skip("root may execute anything here")
        with pytest.raises(PermanentStopError, match="not executable"):
            CommandStopper([str(program)], timeout=5).stop(request())

    def test_a_timeout_kills_the_command_and_everything_it_started(self, tmp_path: Path) -> None:
        """Past the timeout the command's whole process group is killed (a helper it spawned
        too) and the attempt fails with a retryable StopError."""
        pids = tmp_path / "pids"
        script = (
            "import os, subprocess, sys, time\n"
            "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "tmp = sys.argv[1] + '.tmp'\n"
            "open(tmp, 'w').write(f'{os.getpid()} {helper.pid}')\n"
            "os.replace(tmp, sys.argv[1])\n"
            "time.sleep(600)\n"
        )
        stopper = CommandStopper([sys.executable, "-c", script, str(pids)], timeout=1.5)

        with pytest.raises(StopError, match="timed out") as caught:
            stopper.stop(request())

        assert not isinstance(caught.value, PermanentStopError)
        command_pid, helper_pid = map(int, pids.read_text().split())
        assert not is_alive(command_pid)
        wait_for(lambda: not is_alive(helper_pid), what="the helper is killed too")

    def test_a_background_helper_holding_stderr_does_not_hold_the_stop(
        self, tmp_path: Path
    ) -> None:
        """The command exits 0 but leaves a helper running with its stderr open: the stop
        succeeds when the command exits, not when the helper does."""
        pids = tmp_path / "helper.pid"
        script = (
            "import subprocess, sys\n"
            "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "open(sys.argv[1], 'w').write(str(helper.pid))\n"
        )
        stopper = CommandStopper([sys.executable, "-c", script, str(pids)], timeout=5)
        try:
            assert stopper.stop(request()) is StopResult.STOPPED
        finally:
            if pids.exists():
                os.kill(int(pids.read_text()), 9)


class TestThroughTheDispatcher:
    def test_a_failing_command_is_retried_and_each_failure_counted(self, tmp_path: Path) -> None:
        """A command that fails twice and then succeeds: two counted failures, one STOPPED."""
        attempts = tmp_path / "attempts"
        script = (
            "import sys\n"
            "from pathlib import Path\n"
            "p = Path(sys.argv[1])\n"
            "n = len(p.read_text()) if p.exists() else 0\n"
            "p.write_text('x' * (n + 1))\n"
            "sys.exit(1 if n < 2 else 0)\n"
        )
        failures: list[Exception] = []
        results: list[StopResult | None] = []
        dispatcher = StopDispatcher(
            CommandStopper([sys.executable, "-c", script, str(attempts)], timeout=DEADLINE),
            on_result=lambda outcome: results.append(outcome.result),
            on_failure=lambda req, error: failures.append(error),
            backoff=0.01,
        )
        try:
            assert dispatcher.submit(request())
            wait_for(lambda: bool(results), what="the stop finishes")
        finally:
            dispatcher.close(DEADLINE)
        assert results == [StopResult.STOPPED]
        assert len(failures) == 2
        assert all("exited 1" in str(f) for f in failures)
        assert attempts.read_text() == "xxx"
