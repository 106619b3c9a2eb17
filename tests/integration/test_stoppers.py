"""Stoppers with real processes: process groups, SIGTERM then SIGKILL, targets by pid file or by
command line, the dispatcher's retries, the marker file, and the factory.

No mocks of the OS: every target is a real child process; liveness is read from /proc.
Synchronisation polls with a deadline (or reads a child's readiness line), never a bare sleep.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.config import Config, validate_config
from sidecar.errors import ConfigError
from sidecar.model import Decision
from sidecar.stoppers import (
    NoneStopper,
    PermanentStopError,
    StopDispatcher,
    StopError,
    StopOutcome,
    StopRefusedError,
    StopRequest,
    StopResult,
    write_marker,
)
from sidecar.stoppers.factory import make_stopper
from sidecar.stoppers.procs import ProcessTable
from sidecar.stoppers.signal import (
    SignalStopper,
    fixed_resolver,
    pid_file_resolver,
    process_match_resolver,
)
from sidecar.templates import template_context
from tests.helpers import wait_for

DEADLINE = 15.0

# A process that says it is ready, then waits to be stopped.
SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"

# Ignores SIGTERM before saying it is ready.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)

# A launcher (like torchrun): two workers, and a middle process with a worker of its own.
# Prints the pids of every descendant once they all exist.
TREE = """
import subprocess, sys, time
LEAF = "import time; time.sleep(600)"
MID = (
    "import subprocess, sys, time; "
    "leaf = subprocess.Popen([sys.executable, '-c', %r]); "
    "print(leaf.pid, flush=True); time.sleep(600)" % LEAF
)
leaves = [subprocess.Popen([sys.executable, "-c", LEAF]) for _ in range(2)]
mid = subprocess.Popen([sys.executable, "-c", MID], stdout=subprocess.PIPE, text=True)
grandchild = int(mid.stdout.readline())
print(*[p.pid for p in leaves], mid.pid, grandchild, flush=True)
time.sleep(600)
"""

# A launcher that dies on SIGTERM while its worker ignores it.
TREE_WITH_STUBBORN_WORKER = """
import subprocess, sys, time
WORKER = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)
worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
worker.stdout.readline()
print(worker.pid, flush=True)
time.sleep(600)
"""


# -- /proc facts, read independently of sidecar.stoppers.procs --------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def is_zombie(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] == "Z"


def live_group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(name))
    return members


def ancestry(pid: int) -> set[int]:
    """The pid and all its parents."""
    chain = {pid}
    while pid > 1 and (fields := _stat(pid)) is not None:
        pid = int(fields[1])
        chain.add(pid)
    return chain


Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start `python -c SCRIPT ARGS...`; every process (and its own group) is killed at teardown."""
    started: list[tuple[subprocess.Popen[str], bool]] = []

    def start(script: str, *args: str, new_group: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=new_group,
        )
        started.append((proc, new_group))
        return proc

    yield start
    for proc, new_group in started:
        if new_group and live_group_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        if proc.stdout is not None:
            proc.stdout.close()


def decision(job: str = "job-b", tuning_job: str = "tj") -> Decision:
    return Decision(tuning_job, job, 3, 0.9, 0.5, 2, "sagemaker")


