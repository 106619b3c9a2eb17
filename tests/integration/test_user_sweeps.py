"""A new user's sweeps, end to end with real processes: a shell loop launching trials with `&`, a
Python trainer whose output is block-buffered, a second sweep reusing the first one's names,
`timeout` around the daemon, signals in quick succession, a port in use, a venv without extras.

Each test reproduces what a user did and checks what they then see (the trials that survive,
the status, the events), not how the sidecar gets there.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, skip_or_fail
from tests.helpers import DaemonProcess, events, named, sidecar_env, status, wait_for

PYTHON = sys.executable


def sweep_config(tmp: Path, *, extra: str = "") -> Path:
    """The demo trainer's metrics, the signal backend through pid files, a SQLite store."""
    (tmp / "logs").mkdir(exist_ok=True)
    (tmp / "pids").mkdir(exist_ok=True)
    path = tmp / "config.yaml"
    path.write_text(
        "tuning_job: t\n"
        "objective: {metric: val_loss, type: Minimize}\n"
        "metric_definitions:\n"
        "  - {Name: val_loss, Regex: 'val_loss=([-+0-9.eE]+|nan|inf)'}\n"
        "epoch: {regex: '- epoch (\\d+) '}\n"
        "early_stopping: {min_jobs: 2, start_epoch: 2}\n"
        f"sources: [{{path: '{tmp}/logs/*.log'}}]\n"
        "stop:\n"
        "  backend: signal\n"
        "  grace_seconds: 5\n"
        f"  signal: {{pid_file: '{tmp}/pids/{{job}}.pid'}}\n"
        f"store: 'sqlite://{tmp}/history.db'\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        "idle_timeout_seconds: 0\n" + extra
    )
    return path


@pytest.fixture
def running_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    """`sidecar run` on `sweep_config`, as a real process; its output in daemon.log."""
    config = sweep_config(tmp_path)
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: named(tmp_path / "daemon.log", "started"), 30, what="the daemon")
        yield daemon, config
    finally:
        daemon.cleanup()


def trainer(job: str, lr: float, *, epochs: int, epoch_seconds: float, seed: int = 0) -> str:
    """The shell command of one trial of the shipped trainer (it flushes every line)."""
    return (
        f"{PYTHON} -m sidecar.demo.trainer --job {job} --lr {lr} --epochs {epochs} "
        f"--epoch-seconds {epoch_seconds} --seed {seed}"
    )


