"""Shared fixtures: sample logs, configs written to tmp files, the CLI run as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"


def in_ci() -> bool:
    """CI sets `CI`: there, a missing external component fails a test instead of skipping it."""
    return bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skip on a laptop; fail under CI, where every component must be present."""
    if in_ci():
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config text to a tmp file and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m sidecar ARGS` as a real subprocess."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "sidecar", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd,
            timeout=120,
            check=False,
        )

    return run


# podman ------------------------------------------------------------------------------------
# This machine's podman needs runc (crun refuses the hybrid cgroups) and explicit ulimits; no
# image can be pulled, so the test image is imported from a tarball of host binaries.
PODMAN_RUN_FLAGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--net",
    "none",
]
IMAGE_BINARIES = ["sh", "sleep", "echo", "cat", "head", "tr", "printf", "kill"]


def _copy_with_libraries(binary: str, root: Path) -> None:
    """Copy a host binary and the shared libraries `ldd` names into an image root."""
    import re
    import shutil

    src = Path(shutil.which(binary) or binary).resolve()
    targets = [src]
    ldd = subprocess.run(["ldd", str(src)], capture_output=True, text=True, check=False)
    targets += [Path(p) for p in re.findall(r"(/\S+) \(0x", ldd.stdout)]
    for target in targets:
        dest = root / str(target).lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target.resolve(), dest)
    (root / "bin").mkdir(exist_ok=True)
    link = root / "bin" / binary
    if not link.exists():
        link.symlink_to(src)


@pytest.fixture(scope="session")
def podman_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A minimal image (sh, sleep, echo, cat, head, tr, printf, kill) imported into podman."""
    import shutil
    import tarfile

    if shutil.which("podman") is None or shutil.which("runc") is None:
        skip_or_fail("podman and runc are not installed (apt-get install podman runc)")
    root = tmp_path_factory.mktemp("image") / "root"
    for binary in IMAGE_BINARIES:
        _copy_with_libraries(binary, root)
    for empty in ("tmp", "proc", "sys", "dev", "etc"):
        (root / empty).mkdir(exist_ok=True)
    tar = root.parent / "rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(root, arcname=".")
    tag = "localhost/sidecar-test:latest"
    result = subprocess.run(
        ["podman", "import", str(tar), tag], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        skip_or_fail(f"podman import failed: {result.stderr.strip()[-300:]}")
    return tag


@pytest.fixture(scope="session")
def podman_socket(podman_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`podman system service` on a private unix socket: Docker's Engine API, served by podman."""
    import time

    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    # its log goes to a file: a pipe nobody reads would fill up and block the service
    service_log = sock.parent / "service.log"
    with service_log.open("wb") as err:
        proc = subprocess.Popen(
            ["podman", "--runtime", "runc", "system", "service", "--time=0", f"unix://{sock}"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"unix://{sock}"
    try:
        import docker

        deadline = time.monotonic() + 30
        while True:
            try:
                client = docker.DockerClient(base_url=url)
                try:
                    client.ping()
                finally:
                    client.close()
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = service_log.read_text(errors="replace")
                    skip_or_fail(f"podman system service did not start: {exc} {text[-300:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# PostgreSQL --------------------------------------------------------------------------------
# Tests use SIDECAR_TEST_POSTGRES_DSN when set, else this server (trust auth); each test gets a
# schema of its own, created for it and dropped after.
DEFAULT_TEST_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def with_query(url: str, **params: str) -> str:
    """`url` with query parameters added (percent-encoded, spaces as %20 as libpq wants)."""
    from urllib.parse import quote, urlencode

    return url + ("&" if "?" in url else "?") + urlencode(params, quote_via=quote)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test server's URL; skips (fails under CI) when psycopg or the server is missing."""
    dsn = os.environ.get("SIDECAR_TEST_POSTGRES_DSN") or DEFAULT_TEST_POSTGRES_DSN
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install -e '.[postgres]')")
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        skip_or_fail(f"no PostgreSQL server answers at {dsn} ({' '.join(str(exc).split())})")
    return dsn


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema `t_<hex>` on the test server, dropped (with everything in it) after."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


@pytest.fixture
def postgres_url(postgres_dsn: str, postgres_schema: str) -> str:
    """A `postgresql://` store URL whose search_path is the test's own schema."""
    return with_query(postgres_dsn, options=f"-csearch_path={postgres_schema}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# a PostgreSQL server of the test's own, which it may stop and start (outage tests) ----------
@dataclass
class PrivateServer:
    """A PostgreSQL cluster of the test's own, on its own port, that it may stop and start."""

    bindir: Path
    data: Path
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data / "db"), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-w", "-l", str(self.data / "log"), "-o", options, "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """initdb + pg_ctl from Debian's postgresql packages, run as `postgres` when we are root."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        skip_or_fail("initdb is not installed (apt-get install postgresql)")
    bindir = found[-1].parent
    run_as: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="sidecar-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            skip_or_fail("running as root without runuser to start PostgreSQL as postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres", "postgres")
    server = PrivateServer(bindir, data, closed_port(), run_as)
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data / "db"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(data, ignore_errors=True)


# a virtualenv without extras ----------------------------------------------------------------
@pytest.fixture(scope="session")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the sidecar installed without any extra (no docker, kubernetes,
    psycopg, matplotlib): what `pip install early-stopping-sidecar` gives a user."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"installing the sidecar into a venv failed: {result.stderr[-500:]}")
    return venv
