"""Log file formats to logical lines: Docker json-file, CRI (kubelet, CRI-O, podman), plain.

Table-driven tests of the pure decoders in `sidecar.formats`: records joined per stream, errors
counted and skipped, format detection, and resumption from a saved (offset, state) pair.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sidecar.formats import (
    CriDecoder,
    DockerJsonDecoder,
    LogicalLine,
    PlainDecoder,
    detect_format,
    make_decoder,
)
from tests.conftest import PODMAN_RUN_FLAGS

MAX = 1 << 20
SPLIT = 16 * 1024  # where Docker's json-file driver and the kubelet split long lines
TS_Z = "2024-05-01T10:00:00.123456789Z"
TS_OFFSET = "2024-05-01T10:00:00.123456789+00:00"  # how podman's conmon writes timestamps
TS_NEG = "2024-05-01T03:00:00.123456789-07:00"


def docker(log: str, stream: str = "stdout") -> bytes:
    """One json-file record as Docker writes it."""
    doc = {"log": log, "stream": stream, "time": "2024-05-01T10:00:00.123456789Z"}
    return json.dumps(doc).encode() + b"\n"


def cri(text: str | bytes, stream: str = "stdout", tag: str = "F", ts: str = TS_Z) -> bytes:
    """One CRI record: `<time> <stream> <tag> <text>\\n`."""
    body = text if isinstance(text, bytes) else text.encode()
    return f"{ts} {stream} {tag} ".encode() + body + b"\n"


def out(text: str | bytes) -> LogicalLine:
    return LogicalLine("stdout", text if isinstance(text, bytes) else text.encode())


def err(text: str | bytes) -> LogicalLine:
    return LogicalLine("stderr", text if isinstance(text, bytes) else text.encode())


def decode_all(fmt: str, data: bytes, max_line_bytes: int = MAX) -> list[LogicalLine]:
    decoder = make_decoder(fmt, max_line_bytes)  # type: ignore[arg-type]
    return decoder.feed(data)


def chunks_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


LONG = "".join(chr(ord("a") + i % 26) for i in range(40_000))  # a 40,000-byte line
LONG_ERR = "E" * 20_000


def docker_long_interleaved() -> bytes:
    """A 40,000-byte stdout line in 16 KiB records with stderr records (also split) between."""
    parts = chunks_of(LONG, SPLIT)
    err_parts = chunks_of(LONG_ERR, SPLIT)
    return (
        docker(parts[0])
        + docker(err_parts[0], "stderr")
        + docker(parts[1])
        + docker("short error\n", "stderr")  # continues the pending stderr line: joined
        + docker(err_parts[1] + "\n", "stderr")
        + docker(parts[2] + "\n")
    )


def cri_long_interleaved(ts: str = TS_Z) -> bytes:
    """A 40,000-byte stdout line in 16 KiB `P` chunks, stderr chunks and lines in between."""
    parts = chunks_of(LONG, SPLIT)
    err_parts = chunks_of(LONG_ERR, SPLIT)
    return (
        cri(parts[0], "stdout", "P", ts)
        + cri("complete error", "stderr", "F", ts)
        + cri(parts[1], "stdout", "P", ts)
        + cri(err_parts[0], "stderr", "P", ts)
        + cri(err_parts[1], "stderr", "F", ts)
        + cri(parts[2], "stdout", "F", ts)
    )


class TestDockerJson:
    """A record whose `log` lacks the final newline continues in the same stream's next record."""

    CASES = [  # noqa: RUF012
        pytest.param([docker("seq=1\n")], [out("seq=1")], id="one-record"),
        pytest.param([docker("seq="), docker("1\n")], [out("seq=1")], id="split-record-joined"),
        pytest.param(
            [docker("se"), docker("q="), docker("12\n")], [out("seq=12")], id="three-records"
        ),
        pytest.param(
            [
                docker("seq="),
                docker("warn: ", "stderr"),
                docker("disk\n", "stderr"),
                docker("1\n"),
            ],
            [err("warn: disk"), out("seq=1")],
            id="stdout-stderr-interleaved",
        ),
        pytest.param(
            [
                docker("out-a "),
                docker("err-a ", "stderr"),
                docker("out-b\n"),
                docker("err-b\n", "stderr"),
            ],
            [out("out-a out-b"), err("err-a err-b")],
            id="both-streams-pending",
        ),
        pytest.param(
            [docker_long_interleaved()],
            [err(LONG_ERR[:SPLIT] + "short error"), err(LONG_ERR[SPLIT:]), out(LONG)],
            id="16KiB-split-interleaved",
        ),
        pytest.param([docker("\n")], [out("")], id="empty-line"),
        pytest.param([docker("text\r\n")], [out("text\r")], id="crlf-keeps-cr"),
        pytest.param(
            [docker('caf\u00e9 "q"\ttab\n')], [out('caf\u00e9 "q"\ttab'.encode())], id="escapes"
        ),
        pytest.param(
            [json.dumps({"log": "no stream\n"}).encode() + b"\n"],
            [out("no stream")],
            id="stream-defaults-to-stdout",
        ),
    ]

    @pytest.mark.parametrize(("records", "expected"), CASES)
    def test_records_to_lines(self, records: list[bytes], expected: list[LogicalLine]) -> None:
        """Records decode to the lines the program wrote, per stream."""
        decoder = DockerJsonDecoder(MAX)
        assert decoder.feed(b"".join(records)) == expected
        assert decoder.errors == 0
        assert decoder.state() == {}

    @pytest.mark.parametrize(("records", "expected"), CASES)
    def test_byte_at_a_time_is_the_same(
        self, records: list[bytes], expected: list[LogicalLine]
    ) -> None:
        """Feeding one byte at a time gives the same lines: records may arrive in pieces."""
        decoder = DockerJsonDecoder(MAX)
        data = b"".join(records)
        lines = [line for i in range(len(data)) for line in decoder.feed(data[i : i + 1])]
        assert lines == expected
        assert decoder.offset == len(data)

    def test_pending_record_waits_and_is_in_state(self) -> None:
        """An unfinished line is not returned; it is held in `state()` and `offset` passes it."""
        decoder = DockerJsonDecoder(MAX)
        data = docker("seq=") + docker("x\n", "stderr")
        assert decoder.feed(data) == [err("x")]
        assert decoder.offset == len(data)
        assert set(decoder.state()["pending"]) == {"stdout"}

    def test_finish_flushes_a_pending_line(self) -> None:
        """At a stream's true end, an unfinished line counts as a line."""
        decoder = DockerJsonDecoder(MAX)
        assert decoder.feed(docker("last words")) == []
        assert decoder.finish() == [out("last words")]