@pytest.mark.slow
class TestShellLoopLauncher:
    def test_only_the_loser_is_stopped_and_the_sweep_goes_on(
        self, running_daemon: tuple[DaemonProcess, Path], tmp_path: Path
    ) -> None:
        """`for ...; do train > logs/$n.log & echo $! > pids/$n.pid; done; wait` from a script:
        every trial shares the script's process group. Stopping a loser must stop it alone:
        the winners finish, the launcher finishes the loop, and the status says what happened
        (the winners Completed when their processes exit, not Running for an hour)."""
        daemon, config = running_daemon
        lrs = [("lr-0.03", 0.03), ("lr-0.01", 0.01), ("lr-0.0003", 0.0003), ("lr-0.02", 0.02)]
        loop = " ".join(f"{job}:{lr}" for job, lr in lrs)
        script = tmp_path / "sweep.sh"
        script.write_text(
            f"cd {tmp_path}\n"
            f"for spec in {loop}; do\n"
            '  name="${spec%%:*}"; lr="${spec#*:}"\n'
            f'  {PYTHON} -m sidecar.demo.trainer --job "$name" --lr "$lr" --epochs 10 '
            '--epoch-seconds 0.15 > "logs/$name.log" 2>&1 &\n'
            '  echo $! > "pids/$name.pid"\n'
            "  sleep 0.5\n"
            "done\n"
            "wait\n"
            "echo sweep done\n"
        )
        launcher = subprocess.run(
            ["sh", str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # the launcher leads its group, as a script run in a shell
            check=False,
        )
        assert launcher.returncode == 0, launcher.stderr
        assert "sweep done" in launcher.stdout, "the launcher was killed"
        log = tmp_path / "daemon.log"
        stopped = wait_for(
            lambda: [e["job"] for e in named(log, "stop_decision")], 30, what="a stop"
        )
        assert stopped == ["lr-0.0003"]
        assert [e["outcome"] for e in named(log, "stop_decision")] == ["stopped"]
        logs = {job: (tmp_path / "logs" / f"{job}.log").read_text() for job, _ in lrs}
        assert "received SIGTERM" in logs["lr-0.0003"]
        for job in ("lr-0.03", "lr-0.01", "lr-0.02"):
            assert "training finished" in logs[job], f"{job} was killed: {logs[job][-200:]}"
        final = wait_for(
            lambda: (
                (s := status(config))
                and all(j["status"] != "Running" for j in s.values())
                and len(s) == 4
                and s
            ),
            40,
            what="every job to have ended",
            describe=lambda: status(config),
        )
        assert {job: j["status"] for job, j in final.items()} == {
            "lr-0.03": "Completed",
            "lr-0.01": "Completed",
            "lr-0.0003": "Stopped",
            "lr-0.02": "Completed",
        }
        registered = [e["job"] for e in named(log, "job_registered")]
        assert sorted(registered) == sorted(job for job, _ in lrs)  # one info event per job
        # said before any damage could be done: the trials share the loop's process group
        shared = named(log, "shared_process_group")
        assert len(shared) == 1 and "never the group" in shared[0]["effect"]
        everything = events(log)
        assert everything.index(shared[0]) < everything.index(named(log, "stop_decision")[0])
        # the daemon started before the sweep, on an empty folder, and said so
        assert named(log, "no_files_matched")
        assert daemon.alive()


@pytest.mark.slow
class TestBufferedTrainer:
    BUFFERED = (
        "import sys, time\n"
        "bad = sys.argv[1] == 'bad'\n"
        "for e in range(1, 16):\n"
        "    loss = (2.0 if bad else 1.0) / e\n"
        "    print(f'Epoch {e} - epoch {e} val_loss={loss:.4f}')\n"  # no flush: a file is buffered
        "    time.sleep(0.005)\n"
    )

    def test_a_target_gone_before_the_decision_is_already_exited_and_completed(
        self, tmp_path: Path
    ) -> None:
        """A Python trainer writing to a file without -u delivers its whole log at exit. The
        decision comes when it has already exited: the outcome is `already_exited`, its status
        Completed with all 15 epochs, nothing 'stopped at 2', and one warning names buffering."""
        config = sweep_config(tmp_path)
        script = tmp_path / "train.py"
        script.write_text(self.BUFFERED)
        for i, kind in enumerate(["good", "good", "good", "bad"], 1):
            job = f"0{i}-{kind}"
            with (tmp_path / "logs" / f"{job}.log").open("wb") as out:
                proc = subprocess.Popen([PYTHON, str(script), kind], stdout=out)
            (tmp_path / "pids" / f"{job}.pid").write_text(f"{proc.pid}\n")
            assert proc.wait(timeout=30) == 0
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            log = tmp_path / "daemon.log"
            decisions = wait_for(lambda: named(log, "stop_decision"), 30, what="the decision")
            assert [(d["job"], d["epoch"], d["outcome"]) for d in decisions] == [
                ("04-bad", 2, "already_exited")
            ]
            job = wait_for(
                lambda: (j := status(config).get("04-bad")) and j["status"] == "Completed" and j,
                30,
                what="04-bad to be Completed",
            )
            assert job["epochs"] == 15
            assert job["stopped_at_epoch"] is None
            assert job["decision"]["outcome"] == "already_exited"
            warnings = named(log, "output_buffered")
            assert [(w["job"], w["stop_epoch"], w["epochs_in_log"]) for w in warnings] == [
                ("04-bad", 2, 15)
            ]
            assert "PYTHONUNBUFFERED=1" in warnings[0]["hint"]
        finally:
            daemon.cleanup()


@pytest.mark.slow
class TestRerunUnderTheSameNames:
    def test_a_second_sweep_is_a_new_attempt_of_each_job_and_is_decided_on(
        self, running_daemon: tuple[DaemonProcess, Path], tmp_path: Path
    ) -> None:
        """The same store, tuning job and job names, the logs overwritten (`>`): every job of
        the second sweep is a new attempt (`name~2`), compared with the jobs before it, and the
        loser of the second sweep is stopped. Each rerun is logged and counted."""
        daemon, config = running_daemon
        log = tmp_path / "daemon.log"

        def sweep(lrs: list[tuple[str, float]]) -> None:
            for job, lr in lrs:
                command = (
                    f"cd {tmp_path} && {trainer(job, lr, epochs=6, epoch_seconds=0.15)}"
                    f" > logs/{job}.log 2>&1 & echo $! > {tmp_path}/pids/{job}.pid; wait"
                )
                subprocess.run(["sh", "-c", command], timeout=60, check=False)

        sweep([("a", 0.03), ("b", 0.01), ("c", 0.02)])
        wait_for(
            lambda: (
                (s := status(config))
                and sorted(s) == ["a", "b", "c"]
                and all(j["status"] == "Completed" for j in s.values())
            ),
            40,
            what="the first sweep to end",
            describe=lambda: status(config),
        )
        sweep([("a", 0.03), ("b", 0.02), ("c", 0.0003)])
        final = wait_for(
            lambda: (
                (s := status(config))
                and len(s) == 6
                and all(j["status"] != "Running" for j in s.values())
                and s
            ),
            40,
            what="the second sweep to end",
            describe=lambda: status(config),
        )
        assert {job: j["status"] for job, j in final.items()} == {
            "a": "Completed",
            "b": "Completed",
            "c": "Completed",
            "a~2": "Completed",
            "b~2": "Completed",
            "c~2": "Stopped",
        }
        assert "received SIGTERM" in (tmp_path / "logs" / "c.log").read_text()
        reruns = named(log, "job_rerun")
        assert [(r["job"], r["attempt"]) for r in reruns] == [
            ("a", "a~2"),
            ("b", "b~2"),
            ("c", "c~2"),
        ]
        assert "tuning_job" in reruns[0]["hint"]
        port = named(log, "started")[0]["http"].rsplit(":", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'early_stopping_job_reruns_total{tuning_job="t"} 3.0' in metrics
        assert daemon.alive()


def _started(log: Path) -> bool:
    try:
        return '"event": "started"' in log.read_text(errors="replace")
    except FileNotFoundError:
        return False


def _one_round(tmp: Path, index: int, rng: random.Random) -> tuple[int, float, str]:
    """Start `sidecar run`, wait until it runs, send two signals a random sub-millisecond gap
    apart; (exit code, seconds to exit, the signal pair)."""
    log = tmp / f"round-{index}.log"
    pair = rng.choice(
        [
            (signal.SIGTERM, signal.SIGTERM),
            (signal.SIGINT, signal.SIGINT),
            (signal.SIGTERM, signal.SIGINT),
            (signal.SIGINT, signal.SIGTERM),
        ]
    )
    gap = rng.uniform(0, 0.001)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "sidecar", "run", "-c", str(tmp / "config.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=sidecar_env(),
        )
    try:
        wait_for(lambda: _started(log) or proc.poll() is not None, 60, what="start")
        os.kill(proc.pid, pair[0])
        end = time.perf_counter() + gap
        while time.perf_counter() < end:  # a busy wait: sleep() cannot do sub-millisecond gaps
            pass
        os.kill(proc.pid, pair[1])
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=SHUTDOWN_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            code = -999
        return code, time.monotonic() - sent, f"{pair[0].name},{pair[1].name} {gap * 1e6:.0f}us"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SHUTDOWN_TIMEOUT = 30.0
ROUNDS = 200


@pytest.mark.slow
class TestSignalsInQuickSuccession:
    def test_200_signal_pairs_each_exit_within_the_shutdown_timeout(self, tmp_path: Path) -> None:
        """Two signals 0-1000 us apart (GNU timeout sends SIGTERM twice; an impatient user
        presses Ctrl-C twice), 200 times: the daemon never hangs. Two SIGTERMs shut down
        gracefully with 0; a SIGINT after another signal exits at once with 130."""
        (tmp_path / "logs").mkdir()
        (tmp_path / "config.yaml").write_text(
            "objective: {metric: loss}\n"
            "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
            f"sources: [{{path: '{tmp_path}/logs/*.log'}}]\n"
            "stop: {backend: none}\n"
            f"store: 'sqlite://{tmp_path}/h.db'\n"
            "http: {host: 127.0.0.1, port: 0}\n"
        )
        rng = random.Random(9)
        seeds = [rng.random() for _ in range(ROUNDS)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(lambda i: _one_round(tmp_path, i, random.Random(seeds[i])), range(ROUNDS))
            )
        hung = [(i, r) for i, r in enumerate(results) if r[0] == -999]
        assert not hung, f"{len(hung)} of {ROUNDS} rounds hung: {hung[:5]}"
        for i, (code, seconds, pair) in enumerate(results):
            assert seconds < SHUTDOWN_TIMEOUT, (i, pair, seconds)
            # Two signals pending at once reach Python's handlers by signal number (SIGINT
            # first), and two SIGINTs pending at once are one: either is a graceful exit (0);
            # a SIGINT handled after another signal exits at once (130).
            allowed = {0} if pair.startswith("SIGTERM,SIGTERM") else {0, 130}
            assert code in allowed, (i, pair, code, (tmp_path / f"round-{i}.log").read_text())
        forced = [r for r in results if r[0] == 130]
        assert all("SIGINT" in pair for _, _, pair in forced)
        for i in range(ROUNDS):
            assert "Traceback" not in (tmp_path / f"round-{i}.log").read_text(), i

    def test_gnu_timeout_around_the_daemon_ends_it_gracefully(
        self, tmp_path: Path, write_config: Any
    ) -> None:
        """`timeout 2 sidecar run -c CFG`: it exits with timeout's 124 soon after 2 s, through
        the graceful shutdown (its `stopped` event), not by a kill."""
        if shutil.which("timeout") is None:
            skip_or_fail("GNU timeout (coreutils) is not installed")
        (tmp_path / "logs").mkdir()
        config = tmp_path / "config.yaml"
        config.write_text(
            "objective: {metric: loss}\n"
            "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
            f"sources: [{{path: '{tmp_path}/logs/*.log'}}]\n"
            "stop: {backend: none}\n"
            f"store: 'sqlite://{tmp_path}/h.db'\n"
            "http: {host: 127.0.0.1, port: 0}\n"
        )
        started = time.monotonic()
        result = subprocess.run(
            ["timeout", "2", PYTHON, "-m", "sidecar", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            env=sidecar_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 124
        assert time.monotonic() - started < 2 + SHUTDOWN_TIMEOUT
        assert '"event": "stopped"' in result.stderr
        assert "Traceback" not in result.stderr


class TestConfigThatCannotWork:
    def test_a_port_in_use_exits_2_naming_http_port(self, run_cli: Any, tmp_path: Path) -> None:
        """Another program holds the port: one line naming http.port, exit 2, no traceback."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            config = sweep_config(tmp_path).read_text().replace("port: 0", f"port: {port}")
            (tmp_path / "config.yaml").write_text(config)
            result = run_cli("run", "-c", tmp_path / "config.yaml")
        assert result.returncode == 2
        assert f"http.port: port {port} on 127.0.0.1 is already in use" in result.stderr
        assert "Traceback" not in result.stderr

    def test_an_objective_no_definition_produces_exits_2(
        self, run_cli: Any, tmp_path: Path
    ) -> None:
        """`val_accuracy` with only a `val_acc` definition would run and never stop anything:
        `run`, `exec` and `replay` refuse it, naming objective.metric."""
        config = tmp_path / "c.yaml"
        config.write_text(
            "objective: {metric: val_accuracy, type: Maximize}\n"
            "metric_definitions: [{Name: val_acc, Regex: 'val_acc=([0-9.]+)'}]\n"
            "stop: {backend: none}\n"
            f"store: 'sqlite://{tmp_path}/h.db'\n"
        )
        log = tmp_path / "j.log"
        log.write_text("val_acc=0.5\n")
        for args in (["run", "-c", config], ["exec", "-c", config, "--job", "j", "--", "true"]):
            result = run_cli(*args)
            assert result.returncode == 2, (args, result.stderr)
            assert "objective.metric: 'val_accuracy' is not a name" in result.stderr
            assert "'val_acc'" in result.stderr and "Traceback" not in result.stderr
        result = run_cli("replay", "-c", config, log)
        assert result.returncode == 2 and "objective.metric" in result.stderr

    def test_a_templated_definition_that_can_produce_the_objective_is_accepted(
        self, run_cli: Any, tmp_path: Path
    ) -> None:
        """`{set}:{metric}` can produce `validation:auc`: replay runs (templated names are
        checked as far as names tell)."""
        config = tmp_path / "c.yaml"
        config.write_text(
            "objective: {metric: 'validation:auc', type: Maximize}\n"
            "metric_definitions:\n"
            "  - {Name: '{set}:{metric}', Regex: '(?P<set>\\w+)-(?P<metric>\\w+):(?P<value>[0-9.]+)'}\n"
        )
        log = tmp_path / "j.log"
        log.write_text("validation-auc:0.9\n")
        result = run_cli("replay", "-c", config, "--json", log)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["jobs"][0]["epochs"] == 1

    def test_check_without_logs_checks_what_the_sources_match(
        self, run_cli: Any, tmp_path: Path
    ) -> None:
        """`check -c CFG` with no LOG and `sources`: the files the globs match are checked."""
        config = sweep_config(tmp_path)
        (tmp_path / "logs" / "j1.log").write_text(" - epoch 1 val_loss=0.5\n")
        result = run_cli("check", "-c", config)
        assert "checked the 1 file(s) the sources' globs match" in result.stdout
        assert "j1.log: 1 line(s) matched" in result.stdout
        (tmp_path / "logs" / "j1.log").unlink()
        result = run_cli("check", "-c", config)
        assert result.returncode == 1
        assert "the sources' globs match no file yet" in result.stdout


@pytest.mark.slow
class TestMissingExtras:
    @pytest.mark.parametrize(
        ("extra", "section", "field"),
        [
            ("docker", "stop: {backend: docker}\n", "stop.backend: docker"),
            ("kubernetes", "stop: {backend: kubernetes}\n", "stop.backend: kubernetes"),
            (
                "docker",
                "sources: [{docker: {labels: [a=b]}}]\nstop: {backend: none}\n",
                "sources[0].docker",
            ),
            (
                "postgres",
                "store: postgresql://u@127.0.0.1:1/db\nstop: {backend: none}\n",
                "postgresql://",
            ),
        ],
        ids=["docker-backend", "kubernetes-backend", "docker-source", "postgres-store"],
    )
    def test_run_refuses_at_start_naming_the_install_command(
        self, bare_venv: Path, tmp_path: Path, extra: str, section: str, field: str
    ) -> None:
        """Exit 2 at once, one message naming the field and both install commands (from a
        checkout and from an index), never a stop failing 'No module named docker' later."""
        config = tmp_path / "c.yaml"
        config.write_text(
            "objective: {metric: loss}\n"
            "metric_definitions: [{Name: loss, Regex: 'loss=([0-9.]+)'}]\n"
            "http: {host: 127.0.0.1, port: 0}\n" + section
        )
        if "store:" not in section:
            config.write_text(config.read_text() + f"store: 'sqlite://{tmp_path}/h.db'\n")
        result = subprocess.run(
            [str(bare_venv / "bin" / "sidecar"), "run", "-c", str(config)],
            capture_output=True,
            text=True,
            env=sidecar_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert field in result.stderr
        assert f"pip install '.[{extra}]'" in result.stderr
        assert f"pip install 'early-stopping-sidecar[{extra}]'" in result.stderr
        assert "Traceback" not in result.stderr

    def test_replay_plot_refuses_before_any_work(self, bare_venv: Path, tmp_path: Path) -> None:
        """`replay --plot` without matplotlib: exit 2, the plot extra's install commands."""
        quickstart = ROOT / "sample_logs" / "quickstart"
        result = subprocess.run(
            [
                str(bare_venv / "bin" / "sidecar"),
                "replay",
                "-c",
                str(quickstart / "config.yaml"),
                "--plot",
                str(tmp_path / "p.png"),
                *map(str, sorted(quickstart.glob("*.log"))),
            ],
            capture_output=True,
            text=True,
            env=sidecar_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "pip install '.[plot]'" in result.stderr
        assert result.stdout == "" and not (tmp_path / "p.png").exists()
