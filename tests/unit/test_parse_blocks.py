"""A block of lines parsed at once (`JobParser.feed_lines`) gives exactly what feeding each line
alone gives: the same samples on the same lines, the same counts, the same parser state
(docs/design.md, "Parsing a chunk at once")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.lines import decode_line
from sidecar.model import ParseCounts, Sample
from sidecar.parse import MIN_BLOCK_LINES, Extractor
from tests.unit.test_parse import AWS_XGBOOST_AUC, TEMPLATED, definition, make_extractor

NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"

# name -> (definitions, epoch regex): each a way users write definitions
CONFIGS: dict[str, tuple[list[dict[str, Any]], str | None]] = {
    "plain": (
        [definition("val_loss", rf"val_loss=({NUMBER})"), definition("val_acc", r"val_acc=(\S+)")],
        None,
    ),
    "templated": ([definition("{set}:{metric}", TEMPLATED)], None),
    "aws #011": (
        [
            definition("validation:auc", AWS_XGBOOST_AUC),
            definition("train:auc", r".*\[[0-9]+\].*#011train-auc:([0-9.]+).*"),
        ],
        None,
    ),
    "epoch regex": ([definition("loss", r"loss=([0-9.]+|nan)")], r"Epoch (\d+)/"),
    "epoch group": ([definition("loss", r"epoch=(?P<epoch>\S+) loss=(?P<value>[0-9.]+)")], None),
    "across lines": (
        [
            definition("loss", r"loss\s*(?P<value>[0-9.]+)"),
            definition("acc", r"acc[^0-9]*(?P<value>[0-9.]+)"),
        ],
        r"Epoch\s+(\d+)",
    ),
    "anchored": ([definition("loss", r"^loss=(\d+)$"), definition("acc", r"\bacc=(\d*)")], None),
    "optional value": ([definition("loss", r"loss(?:=(?P<value>\d+))?")], None),
    "empty match": ([definition("n", r"(?P<value>\d*)")], None),
    "json": ([{"Name": "{key}", "kind": "jsonl"}, definition("loss", r"loss=(\d+)")], None),
    "lookbehind": ([definition("loss", r"(?<=\s)loss=(\d+)")], None),
    "regex only": ([definition("loss", r"\p{L}oss=(\d+)")], None),
}

PIECES = [
    "val_loss=0.5",
    "val_acc=1",
    "loss",
    "loss=",
    "loss=7",
    "acc",
    "acc=",
    "3",
    " ",
    "\t",
    "#011",
    "[3]",
    "train-auc:0.9",
    "validation-auc:0.8",
    "Epoch 2/",
    "Epoch",
    "epoch=3",
    "epoch=x",
    "nan",
    "1e999",
    '{"loss": 1, "epoch": 2}',
    '{"acc": 0.5}',
    "{",
    "\r",
    "\x1b[1m",
    "\x08",
    "é",
    "a-b:1",
]


def line_strategy() -> st.SearchStrategy[bytes]:
    piece = st.one_of(
        st.sampled_from(PIECES).map(str.encode), st.sampled_from([b"\xff", b"\xc3", b"\r\r"])
    )
    return st.lists(piece, max_size=3).map(b"".join)


def line_by_line(extractor: Extractor, blocks: Sequence[Sequence[bytes]]) -> dict[str, Any]:
    parser = extractor.job_parser()
    counts = ParseCounts()
    found: list[tuple[int, int, list[Sample]]] = []
    for b, block in enumerate(blocks):
        for i, raw in enumerate(block):
            samples = parser.feed(decode_line(raw), counts)
            if samples:
                found.append((b, i, samples))
    return outcome(found, parser, counts)


def by_blocks(extractor: Extractor, blocks: Sequence[Sequence[bytes]]) -> dict[str, Any]:
    parser = extractor.job_parser()
    counts = ParseCounts()
    found: list[tuple[int, int, list[Sample]]] = []
    for b, block in enumerate(blocks):
        got, parsed = parser.feed_lines(block, counts)
        assert parsed == len(block)
        found += [(b, i, samples) for i, samples in got]
    return outcome(found, parser, counts)


def outcome(found: Any, parser: Any, counts: ParseCounts) -> dict[str, Any]:
    # repr: NaN values compare equal as text
    return {
        "found": repr(found),
        "errors": counts.errors,
        "timeouts": counts.timeouts,
        "last_epoch": parser.last_epoch,
        "value_counts": dict(parser.value_counts),
        "held": parser.held(),
    }


def extractor_for(name: str) -> Extractor:
    definitions, epoch = CONFIGS[name]
    return make_extractor(*definitions, epoch=epoch)


class TestBlocksAreLines:
    @pytest.mark.parametrize("name", sorted(CONFIGS))
    @settings(database=None, deadline=None, max_examples=150)
    @given(
        lines=st.lists(line_strategy(), min_size=MIN_BLOCK_LINES, max_size=40),
        cut=st.integers(min_value=0, max_value=40),
    )
    def test_a_block_gives_what_its_lines_give_one_by_one(
        self, name: str, lines: list[bytes], cut: int
    ) -> None:
        extractor = extractor_for(name)
        blocks = [lines[:cut], lines[cut:]]
        assert by_blocks(extractor, blocks) == line_by_line(extractor, blocks)

    @pytest.mark.parametrize(
        "name", ["plain", "templated", "aws #011", "epoch regex", "epoch group", "json"]
    )
    def test_a_clean_block_is_scanned_at_once(self, name: str) -> None:
        """The comparison above is not vacuous: these configs do take the block path."""
        parser = extractor_for(name).job_parser()
        block = [b"val_loss=0.5 loss=3 epoch=2 loss=4", b"[3]\ttrain-auc:0.9\tvalidation-auc:0.8"]
        assert parser._scan_block(block * MIN_BLOCK_LINES) is not None

    @pytest.mark.parametrize("name", ["lookbehind", "regex only"])
    def test_a_pattern_that_could_see_past_its_line_goes_line_by_line(self, name: str) -> None:
        assert extractor_for(name)._block is None

    def test_a_match_across_lines_sends_the_block_line_by_line(self) -> None:
        parser = extractor_for("across lines").job_parser()
        # the scan sees only the lines holding `acc`, joined: `acc` then `5` on the next of them
        block = [b"acc", b"noise", b"acc 5"] + [b"noise"] * MIN_BLOCK_LINES
        assert parser._scan_block(block) is None
        found, parsed = parser.feed_lines(block, ParseCounts())
        assert [(i, [s.value for s in samples]) for i, samples in found] == [(2, [5.0])]
        assert parsed == len(block)

    def test_terminal_lines_are_decoded_alone_and_keep_their_place(self) -> None:
        parser = extractor_for("plain").job_parser()
        block = [b"x"] * MIN_BLOCK_LINES + [
            b"val_loss=0.9\rval_loss=0.4",
            b"\x1b[32mval_loss=0.3\x1b[0m",
            b"val_loss=0.2",
        ]
        found, parsed = parser.feed_lines(block, ParseCounts())
        assert parsed == len(block)
        assert [(i, [s.value for s in samples]) for i, samples in found] == [
            (8, [0.4]),
            (9, [0.3]),
            (10, [0.2]),
        ]
        assert [s.epoch for _, samples in found for s in samples] == [1, 2, 3]