class TestCri:
    """`<time> <stream> <P|F> <text>`: `P` chunks of a stream are joined until its `F` chunk."""

    CASES = [  # noqa: RUF012
        pytest.param([cri("seq=1")], [out("seq=1")], id="full-line-Z"),
        pytest.param([cri("seq=1", ts=TS_OFFSET)], [out("seq=1")], id="numeric-offset-podman"),
        pytest.param([cri("seq=1", ts=TS_NEG)], [out("seq=1")], id="negative-offset"),
        pytest.param(
            [cri("seq=", tag="P"), cri("1", tag="F")], [out("seq=1")], id="partial-then-full"
        ),
        pytest.param(
            [
                cri("seq=", tag="P"),
                cri("warn: ", "stderr", "P"),
                cri("1", tag="F"),
                cri("disk", "stderr", "F"),
            ],
            [out("seq=1"), err("warn: disk")],
            id="stdout-stderr-interleaved",
        ),
        pytest.param(
            [cri_long_interleaved()],
            [err("complete error"), err(LONG_ERR), out(LONG)],
            id="over-16KiB-in-P-chunks-interleaved",
        ),
        pytest.param(
            [cri_long_interleaved(TS_OFFSET)],
            [err("complete error"), err(LONG_ERR), out(LONG)],
            id="over-16KiB-numeric-offset",
        ),
        pytest.param([cri("")], [out("")], id="empty-full-line"),
        pytest.param([f"{TS_Z} stdout F\n".encode()], [out("")], id="no-text-field"),
        pytest.param([cri("  indented  text ")], [out("  indented  text ")], id="spaces-kept"),
        pytest.param([cri("a\tb\r")], [out("a\tb\r")], id="tab-and-cr-kept"),
        pytest.param(
            [f"{TS_Z} stdout older cri-o line\n".encode()],
            [out("older cri-o line")],
            id="no-tag-field-is-full-line",
        ),
        pytest.param([cri(b"\xff\xfeseq=1")], [out(b"\xff\xfeseq=1")], id="bytes-kept-as-is"),
    ]

    @pytest.mark.parametrize(("records", "expected"), CASES)
    def test_records_to_lines(self, records: list[bytes], expected: list[LogicalLine]) -> None:
        """Records decode to the lines the program wrote, per stream."""
        decoder = CriDecoder(MAX)
        assert decoder.feed(b"".join(records)) == expected
        assert decoder.errors == 0
        assert decoder.state() == {}

    @pytest.mark.parametrize(("records", "expected"), CASES)
    def test_odd_sized_reads_are_the_same(
        self, records: list[bytes], expected: list[LogicalLine]
    ) -> None:
        """Reads of any size give the same lines (records cut anywhere, including mid-chunk)."""
        data = b"".join(records)
        for size in (1, 7, 4096):
            decoder = CriDecoder(MAX)
            lines = [
                line for i in range(0, len(data), size) for line in decoder.feed(data[i : i + size])
            ]
            assert lines == expected, size
            assert decoder.offset == len(data)

    def test_joined_line_over_the_limit_is_cut_and_counted(self) -> None:
        """P chunks joined past `max_line_bytes` are cut to it; the line counts as truncated."""
        decoder = CriDecoder(100)
        data = cri("x" * 80, tag="P") + cri("y" * 80, tag="P") + cri("z" * 80) + cri("next")
        assert decoder.feed(data) == [out("x" * 80 + "y" * 20), out("next")]
        assert decoder.truncated == 1

    def test_finish_flushes_pending_chunks(self) -> None:
        """At a stream's true end, P chunks without their F count as a line."""
        decoder = CriDecoder(MAX)
        assert decoder.feed(cri("seq=", tag="P") + cri("7", tag="P")) == []
        assert decoder.finish() == [out("seq=7")]