def request(job: str = "job-b", tuning_job: str = "tj", log_path: str = "") -> StopRequest:
    return StopRequest(
        decision(job, tuning_job),
        template_context(job=job, tuning_job=tuning_job, log_path=log_path),
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def reap_in_thread(proc: subprocess.Popen[str]) -> threading.Thread:
    """Reap the direct child as soon as it exits, as a launcher's parent would."""
    thread = threading.Thread(target=proc.wait, daemon=True)
    thread.start()
    return thread


# -- the signal backend with a pid file -----------------------------------------------------
class TestSignalStopperPidFile:
    def test_stops_every_process_of_the_targets_group(self, spawn: Spawn, tmp_path: Path) -> None:
        """The whole process tree (workers and their children) is gone, not just the leader."""
        launcher = spawn(TREE)
        descendants = [int(p) for p in launcher.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(descendants) == 4
        assert sorted(live_group_members(launcher.pid)) == sorted([launcher.pid, *descendants])
        (tmp_path / "job-b.pid").write_text(f"{launcher.pid}\n")
        reaper = reap_in_thread(launcher)

        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=10.0)
        assert stopper.stop(request("job-b")) is StopResult.STOPPED

        assert live_group_members(launcher.pid) == []
        assert not any(is_alive(pid) for pid in [launcher.pid, *descendants])
        reaper.join(DEADLINE)
        assert launcher.returncode == -signal.SIGTERM

    def test_escalates_to_sigkill_after_the_grace_period(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """A process that ignores SIGTERM is SIGKILLed once grace_seconds have passed."""
        proc = spawn(STUBBORN)
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        (tmp_path / "t.pid").write_text(str(proc.pid))

        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=0.5)
        started = time.monotonic()
        assert stopper.stop(request()) is StopResult.STOPPED
        assert time.monotonic() - started >= 0.5  # SIGTERM was given its grace period

        assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL

    def test_a_worker_ignoring_sigterm_is_killed_after_its_launcher_exits(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """The group is watched, not the pid: a worker left behind by its dead launcher is killed."""
        launcher = spawn(TREE_WITH_STUBBORN_WORKER)
        worker = int(launcher.stdout.readline())  # type: ignore[union-attr]
        (tmp_path / "t.pid").write_text(str(launcher.pid))
        reaper = reap_in_thread(launcher)

        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=0.5)
        assert stopper.stop(request()) is StopResult.STOPPED

        assert not is_alive(worker)
        assert live_group_members(launcher.pid) == []
        reaper.join(DEADLINE)
        assert launcher.returncode == -signal.SIGTERM

    def test_a_target_in_the_sidecars_own_group_is_signalled_alone(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """Never killpg our own group: the target dies, the test process and a sibling survive."""
        target = spawn(SLEEPER, new_group=False)
        sibling = spawn(SLEEPER, new_group=False)
        for proc in (target, sibling):
            assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        assert os.getpgid(target.pid) == os.getpgrp() == os.getpgid(sibling.pid)
        (tmp_path / "t.pid").write_text(str(target.pid))

        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=10.0)
        assert stopper.stop(request()) is StopResult.STOPPED

        assert target.wait(timeout=DEADLINE) == -signal.SIGTERM
        assert is_alive(os.getpid())
        assert sibling.poll() is None and is_alive(sibling.pid)

    def test_scope_tree_stops_a_job_of_a_shell_loop_alone_with_its_children(
        self, tmp_path: Path
    ) -> None:
        """`job & job & wait` puts every job in the loop's process group, where the default
        scope (the group) would stop them all. `scope: tree` signals the target and its
        descendants: it and its child go, the sibling job and the loop stay."""
        script = tmp_path / "sweep.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"sh -c 'sleep 300 & echo $! > {tmp_path}/child.pid; echo $$ > {tmp_path}/bad.pid; wait' &\n"
            f"sh -c 'echo $$ > {tmp_path}/good.pid; exec sleep 300' &\n"
            "wait\n"
        )
        launcher = subprocess.Popen(["sh", str(script)], start_new_session=True)
        try:
            for name in ("bad", "good", "child"):
                wait_for(
                    lambda n=name: (
                        (tmp_path / f"{n}.pid").read_text().strip() != ""  # type: ignore[misc]
                        if (tmp_path / f"{n}.pid").exists()
                        else False
                    ),
                    what=f"{name}.pid",
                )
            pid = {n: int((tmp_path / f"{n}.pid").read_text()) for n in ("bad", "good", "child")}
            assert os.getpgid(pid["bad"]) == os.getpgid(pid["good"]) == launcher.pid
            stopper = SignalStopper(
                pid_file_resolver(str(tmp_path / "bad.pid")), grace_seconds=10.0, scope="tree"
            )
            assert stopper.stop(request()) is StopResult.STOPPED
            assert not is_alive(pid["bad"]) and not is_alive(pid["child"])
            assert is_alive(pid["good"]), "a sibling job in the loop's group was killed"
            assert launcher.poll() is None, "the launching loop was killed"
        finally:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(timeout=DEADLINE)

    def test_a_reaped_target_is_already_exited(self, tmp_path: Path) -> None:
        """A pid file naming a process that exited and was reaped: nothing to do, success."""
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait(timeout=DEADLINE)
        (tmp_path / "t.pid").write_text(f"{dead.pid}\n")
        wait_for(lambda: _stat(dead.pid) is None, what="the reaped pid leaves /proc")

        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=1.0)
        assert stopper.stop(request()) is StopResult.ALREADY_EXITED

    def test_an_exited_but_unreaped_target_is_already_exited(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """A zombie is not a live process: nothing is signalled, success."""
        proc = spawn("pass")
        wait_for(lambda: is_zombie(proc.pid), what="the child is a zombie")
        (tmp_path / "t.pid").write_text(str(proc.pid))

        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=1.0)
        assert stopper.stop(request()) is StopResult.ALREADY_EXITED
        assert proc.wait(timeout=DEADLINE) == 0  # it exited by itself, not by a signal

    @pytest.mark.parametrize("kind", ["fifo", "directory"])
    def test_a_pid_file_that_is_not_a_file_is_refused_without_waiting(
        self, spawn: Spawn, tmp_path: Path, kind: str
    ) -> None:
        """A FIFO (or a folder) where another job's pid file should be: it is not opened for a
        writer to come, so the stop of this job goes on; as the target's own pid file, it is a
        permanent error naming the path."""
        proc = spawn("import time; time.sleep(60)")
        (tmp_path / "job-b.pid").write_text(str(proc.pid))
        odd = tmp_path / "other.pid"
        if kind == "fifo":
            os.mkfifo(odd)
        else:
            odd.mkdir()
        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=10)
        protected = StopRequest(
            decision("job-b", "tj"),
            template_context(job="job-b", tuning_job="tj", log_path=""),
            others=(template_context(job="other", tuning_job="tj", log_path=""),),
        )
        outcome: list[object] = []
        worker = threading.Thread(
            target=lambda: outcome.append(stopper.stop(protected)), daemon=True
        )
        worker.start()
        worker.join(DEADLINE)
        assert outcome == [StopResult.STOPPED]
        with pytest.raises(PermanentStopError, match=r"other\.pid.* not a regular file"):
            stopper.stop(request("other"))

    def test_a_missing_pid_file_is_a_retryable_error(self, tmp_path: Path) -> None:
        """The job may not have written its pid yet: StopError, not PermanentStopError."""
        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=1.0)
        with pytest.raises(StopError, match=r"job-b\.pid") as caught:
            stopper.stop(request("job-b"))
        assert not isinstance(caught.value, PermanentStopError)

    @pytest.mark.parametrize(
        "content",
        [b"not-a-pid\n", b"12abc", b"-5", b"0", b"1\n", b"123 456", b"\xff\xfe\x00garbage"],
        ids=["words", "trailing-letters", "negative", "zero", "init", "two-numbers", "binary"],
    )
    def test_a_pid_file_with_garbage_is_a_permanent_error(
        self, tmp_path: Path, content: bytes
    ) -> None:
        """A pid file that holds no usable pid will not improve by retrying."""
        (tmp_path / "t.pid").write_bytes(content)
        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=1.0)
        with pytest.raises(PermanentStopError):
            stopper.stop(request())

    def test_an_empty_pid_file_is_retryable(self, tmp_path: Path) -> None:
        """`echo $$ > f` creates the file before writing it: empty means 'not yet', so retry."""
        (tmp_path / "t.pid").write_text("")
        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=1.0)
        with pytest.raises(StopError) as caught:
            stopper.stop(request())
        assert not isinstance(caught.value, PermanentStopError)

    def test_reading_the_pid_file_leaves_no_file_open(self, spawn: Spawn, tmp_path: Path) -> None:
        """The pid file is closed after reading (no ResourceWarning, no leaked descriptor)."""
        proc = spawn(SLEEPER)
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        (tmp_path / "t.pid").write_text(f"{proc.pid}\n")
        resolve = pid_file_resolver(str(tmp_path / "t.pid"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert resolve(request().context, ProcessTable()) == [proc.pid]
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []

    def test_the_pid_file_template_is_filled_from_the_request(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """`{tuning_job}`, `{job}` and `{log_dir}` come from the request's context."""
        proc = spawn(SLEEPER)
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        log_dir = tmp_path / "logs"
        resolve = pid_file_resolver("{log_dir}/{tuning_job}/{job}.pid")
        (log_dir / "tj").mkdir(parents=True)
        (log_dir / "tj" / "job-b.pid").write_text(f"{proc.pid}\n")
        context = request("job-b", "tj", log_path=str(log_dir / "job-b.log")).context
        assert resolve(context, ProcessTable()) == [proc.pid]


class TestFixedResolver:
    def test_stops_the_known_child(self, spawn: Spawn) -> None:
        """`sidecar exec` knows its child's pid: that process (and its group) is stopped."""
        proc = spawn(SLEEPER)
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        stopper = SignalStopper(fixed_resolver(proc.pid), grace_seconds=10.0)
        assert stopper.stop(request()) is StopResult.STOPPED
        assert proc.wait(timeout=DEADLINE) == -signal.SIGTERM


# -- the signal backend by command line -----------------------------------------------------
class TestSignalStopperProcessMatch:
    def test_finds_and_stops_the_process_whose_cmdline_names_the_job(self, spawn: Spawn) -> None:
        """A unique `--job NAME` in a command line is found in /proc and that process stopped."""
        job = unique("job-xyz")
        target = spawn(SLEEPER, "--job", job)
        other = spawn(SLEEPER, "--job", unique("job-other"))
        for proc in (target, other):
            assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]

        resolve = process_match_resolver(r"--job {job}(?:\s|$)")
        assert resolve(request(job).context, ProcessTable()) == [target.pid]
        stopper = SignalStopper(resolve, grace_seconds=10.0)
        assert stopper.stop(request(job)) is StopResult.STOPPED

        assert target.wait(timeout=DEADLINE) == -signal.SIGTERM
        assert other.poll() is None

    def test_nothing_matching_is_already_exited(self) -> None:
        """No process has the job's name in its command line: the job has ended, success."""
        stopper = SignalStopper(process_match_resolver(r"--job {job}$"), grace_seconds=1.0)
        assert stopper.stop(request(unique("job-none"))) is StopResult.ALREADY_EXITED

    @pytest.mark.parametrize("broad", ["python", ".", "pytest|sh|bash|init"])
    def test_never_matches_the_sidecar_or_its_ancestors(self, spawn: Spawn, broad: str) -> None:
        """A pattern that matches this very process and its parents still never returns them."""
        job = unique("job-self")
        target = spawn(SLEEPER, "--job", job)
        assert target.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        own_cmdline = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if broad == "python":
            assert "python" in own_cmdline  # precondition: the regex does match us

        found = process_match_resolver(f"--job {{job}}|{broad}")(
            request(job).context, ProcessTable()
        )

        assert target.pid in found
        assert not ancestry(os.getpid()) & set(found)

    def test_the_job_name_is_matched_literally(self, spawn: Spawn) -> None:
        """Regex characters in a job name are escaped: 'a.b+c' never matches 'aXbbc'."""
        suffix = secrets.token_hex(6)
        job = f"a.b+c-{suffix}"
        literal = spawn(SLEEPER, "--job", job)
        lookalike = spawn(SLEEPER, "--job", f"aXbbc-{suffix}")
        for proc in (literal, lookalike):
            assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]

        resolve = process_match_resolver(r"--job {job}(?:\s|$)")
        assert resolve(request(job).context, ProcessTable()) == [literal.pid]
        assert SignalStopper(resolve, grace_seconds=10.0).stop(request(job)) is StopResult.STOPPED
        assert literal.wait(timeout=DEADLINE) == -signal.SIGTERM
        assert lookalike.poll() is None

    def test_a_pattern_with_a_counted_quantifier_still_resolves(self, spawn: Spawn) -> None:
        """`[0-9]{2}` is regex syntax, not a template placeholder: the target is still found."""
        job = unique("job-shard")
        target = spawn(SLEEPER, "--job", job, "--shard", "07")
        assert target.stdout.readline().strip() == "ready"  # type: ignore[union-attr]

        resolve = process_match_resolver(r"--job {job} --shard [0-9]{2}$")
        assert resolve(request(job).context, ProcessTable()) == [target.pid]


# -- the dispatcher -------------------------------------------------------------------------
# A "sidecar" of its own under a sacrificial parent: the parent runs the stopper in a child
# whose pid file names the parent itself. If the stopper signalled its ancestor, the parent
# would die of SIGTERM before printing.
PARENT_OF_A_STOPPER = """
import subprocess, sys
child = subprocess.run([sys.executable, "-c", sys.argv[1], sys.argv[2]], capture_output=True, text=True)
print("parent alive", child.stdout.strip(), flush=True)
"""
STOPPER_IN_A_CHILD = """
import os, sys
from sidecar.model import Decision
from sidecar.stoppers import StopRequest, StopRefusedError
from sidecar.templates import template_context
from sidecar.stoppers.signal import SignalStopper, pid_file_resolver
path = sys.argv[1]
with open(path, "w") as f:
    f.write(str(os.getppid()))
stopper = SignalStopper(pid_file_resolver(path), grace_seconds=1.0)
request = StopRequest(Decision("tj", "j", 2, 1.0, 0.5, 3, "sagemaker"), template_context(job="j", tuning_job="tj"))
try:
    print(stopper.stop(request))
except StopRefusedError as exc:
    print("refused:", exc)
"""


class TestNeverTheWrongProcess:
    """What a pid file (or a match) points to is checked before anything is signalled."""

    def test_a_pid_file_holding_the_sidecars_own_pid_is_refused(self, tmp_path: Path) -> None:
        """Permanent: the sidecar never stops itself, and nothing reports `stopped`."""
        (tmp_path / "t.pid").write_text(str(os.getpid()))
        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "t.pid")), grace_seconds=1.0)
        with pytest.raises(StopRefusedError, match="the sidecar itself"):
            stopper.stop(request())
        assert is_alive(os.getpid())

    def test_a_pid_file_holding_the_sidecars_parent_is_refused(self, tmp_path: Path) -> None:
        """The program that started the sidecar (a launcher, a shell) is never signalled."""
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                PARENT_OF_A_STOPPER,
                STOPPER_IN_A_CHILD,
                str(tmp_path / "p.pid"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("parent alive refused:"), result.stdout + result.stderr
        assert "an ancestor of the sidecar" in result.stdout

    def test_a_stale_pid_file_whose_pid_was_reused_is_not_signalled(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """The file was written before its pid's process started: that process is another one
        (the pid was reused). It is not signalled, and the error says the file is stale."""
        proc = spawn(SLEEPER)
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        pid_file = tmp_path / "t.pid"
        pid_file.write_text(str(proc.pid))
        long_ago = time.time() - 60
        os.utime(pid_file, (long_ago, long_ago))
        stopper = SignalStopper(pid_file_resolver(str(pid_file)), grace_seconds=1.0)
        with pytest.raises(StopError, match="is stale") as caught:
            stopper.stop(request())
        assert not isinstance(caught.value, PermanentStopError)  # a fresh file may come: retry
        assert proc.poll() is None and is_alive(proc.pid)

    def test_with_process_match_a_pid_whose_command_line_no_longer_matches_is_refused(
        self, spawn: Spawn, tmp_path: Path
    ) -> None:
        """pid_file and process_match together: the pid's command line must still match."""
        proc = spawn(SLEEPER, "--job", "someone-else")
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        (tmp_path / "t.pid").write_text(str(proc.pid))
        resolve = pid_file_resolver(str(tmp_path / "t.pid"), match="--job {job}$")
        with pytest.raises(StopError, match="no longer matches"):
            SignalStopper(resolve, grace_seconds=1.0).stop(request("job-b"))
        assert proc.poll() is None

    def test_a_target_that_launched_another_jobs_process_is_refused(self, tmp_path: Path) -> None:
        """A pid file naming a shell loop (the launcher of other jobs): its tree holds another
        known job's process, so the stop is refused and nothing at all is signalled."""
        script = tmp_path / "loop.sh"
        script.write_text(f"sleep 300 &\necho $! > {tmp_path}/other.pid\nwait\n")
        loop = subprocess.Popen(["sh", str(script)])  # in our group: it does not lead one
        try:
            wait_for(
                lambda: (
                    (tmp_path / "other.pid").exists()
                    and (tmp_path / "other.pid").read_text().strip() != ""
                ),
                what="other.pid",
            )
            other = int((tmp_path / "other.pid").read_text())
            (tmp_path / "job-b.pid").write_text(str(loop.pid))
            stopper = SignalStopper(
                pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=1.0
            )
            req = StopRequest(
                decision("job-b"),
                template_context(job="job-b", tuning_job="tj"),
                others=(template_context(job="other", tuning_job="tj"),),
            )
            with pytest.raises(StopRefusedError, match="a process of job 'other'"):
                stopper.stop(req)
            assert is_alive(other) and loop.poll() is None
        finally:
            loop.kill()
            loop.wait()
            with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
                os.kill(int((tmp_path / "other.pid").read_text()), signal.SIGKILL)

    def test_a_group_holding_another_jobs_process_is_left_alone(self, tmp_path: Path) -> None:
        """The target leads its group (setsid), but another job's process is in the group too
        (orphaned there, not the target's descendant): the target and its tree are stopped,
        not the group, and the other job runs on."""
        script = tmp_path / "group.sh"
        script.write_text(
            f"echo $$ > {tmp_path}/job-b.pid\n"
            f"(sh -c 'echo $$ > {tmp_path}/other.pid; exec sleep 300' &)\n"
            "exec sleep 300\n"
        )
        leader = subprocess.Popen(["sh", str(script)], start_new_session=True)
        try:
            for name in ("job-b", "other"):
                wait_for(
                    lambda n=name: (
                        (tmp_path / f"{n}.pid").exists()  # type: ignore[misc]
                        and (tmp_path / f"{n}.pid").read_text().strip() != ""
                    ),
                    what=f"{name}.pid",
                )
            other = int((tmp_path / "other.pid").read_text())
            assert os.getpgid(other) == leader.pid
            assert other not in ProcessTable().descendants(leader.pid)
            stopper = SignalStopper(
                pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=5.0
            )
            req = StopRequest(
                decision("job-b"),
                template_context(job="job-b", tuning_job="tj"),
                others=(template_context(job="other", tuning_job="tj"),),
            )
            assert stopper.stop(req) is StopResult.STOPPED
            assert leader.wait(timeout=DEADLINE) == -signal.SIGTERM
            assert is_alive(other), "another job's process in the group was killed"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()

    @pytest.mark.parametrize("hostile", [".*", "a|b", "(x)+", "[job]", "\\d"])
    def test_hostile_job_names_match_only_themselves(self, spawn: Spawn, hostile: str) -> None:
        """A job named `.*` (or with other regex syntax) finds its own process only."""
        suffix = secrets.token_hex(4)
        job = f"{hostile}-{suffix}"
        mine = spawn(SLEEPER, "--job", job)
        bystander = spawn(SLEEPER, "--job", f"plain-{suffix}")
        for proc in (mine, bystander):
            assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        resolve = process_match_resolver(r"--job {job}$")
        assert resolve(request(job).context, ProcessTable()) == [mine.pid]
        assert SignalStopper(resolve, grace_seconds=5.0).stop(request(job)) is StopResult.STOPPED
        assert bystander.poll() is None


class FlakyStopper:
    """A stopper that fails `failures` times, then succeeds; records when each attempt ran."""

    backend = "test"

    def __init__(self, failures: int, error: type[Exception] = StopError) -> None:
        self.failures = failures
        self.error = error
        self.attempts: list[float] = []

    def stop(self, request: StopRequest) -> StopResult:
        del request
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise self.error(f"attempt {len(self.attempts)} failed")
        return StopResult.STOPPED


class BlockingStopper:
    """A stopper that waits until released (or `hold` seconds) before succeeding."""

    backend = "test"

    def __init__(self, hold: float = DEADLINE) -> None:
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()

    def stop(self, request: StopRequest) -> StopResult:
        del request
        self.entered.set()
        self.release.wait(self.hold)
        return StopResult.STOPPED


class Recorder:
    """The dispatcher's callbacks, recorded."""

    def __init__(self) -> None:
        self.results: list[tuple[StopRequest, StopResult | None, float]] = []
        self.failures: list[tuple[StopRequest, Exception]] = []
        self.lock = threading.Lock()

    def on_result(self, outcome: StopOutcome) -> None:
        with self.lock:
            self.results.append((outcome.request, outcome.result, outcome.seconds))

    def on_failure(self, req: StopRequest, error: Exception) -> None:
        with self.lock:
            self.failures.append((req, error))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


class TestStopDispatcher:
    def test_retries_with_backoff_counting_each_failure(self, recorder: Recorder) -> None:
        """Two failures then success: 3 attempts, 2 counted failures, one result, growing gaps."""
        stopper = FlakyStopper(failures=2)
        dispatcher = StopDispatcher(
            stopper,
            on_result=recorder.on_result,
            on_failure=recorder.on_failure,
            backoff=0.05,
            attempts=5,
        )
        req = request()
        assert dispatcher.submit(req) is True
        assert dispatcher.close(DEADLINE) is True

        assert len(stopper.attempts) == 3
        assert [r for r, _ in recorder.failures] == [req, req]
        assert all(isinstance(e, StopError) for _, e in recorder.failures)
        assert [(r, result) for r, result, _ in recorder.results] == [(req, StopResult.STOPPED)]
        assert recorder.results[0][2] >= 0
        first_gap = stopper.attempts[1] - stopper.attempts[0]
        second_gap = stopper.attempts[2] - stopper.attempts[1]
        assert first_gap >= 0.045  # backoff
        assert second_gap >= 0.095  # doubled

    def test_unexpected_exceptions_are_retried_too(self, recorder: Recorder) -> None:
        """A bug-like error (not StopError) is counted and retried; the worker survives."""
        stopper = FlakyStopper(failures=1, error=RuntimeError)
        dispatcher = StopDispatcher(
            stopper, on_result=recorder.on_result, on_failure=recorder.on_failure, backoff=0.01
        )
        dispatcher.submit(request())
        assert dispatcher.close(DEADLINE)
        assert len(recorder.failures) == 1
        assert [result for _, result, _ in recorder.results] == [StopResult.STOPPED]

    def test_gives_up_after_the_last_attempt_with_one_none_result(self, recorder: Recorder) -> None:
        """Every attempt fails: each is counted, and on_result is called once with None."""
        stopper = FlakyStopper(failures=100)
        dispatcher = StopDispatcher(
            stopper,
            on_result=recorder.on_result,
            on_failure=recorder.on_failure,
            attempts=3,
            backoff=0.01,
        )
        dispatcher.submit(request())
        assert dispatcher.close(DEADLINE)
        assert len(stopper.attempts) == 3
        assert len(recorder.failures) == 3
        assert [result for _, result, _ in recorder.results] == [None]

    def test_a_permanent_error_is_not_retried(self, recorder: Recorder) -> None:
        """PermanentStopError: one attempt, one counted failure, one None result."""
        stopper = FlakyStopper(failures=100, error=PermanentStopError)
        dispatcher = StopDispatcher(
            stopper, on_result=recorder.on_result, on_failure=recorder.on_failure, backoff=0.01
        )
        dispatcher.submit(request())
        assert dispatcher.close(DEADLINE)
        assert len(stopper.attempts) == 1
        assert len(recorder.failures) == 1
        assert [result for _, result, _ in recorder.results] == [None]

    def test_each_request_gets_exactly_one_result(self, recorder: Recorder) -> None:
        """Many requests over several workers: one on_result per request, no more."""
        dispatcher = StopDispatcher(
            FlakyStopper(failures=0),
            on_result=recorder.on_result,
            on_failure=recorder.on_failure,
            workers=4,
        )
        reqs = [request(f"job-{i}") for i in range(40)]
        assert all(dispatcher.submit(r) for r in reqs)
        assert dispatcher.close(DEADLINE)
        assert sorted(r.decision.job for r, _, _ in recorder.results) == sorted(
            r.decision.job for r in reqs
        )
        assert recorder.failures == []

    def test_submit_never_blocks_a_full_queue_is_a_counted_failure(
        self, recorder: Recorder
    ) -> None:
        """One worker busy, one request queued: the next submit returns False at once."""
        stopper = BlockingStopper()
        dispatcher = StopDispatcher(
            stopper,
            on_result=recorder.on_result,
            on_failure=recorder.on_failure,
            workers=1,
            max_queue=1,
        )
        try:
            assert dispatcher.submit(request("job-1"))
            assert stopper.entered.wait(DEADLINE)  # the worker holds job-1
            assert dispatcher.submit(request("job-2"))  # fills the queue
            overflow = request("job-3")
            started = time.monotonic()
            assert dispatcher.submit(overflow) is False
            assert time.monotonic() - started < 1.0
            assert len(recorder.failures) == 1
            failed, error = recorder.failures[0]
            assert failed is overflow and isinstance(error, StopError)
        finally:
            stopper.release.set()
            assert dispatcher.close(DEADLINE)
        done = {r.decision.job: result for r, result, _ in recorder.results}
        # the overflow has an outcome too (failed): it is never reported as stopped
        assert done == {"job-1": StopResult.STOPPED, "job-2": StopResult.STOPPED, "job-3": None}

    def test_the_marker_is_written_before_the_stop_is_attempted(
        self, recorder: Recorder, tmp_path: Path
    ) -> None:
        """When stop() runs, the marker already holds the decision evidence as JSON."""
        seen: list[dict[str, object]] = []

        class MarkerCheckingStopper:
            backend = "test"

            def stop(self, request: StopRequest) -> StopResult:
                path = tmp_path / "markers" / f"{request.decision.job}.json"
                seen.append(json.loads(path.read_text()) if path.exists() else {})
                return StopResult.STOPPED

        dispatcher = StopDispatcher(
            MarkerCheckingStopper(),
            on_result=recorder.on_result,
            on_failure=recorder.on_failure,
            marker=str(tmp_path / "markers" / "{job}.json"),
        )
        dispatcher.submit(request("job-b", "tj"))
        assert dispatcher.close(DEADLINE)
        assert seen == [
            {
                "tuning_job": "tj",
                "job": "job-b",
                "rule": "sagemaker",
                "epoch": 3,
                "value": 0.9,
                "median": 0.5,
                "compared_jobs": 2,
                "early_stopped": True,
            }
        ]
        assert [result for _, result, _ in recorder.results] == [StopResult.STOPPED]

    def test_close_waits_for_in_flight_stops(self, recorder: Recorder) -> None:
        """A stop that takes a while has finished (and reported) when close() returns True."""
        stopper = BlockingStopper(hold=0.3)
        dispatcher = StopDispatcher(
            stopper, on_result=recorder.on_result, on_failure=recorder.on_failure
        )
        dispatcher.submit(request())
        assert dispatcher.close(DEADLINE) is True
        assert [result for _, result, _ in recorder.results] == [StopResult.STOPPED]

    def test_close_gives_up_after_its_timeout(self, recorder: Recorder) -> None:
        """A stop that does not finish in time: close returns False near its timeout."""
        stopper = BlockingStopper()
        dispatcher = StopDispatcher(
            stopper, on_result=recorder.on_result, on_failure=recorder.on_failure
        )
        dispatcher.submit(request())
        assert stopper.entered.wait(DEADLINE)
        started = time.monotonic()
        assert dispatcher.close(0.1) is False
        assert time.monotonic() - started < 5.0
        stopper.release.set()
        wait_for(lambda: bool(recorder.results), what="the released stop reports")

    def test_submit_after_close_is_refused_and_counted(self, recorder: Recorder) -> None:
        """A shutting-down dispatcher takes no new stops: False, a counted failure, and the
        outcome `failed` (the job is not reported stopped)."""
        dispatcher = StopDispatcher(
            FlakyStopper(0), on_result=recorder.on_result, on_failure=recorder.on_failure
        )
        assert dispatcher.close(DEADLINE)
        assert dispatcher.submit(request()) is False
        assert len(recorder.failures) == 1
        assert [result for _, result, _ in recorder.results] == [None]

    def test_a_pid_file_written_late_is_found_on_retry(
        self, recorder: Recorder, spawn: Spawn, tmp_path: Path
    ) -> None:
        """Missing pid file → retried; once the job writes it, the next attempt stops the job."""
        proc = spawn(SLEEPER)
        assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        pid_file = tmp_path / "job-b.pid"

        def on_failure(req: StopRequest, error: Exception) -> None:
            recorder.on_failure(req, error)
            pid_file.write_text(str(proc.pid))  # the job gets round to writing its pid

        dispatcher = StopDispatcher(
            SignalStopper(pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=10.0),
            on_result=recorder.on_result,
            on_failure=on_failure,
            backoff=0.01,
        )
        dispatcher.submit(request("job-b"))
        assert dispatcher.close(DEADLINE)
        assert len(recorder.failures) == 1
        assert [result for _, result, _ in recorder.results] == [StopResult.STOPPED]
        assert proc.wait(timeout=DEADLINE) == -signal.SIGTERM


class TestWriteMarker:
    def test_writes_the_evidence_as_json_at_the_templated_path(self, tmp_path: Path) -> None:
        """The marker template takes the request's placeholders; parents are created."""
        req = request("job-b", "tj", log_path=str(tmp_path / "logs" / "job-b.log"))
        path = write_marker("{log_dir}/{tuning_job}/{job}.early-stopped", req)
        assert path == tmp_path / "logs" / "tj" / "job-b.early-stopped"
        doc = json.loads(path.read_text())
        assert doc["early_stopped"] is True
        assert doc["job"] == "job-b" and doc["epoch"] == 3
        assert list(path.parent.iterdir()) == [path]  # no temporary file left behind

    @pytest.mark.parametrize("job", ["..", "../../etc", "a/b", "."])
    def test_a_job_name_never_leads_the_marker_out_of_its_folder(
        self, tmp_path: Path, job: str
    ) -> None:
        """`markers/{job}/decision.json` with job `..` wrote outside the markers folder: a
        placeholder never adds `/`, `.` or `..` to a path; nothing is written."""
        markers = tmp_path / "markers"
        with pytest.raises(ValueError, match="outside its folder"):
            write_marker(str(markers) + "/{job}/decision.json", request(job))
        assert not any(tmp_path.rglob("decision.json"))

    def test_a_job_name_never_leads_the_pid_file_out_of_its_folder(self, tmp_path: Path) -> None:
        """The same for pid files: `../x` is refused permanently, nothing is read or signalled."""
        stopper = SignalStopper(pid_file_resolver(str(tmp_path / "{job}.pid")), grace_seconds=1)
        with pytest.raises(PermanentStopError, match="outside its folder"):
            stopper.stop(request("../x"))

    def test_non_finite_values_become_null(self, tmp_path: Path) -> None:
        """JSON has no NaN: a NaN value is written as null, and the file is strict JSON."""
        req = StopRequest(
            Decision("tj", "job-b", 1, float("nan"), 0.5, 1, "sagemaker"),
            template_context(job="job-b", tuning_job="tj"),
        )
        path = write_marker(str(tmp_path / "{job}.json"), req)
        doc = json.loads(path.read_text(), parse_constant=pytest.fail)
        assert doc["value"] is None


class TestTemplateContext:
    def test_holds_job_tuning_job_log_path_and_log_dir(self) -> None:
        """The four template values; extras are added."""
        context = template_context(
            job="j", tuning_job="t", log_path="/var/log/x/j.log", extra={"pod": "p"}
        )
        assert context == {
            "job": "j",
            "tuning_job": "t",
            "log_path": "/var/log/x/j.log",
            "log_dir": "/var/log/x",
            "pod": "p",
        }

    def test_no_log_path_means_empty_log_dir(self) -> None:
        assert template_context(job="j", tuning_job="t")["log_dir"] == ""


# -- the factory ----------------------------------------------------------------------------
def config(stop: dict[str, object]) -> Config:
    return validate_config({"objective": {"metric": "loss"}, "stop": stop})


class TestMakeStopper:
    def test_dry_run_is_the_none_stopper_whatever_the_backend(self) -> None:
        """--dry-run: nothing is signalled, even with a signal target configured."""
        cfg = config({"backend": "signal", "signal": {"pid_file": "/run/{job}.pid"}})
        stopper = make_stopper(cfg, dry_run=True)
        assert isinstance(stopper, NoneStopper)
        assert stopper.stop(request()) is StopResult.DRY_RUN

    def test_backend_none_is_the_none_stopper(self) -> None:
        stopper = make_stopper(config({"backend": "none"}))
        assert isinstance(stopper, NoneStopper)
        assert stopper.backend == "none"

    @pytest.mark.parametrize(
        "target", [{"pid_file": "/run/{job}.pid"}, {"process_match": "--job {job}"}]
    )
    def test_signal_with_a_target_is_the_signal_stopper(self, target: dict[str, str]) -> None:
        stopper = make_stopper(config({"backend": "signal", "signal": target, "grace_seconds": 7}))
        assert isinstance(stopper, SignalStopper)
        assert stopper.backend == "signal"
        assert stopper.grace_seconds == 7

    def test_signal_without_a_target_is_a_config_error_naming_stop_signal(self) -> None:
        """No pid_file and no process_match: ConfigError whose message names stop.signal."""
        with pytest.raises(ConfigError, match=r"stop\.signal") as caught:
            make_stopper(config({"backend": "signal"}))
        assert "pid_file" in str(caught.value) and "process_match" in str(caught.value)
