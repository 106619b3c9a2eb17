"""Bytes to lines (LineSplitter) and lines to what a terminal shows (decode_line, apply_backspaces).

docs/design.md, "Concepts", Lines: split on `\\n`, a trailing `\\r\\n` is one line end, the text after the last `\\r`
is the line, ANSI escapes are removed, a backspace erases the character before it, invalid UTF-8
never raises, lines longer than `max_line_bytes` are cut to that size and counted.
"""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.lines import LineSplitter, apply_backspaces, decode_line

MIB = 1 << 20

# No example database (nothing written into the project) and no deadline (no timing thresholds).
PROPERTY = settings(database=None, deadline=None, max_examples=300)


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes]:
    """Every complete line the splitter returns for `chunks`, fed one after the other."""
    lines: list[bytes] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines


def chunked(data: bytes, size: int) -> list[bytes]:
    """`data` cut into pieces of `size` bytes (the last may be shorter)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def reference_split(data: bytes, limit: int) -> tuple[list[bytes], int]:
    """What any chunking must produce: the lines (last one without newline included) and cuts."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    truncated = sum(1 for p in parts if len(p) > limit)
    return [p[:limit] for p in parts], truncated


class TestLineSplitter:
    """LineSplitter: complete lines out, the incomplete tail held back, long lines cut."""

    @pytest.mark.parametrize(
        ("data", "lines"),
        [
            (b"a\nb\nc\n", [b"a", b"b", b"c"]),
            (b"one line\n", [b"one line"]),
            (b"\n\n", [b"", b""]),
            (b"loss=0.5\nval_loss=0.4\n", [b"loss=0.5", b"val_loss=0.4"]),
            (b"", []),
        ],
    )
    def test_splits_on_newline(self, data: bytes, lines: list[bytes]) -> None:
        """Each `\\n` ends one line; the lines come back without their newline."""
        splitter = LineSplitter(MIB)
        assert splitter.feed(data) == lines
        assert splitter.offset == len(data)
        assert splitter.finish() == []

    def test_crlf_is_one_line_end(self) -> None:
        """`\\r\\n` ends one line, not two: no empty line appears and decoding drops the `\\r`."""
        splitter = LineSplitter(MIB)
        raw = splitter.feed(b"Epoch 1/2\r\nloss: 0.5\r\nplain\n")
        assert len(raw) == 3
        assert [decode_line(line) for line in raw] == [["Epoch 1/2"], ["loss: 0.5"], ["plain"]]

    def test_partial_last_line_is_held_until_its_newline(self) -> None:
        """An incomplete last line is not returned until its `\\n` arrives in a later feed."""
        splitter = LineSplitter(MIB)
        assert splitter.feed(b"first\nloss=0.") == [b"first"]
        assert splitter.offset == len(b"first\n")
        assert splitter.pending == len(b"loss=0.")
        assert splitter.feed(b"12") == []
        assert splitter.offset == len(b"first\n")
        assert splitter.feed(b"5\nnext") == [b"loss=0.125"]
        assert splitter.offset == len(b"first\nloss=0.125\n")
        assert splitter.pending == len(b"next")

    @pytest.mark.parametrize(
        "data",
        [
            b"one\r\ntwo\nthree",
            b"Epoch 1/3\n10/10 [====] - loss: 0.5\r\n\nlast without newline",
            b"\n\r\n\r\r\n",
        ],
    )
    def test_byte_by_byte_feeding_gives_the_same_lines(self, data: bytes) -> None:
        """Feeding one byte at a time yields exactly the lines of a single feed, in order."""
        whole = LineSplitter(MIB)
        expected = whole.feed(data) + whole.finish()
        splitter = LineSplitter(MIB)
        lines = feed_all(splitter, [data[i : i + 1] for i in range(len(data))])
        lines += splitter.finish()
        assert lines == expected
        assert splitter.offset == whole.offset == len(data)

    def test_offset_is_just_past_the_last_complete_line(self) -> None:
        """After every feed, `offset` is the stream position right after the last `\\n` seen."""
        data = b"alpha\r\nbeta\ngamma\ndelta"
        splitter = LineSplitter(MIB)
        fed = b""
        for piece in (b"alp", b"ha\r", b"\nbeta\ngam", b"ma\nde", b"lta"):
            splitter.feed(piece)
            fed += piece
            assert splitter.offset == fed.rfind(b"\n") + 1
        assert fed == data

    def test_offset_starts_from_the_given_position(self) -> None:
        """A splitter resumed at a stored offset counts positions from there."""
        splitter = LineSplitter(MIB, offset=1000)
        assert splitter.feed(b"ab\ncd") == [b"ab"]
        assert splitter.offset == 1003
        assert splitter.finish() == [b"cd"]
        assert splitter.offset == 1005

    def test_finish_returns_the_incomplete_last_line(self) -> None:
        """At the stream's end, the last line without a newline counts as a line."""
        splitter = LineSplitter(MIB)
        assert splitter.feed(b"a\nval_loss=0.3") == [b"a"]
        assert splitter.finish() == [b"val_loss=0.3"]
        assert splitter.offset == len(b"a\nval_loss=0.3")
        assert splitter.pending == 0
        assert splitter.finish() == []

    @pytest.mark.parametrize(
        ("data", "lines", "truncated"),
        [
            (b"12345678\n", [b"12345678"], 0),
            (b"123456789\n", [b"12345678"], 1),
            (b"short\n123456789abc\nok\n", [b"short", b"12345678", b"ok"], 1),
            (b"123456789\nabcdefghij\n", [b"12345678", b"abcdefgh"], 2),
        ],
    )
    def test_a_line_over_the_limit_is_cut_and_counted(
        self, data: bytes, lines: list[bytes], truncated: int
    ) -> None:
        """A line longer than max_line_bytes is cut to it and counted; one of exactly that size is not."""
        for size in (1, 3, len(data)):
            splitter = LineSplitter(8)
            assert feed_all(splitter, chunked(data, size)) == lines
            assert splitter.truncated == truncated
            assert splitter.offset == len(data)

    def test_a_5_mib_line_in_one_feed_is_cut_to_1_mib(self) -> None:
        """A 5 MiB line arriving in one feed comes out as its first 1 MiB, counted once."""
        long_line = b"0123456789abcdef" * (5 * MIB // 16)
        data = b"before\n" + long_line + b"\nafter 1\r\nafter 2\n"
        splitter = LineSplitter(MIB)
        lines = splitter.feed(data)
        assert lines[0] == b"before"
        assert lines[1] == long_line[:MIB]
        assert lines[2:] == [b"after 1\r", b"after 2"]
        assert splitter.truncated == 1
        assert splitter.offset == len(data)

    def test_a_5_mib_line_in_many_chunks_is_cut_to_1_mib(self) -> None:
        """A 5 MiB line arriving in 64 KiB chunks is cut to 1 MiB, counted once; later lines are intact."""
        long_line = b"x" * (5 * MIB)
        data = b"before\n" + long_line + b"\nafter 1\nafter 2\n"
        splitter = LineSplitter(MIB)
        lines = feed_all(splitter, chunked(data, 64 * 1024))
        assert lines == [b"before", b"x" * MIB, b"after 1", b"after 2"]
        assert splitter.truncated == 1
        assert splitter.offset == len(data)

    def test_a_long_line_is_not_buffered_beyond_the_limit(self) -> None:
        """While a 5 MiB line streams in, the splitter keeps about 1 MiB of it, not all of it."""
        chunk = b"y" * (64 * 1024)
        splitter = LineSplitter(MIB)
        splitter.feed(b"start\n")
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for _ in range(5 * MIB // len(chunk)):
                assert splitter.feed(chunk) == []
            retained = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert retained < MIB + 64 * 1024
        assert splitter.offset == len(b"start\n")
        assert splitter.feed(b"\nnext\n") == [b"y" * MIB, b"next"]
        assert splitter.truncated == 1

    def test_finish_cuts_and_counts_a_long_incomplete_line(self) -> None:
        """A long last line without newline is cut to the limit and counted when the stream ends."""
        splitter = LineSplitter(MIB)
        for chunk in chunked(b"z" * (2 * MIB + 5), 100_000):
            assert splitter.feed(chunk) == []
        assert splitter.finish() == [b"z" * MIB]
        assert splitter.truncated == 1
        assert splitter.offset == 2 * MIB + 5

    @PROPERTY
    @given(
        data=st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")),
        cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
        limit=st.integers(min_value=1, max_value=40),
    )
    def test_any_chunking_gives_the_lines_of_the_whole_stream(
        self, data: bytes, cuts: list[int], limit: int
    ) -> None:
        """However the stream is cut into feeds, the lines, cuts and offsets are the same."""
        bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        splitter = LineSplitter(limit)
        lines: list[bytes] = []
        fed = 0
        for start, end in itertools.pairwise(bounds):
            lines += splitter.feed(data[start:end])
            fed = end
            assert splitter.offset == data.rfind(b"\n", 0, fed) + 1
            assert splitter.offset + splitter.pending == fed
        lines += splitter.finish()
        expected, truncated = reference_split(data, limit)
        assert lines == expected
        assert splitter.truncated == truncated
        assert splitter.offset == len(data)


class TestDecodeLine:
    """decode_line: a raw line as a terminal shows it, split into its `\\r` redraw segments."""

    @pytest.mark.parametrize(
        ("raw", "segments"),
        [
            (b"loss: 0.5", ["loss: 0.5"]),
            (b"loss: 0.5\r", ["loss: 0.5"]),
            (b"", [""]),
            (b"\r", [""]),
            ("█ 100% caf\u00e9".encode(), ["█ 100% caf\u00e9"]),
        ],
    )
    def test_plain_lines_pass_through(self, raw: bytes, segments: list[str]) -> None:
        """A line without control characters is itself; a trailing `\\r` (from `\\r\\n`) is dropped."""
        assert decode_line(raw) == segments

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            (
                b"  0%|          | 0/10 [00:00<?, ?it/s]\r 50%|#####     | 5/10 loss=0.9"
                b"\r100%|##########| 10/10 loss=0.31",
                "100%|##########| 10/10 loss=0.31",
            ),
            (
                b"1/3 [=========>....................] - ETA: 0s - loss: 0.9000"
                b"\r3/3 [==============================] - 1s - loss: 0.5 - val_loss: 0.4",
                "3/3 [==============================] - 1s - loss: 0.5 - val_loss: 0.4",
            ),
            (b"Epoch 0: 10%\rEpoch 0: 100%\r", "Epoch 0: 100%"),
        ],
    )
    def test_the_last_redraw_segment_is_what_counts(self, raw: bytes, shown: str) -> None:
        """For a progress line redrawn with `\\r`, the last segment is the one a terminal shows."""
        segments = decode_line(raw)
        assert segments[-1] == shown
        assert all("\r" not in s for s in segments)

    def test_redraw_segments_are_all_kept_in_order(self) -> None:
        """Every non-empty `\\r` segment is returned, oldest first (for `segments: all`)."""
        raw = b"Epoch 0: 50% val_loss=0.9\rEpoch 0: 100% val_loss=0.8\r\rEpoch 1: 10%"
        assert decode_line(raw) == [
            "Epoch 0: 50% val_loss=0.9",
            "Epoch 0: 100% val_loss=0.8",
            "Epoch 1: 10%",
        ]

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            (b"\x1b[1mloss\x1b[0m: 0.5", "loss: 0.5"),
            (b"\x1b[32mval_loss=0.25\x1b[39m", "val_loss=0.25"),
            (b"\x1b[1;31;40mred\x1b[m", "red"),
            (b"\x1b[2K\x1b[Aval_loss=0.3", "val_loss=0.3"),
            (b"\x1b[?25lEpoch 1: 100%\x1b[?25h", "Epoch 1: 100%"),
            (b"\x1b]0;title\x07loss=1", "loss=1"),
            (b"\x1b]8;;https://x.org\x1b\\link\x1b]8;;\x1b\\ text", "link text"),
            (b"\x1b[38;5;208mloss\x1b[0m=\x1b[1m0.7\x1b[22m", "loss=0.7"),
            # `tput sgr0` (colour reset) on xterm-like terminals is "\x1b(B\x1b[m".
            (b"\x1b[1mloss=0.5\x1b(B\x1b[m", "loss=0.5"),
            # DECSC / DECRC: save and restore the cursor position.
            (b"\x1b7loss=0.5\x1b8", "loss=0.5"),
        ],
    )
    def test_ansi_escape_sequences_are_removed(self, raw: bytes, shown: str) -> None:
        """Colour, erase, cursor-move and title escape sequences vanish from the line."""
        assert decode_line(raw) == [shown]

    def test_ansi_codes_in_every_redraw_segment_are_removed(self) -> None:
        """Escapes are removed in each `\\r` segment, and erase-line codes do not add segments."""
        raw = b"\x1b[2K\x1b[1mloss\x1b[0m=0.9\r\x1b[2K\x1b[1mloss\x1b[0m=0.8\r\x1b[K"
        assert decode_line(raw) == ["loss=0.9", "loss=0.8"]

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            (b"loss: 0.99\x08\x08\x08\x080.50", "loss: 0.50"),
            (b"abc\x08", "ab"),
            (b"\x08\x08start", "start"),
            # Keras verbose=1: the next bar is preceded by one backspace per character and `\r`.
            (
                b"1/2 [==>...] - loss: 0.9" + b"\x08" * 24 + b"\r"
                b"2/2 [======] - loss: 0.5" + b"\x08" * 24 + b"\r"
                b"2/2 [======] - loss: 0.5 - val_loss: 0.4",
                "2/2 [======] - loss: 0.5 - val_loss: 0.4",
            ),
            (b"1/2 [==>...] - loss: 0.9" + b"\x08" * 24 + b"2/2 - loss: 0.5", "2/2 - loss: 0.5"),
        ],
    )
    def test_backspaces_erase_the_character_before_them(self, raw: bytes, shown: str) -> None:
        """A backspace erases the character before it, so the overwritten text disappears."""
        segments = decode_line(raw)
        assert segments[-1] == shown
        assert all("\b" not in s for s in segments)

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            (b"loss=\xff0.5", "loss=\ufffd0.5"),
            (b"\xc3\x28 val_loss=0.1", "\ufffd( val_loss=0.1"),
            (b"cut mid-char \xe2\x96", "cut mid-char \ufffd"),
            (b"\x80\x81\r\xfeok", "\ufffdok"),
        ],
    )
    def test_invalid_utf8_becomes_replacement_characters(self, raw: bytes, shown: str) -> None:
        """Invalid UTF-8 bytes become U+FFFD; the rest of the line is decoded as usual."""
        assert decode_line(raw)[-1] == shown

    @settings(database=None, deadline=None, max_examples=500)
    @given(
        raw=st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.sampled_from(
                    [b"\r", b"\x08", b"\x1b", b"\x1b[", b"[2K", b"\xff", b"\xe2\x96", b"a", b"0.5"]
                ),
                max_size=40,
            ).map(b"".join),
        )
    )
    def test_never_raises_and_returns_at_least_one_segment(self, raw: bytes) -> None:
        """Any bytes decode to one or more segments, none holding `\\r` or a backspace."""
        segments = decode_line(raw)
        assert segments
        assert all(isinstance(s, str) for s in segments)
        assert all("\r" not in s and "\b" not in s for s in segments)


class TestApplyBackspaces:
    """apply_backspaces: each backspace erases the character before it."""

    @pytest.mark.parametrize(
        ("text", "result"),
        [
            ("", ""),
            ("abc", "abc"),
            ("abc\b", "ab"),
            ("abc\b\b\b", ""),
            ("ab\b\b\b\bc", "c"),
            ("\b\bx", "x"),
            ("0.99\b\b50", "0.50"),
            ("a\bb\bc", "c"),
        ],
    )
    def test_each_backspace_erases_one_character(self, text: str, result: str) -> None:
        """Backspaces remove the preceding character; at the start of the text they do nothing."""
        assert apply_backspaces(text) == result