class TestInvalidRecords:
    """A physical line that is not a valid record is counted in `.errors` and skipped."""

    @pytest.mark.parametrize(
        ("fmt", "data", "expected", "errors"),
        [
            pytest.param(
                "docker-json",
                b"not json\n" + docker("seq=1\n"),
                [out("seq=1")],
                1,
                id="docker-not-json",
            ),
            pytest.param(
                "docker-json",
                b'{"stream": "stdout"}\n' + docker("seq=1\n"),
                [out("seq=1")],
                1,
                id="docker-no-log",
            ),
            pytest.param(
                "docker-json",
                b'{"log": 5, "stream": "stdout"}\n[1, 2]\n"str"\n' + docker("seq=1\n"),
                [out("seq=1")],
                3,
                id="docker-log-not-string-and-not-objects",
            ),
            pytest.param(
                "docker-json",
                b'{"log": "trunc\n' + docker("seq=1\n"),
                [out("seq=1")],
                1,
                id="docker-truncated-record",
            ),
            pytest.param(
                "docker-json",
                docker("seq=") + b"garbage\n" + docker("1\n"),
                [out("seq=1")],
                1,
                id="docker-garbage-inside-a-split-line",
            ),
            pytest.param(
                "docker-json", b"\n  \n" + docker("a\n"), [out("a")], 0, id="docker-blank-lines"
            ),
            pytest.param(
                "cri", b"garbage line\n" + cri("seq=1"), [out("seq=1")], 1, id="cri-garbage"
            ),
            pytest.param(
                "cri",
                f"{TS_Z} stdin F x\n".encode() + cri("seq=1"),
                [out("seq=1")],
                1,
                id="cri-bad-stream",
            ),
            pytest.param(
                "cri",
                b"yesterday stdout F x\n" + cri("seq=1"),
                [out("seq=1")],
                1,
                id="cri-bad-timestamp",
            ),
            pytest.param(
                "cri",
                cri("seq=", tag="P") + f"{TS_Z}\n".encode() + cri("1"),
                [out("seq=1")],
                1,
                id="cri-truncated-record-inside-a-split-line",
            ),
            pytest.param("cri", b"\n \n" + cri("a"), [out("a")], 0, id="cri-blank-lines"),
        ],
    )
    def test_counted_and_skipped(
        self, fmt: str, data: bytes, expected: list[LogicalLine], errors: int
    ) -> None:
        """Bad records are skipped and counted; good ones around them decode normally."""
        decoder = make_decoder(fmt, MAX)  # type: ignore[arg-type]
        assert decoder.feed(data) == expected
        assert decoder.errors == errors
        assert decoder.offset == len(data)


class TestDetectFormat:
    """`detect_format` tells each format from its first complete line."""

    @pytest.mark.parametrize(
        ("head", "fmt"),
        [
            pytest.param(docker("seq=1\n") + docker("x"), "docker-json", id="docker"),
            pytest.param(docker("seq="), "docker-json", id="docker-split-first-record"),
            pytest.param(cri("seq=1"), "cri", id="cri-Z"),
            pytest.param(cri("seq=1", tag="P", ts=TS_OFFSET), "cri", id="cri-numeric-offset"),
            pytest.param(cri("x", "stderr", ts=TS_NEG), "cri", id="cri-stderr-negative-offset"),
            pytest.param(f"{TS_Z} stdout no tag\n".encode(), "cri", id="cri-without-tag"),
            pytest.param(b"seq=1\nseq=2\n", "plain", id="plain"),
            pytest.param(b'{"loss": 0.5}\n', "plain", id="json-without-log"),
            pytest.param(b'{"log": not json\n', "plain", id="brace-and-log-but-not-json"),
            pytest.param(b'{"log": 1}\n', "plain", id="log-not-a-string"),
            pytest.param(b"2024 stdout F x\n", "plain", id="short-timestamp"),
            pytest.param(b"2024-05-01T10:00:00Z stdin F x\n", "plain", id="not-a-stream"),
            pytest.param(b"", "plain", id="empty"),
        ],
    )
    def test_detect(self, head: bytes, fmt: str) -> None:
        assert detect_format(head) == fmt


def resume_sample(fmt: str) -> bytes:
    """A log of each format with split lines on both streams and a line over 16 KiB."""
    if fmt == "docker-json":
        return (
            docker("seq=1\n")
            + docker("seq=")
            + docker("err ", "stderr")
            + docker("2\n")
            + docker("one\n", "stderr")
            + docker_long_interleaved()
            + docker("seq=3\n")
        )
    if fmt == "cri":
        return (
            cri("seq=1")
            + cri("seq=", tag="P")
            + cri("err ", "stderr", "P", TS_OFFSET)
            + cri("2")
            + cri("one", "stderr", ts=TS_OFFSET)
            + cri_long_interleaved()
            + cri("seq=3")
        )
    return b"seq=1\nseq=2\r\n\nseq=3\n"


class TestResumption:
    """A decoder made with `offset=` and `state=` from an earlier one's continues exactly.

    `offset` is the end of the last physical line consumed and `state()` holds the pending
    continuation chunks: together (what the tailer commits, JSON-encoded) they lose and repeat
    nothing, whatever the byte at which the first decoder stopped.
    """

    @pytest.mark.parametrize("fmt", ["docker-json", "cri", "plain"])
    def test_every_stopping_point(self, fmt: str) -> None:
        """For every prefix, lines before + lines of a resumed decoder == lines of one pass."""
        data = resume_sample(fmt)
        whole = decode_all(fmt, data)
        # every byte of the short records, and a sparser sweep through the long line
        points = sorted({*range(0, 400), *range(400, len(data) + 1, 97), len(data)})
        saw_pending = False
        for k in points:
            first = make_decoder(fmt, MAX)  # type: ignore[arg-type]
            before = first.feed(data[:k])
            assert first.offset <= k
            state = json.loads(json.dumps(first.state()))  # what the store keeps
            saw_pending = saw_pending or bool(state)
            second = make_decoder(fmt, MAX, offset=first.offset, state=state)  # type: ignore[arg-type]
            after = second.feed(data[first.offset :])
            assert before + after == whole, f"stopped at byte {k}"
            assert second.offset == len(data)
        assert saw_pending == (fmt != "plain")

    @pytest.mark.parametrize("fmt", ["docker-json", "cri"])
    def test_resume_with_a_pending_chunk(self, fmt: str) -> None:
        """Stopped right after a partial record: the resumed decoder joins its continuation."""
        if fmt == "cri":
            head = cri("seq=1") + cri("seq=4", tag="P") + cri("e", "stderr", "P")
            tail = cri("warn", "stderr") + cri("2")
        else:
            head = docker("seq=1\n") + docker("seq=4") + docker("e", "stderr")
            tail = docker("warn\n", "stderr") + docker("2\n")
        first = make_decoder(fmt, MAX)  # type: ignore[arg-type]
        assert first.feed(head) == [out("seq=1")]
        assert first.offset == len(head)
        state = first.state()
        assert set(state["pending"]) == {"stdout", "stderr"}
        second = make_decoder(fmt, MAX, offset=first.offset, state=json.loads(json.dumps(state)))  # type: ignore[arg-type]
        assert second.feed(tail) == [err("ewarn"), out("seq=42")]
        assert second.offset == len(head) + len(tail)
        assert second.state() == {}

    def test_offset_stops_before_an_incomplete_record(self) -> None:
        """Half a physical record is not consumed: `offset` stays at the last complete one."""
        decoder = CriDecoder(MAX)
        full = cri("seq=1")
        half = cri("seq=2")[:20]
        assert decoder.feed(full + half) == [out("seq=1")]
        assert decoder.offset == len(full)
        assert decoder.state() == {}

    def test_plain_resumes_at_offset(self) -> None:
        """Plain text has no state: the offset alone resumes it."""
        first = PlainDecoder(MAX)
        assert first.feed(b"seq=1\nseq=") == [out("seq=1")]
        assert (first.offset, first.state()) == (6, {})
        second = PlainDecoder(MAX, offset=6)
        assert second.feed(b"seq=2\n") == [out("seq=2")]
        assert second.offset == 12


def conmon_style_log() -> bytes:
    """What podman's conmon writes with `--log-driver k8s-file`: numeric-offset timestamps,
    `P` for a buffer that ended mid-line (conmon reads 8 KiB at a time), `F` at a newline."""
    big = "x" * 20_000
    pieces = chunks_of(big, 8192)
    return (
        cri("seq=1", ts=TS_OFFSET)
        + cri("to stderr", "stderr", ts=TS_OFFSET)
        + cri("partial", tag="P", ts=TS_OFFSET)
        + cri(" end", ts=TS_OFFSET)
        + b"".join(cri(p, tag="P", ts=TS_OFFSET) for p in pieces[:-1])
        + cri(pieces[-1], ts=TS_OFFSET)
        + cri("seq=2", ts=TS_OFFSET)
    )


class TestPodmanK8sFile:
    """A log written by podman (`--log-driver k8s-file`) decodes to what the program printed."""

    SCRIPT = (
        "echo seq=1; echo to stderr >&2; printf partial; sleep 0.2; echo ' end'; "
        "head -c 20000 /dev/zero | tr '\\0' x; echo; echo seq=2"
    )
    STDOUT = [b"seq=1", b"partial end", b"x" * 20_000, b"seq=2"]  # noqa: RUF012
    STDERR = [b"to stderr"]  # noqa: RUF012

    def check(self, data: bytes) -> None:
        assert detect_format(data[: 64 * 1024]) == "cri"
        decoder = make_decoder("cri", MAX)
        lines = decoder.feed(data)
        assert decoder.errors == 0
        assert decoder.offset == len(data)
        assert [line.raw for line in lines if line.stream == "stdout"] == self.STDOUT
        assert [line.raw for line in lines if line.stream == "stderr"] == self.STDERR

    def test_conmon_style_text(self) -> None:
        """The format conmon writes (generated here, so it runs without podman)."""
        self.check(conmon_style_log())

    @pytest.mark.podman
    def test_real_podman_log(self, tmp_path: Path, podman_image: str) -> None:
        """A container run by podman with `--log-driver k8s-file` writes what the program printed."""
        path = tmp_path / "ctr.log"
        result = subprocess.run(
            [
                "podman",
                "run",
                "--rm",
                *PODMAN_RUN_FLAGS,
                "--log-driver",
                "k8s-file",
                "--log-opt",
                f"path={path}",
                podman_image,
                "/bin/sh",
                "-c",
                self.SCRIPT,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-500:]
        self.check(path.read_bytes())
