"""Lines to samples: metric definitions, the #011 rule, numbers, templated names, epochs, redrawn
bars, regex timeouts, the byte gate, and whole files through logfile.samples_by_line (docs/design.md, "Concepts").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sidecar.definitions import EpochConfig, MetricDefinition
from sidecar.lines import decode_line
from sidecar.model import ParseCounts, Sample
from sidecar.parse import CompiledDefinition, Extractor, JobParser, parse_epoch, parse_number
from sidecar.sources.offline import FileStats, samples_by_line

AWS_XGBOOST_AUC = r".*\[[0-9]+\].*#011validation-auc:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"
TEMPLATED = r"(?P<set>\w+)-(?P<metric>\w+):(?P<value>[-+0-9.eE]+|nan|inf)"
XGBOOST_LINE = (
    "[3]\ttrain-auc:0.91\ttrain-logloss:0.3\tvalidation-auc:0.8875\tvalidation-logloss:0.41"
)
MIB = 1 << 20


def definition(name: str, regex: str, **extra: Any) -> dict[str, Any]:
    """A metric definition as SageMaker spells it."""
    return {"Name": name, "Regex": regex, **extra}


def make_extractor(
    *definitions: Mapping[str, Any],
    epoch: str | None = None,
    offset: int = 0,
    timeout: float = 1.0,
) -> Extractor:
    """An Extractor for SageMaker-style definitions and an epoch config."""
    return Extractor(
        [MetricDefinition.model_validate(d) for d in definitions],
        EpochConfig(regex=epoch, offset=offset),
        timeout=timeout,
    )


def parse(
    extractor: Extractor,
    lines: Iterable[str | bytes],
    *,
    parser: JobParser | None = None,
    counts: ParseCounts | None = None,
    finish: bool = True,
) -> list[Sample]:
    """Every sample of `lines`, each decoded as a raw log line and fed to one job's parser, then
    (with `finish`) what settles at the end of the log."""
    parser = parser if parser is not None else extractor.job_parser()
    counts = counts if counts is not None else ParseCounts()
    samples: list[Sample] = []
    for line in lines:
        raw = line.encode() if isinstance(line, str) else line
        samples += parser.feed(decode_line(raw), counts)
    if finish:
        samples += parser.finish(counts)
    return samples


def same_number(a: float, b: float) -> bool:
    """Equal floats, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


class TestParseNumber:
    """parse_number: a float in Python's syntax, also as progress bars print it."""

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("0.8875", 0.8875),
            ("-1.5", -1.5),
            ("+2", 2.0),
            ("1e-3", 0.001),
            ("3.68e+7", 3.68e7),
            ("3.68E+07", 3.68e7),
            (".5", 0.5),
            ("5.", 5.0),
            ("nan", math.nan),
            ("NaN", math.nan),
            ("NAN", math.nan),
            ("nan.0", math.nan),
            ("-nan.0", math.nan),
            ("inf", math.inf),
            ("Inf", math.inf),
            ("-inf", -math.inf),
            ("-Infinity", -math.inf),
            ("inf.0", math.inf),
            ("infinity", math.inf),
        ],
    )
    def test_parses_python_floats_and_bar_spellings(self, text: str, value: float) -> None:
        """Python float syntax (nan/inf in any case) and bar spellings like `nan.0` parse."""
        result = parse_number(text)
        assert result is not None
        assert same_number(result, value)

    @pytest.mark.parametrize(
        "text", ["", "abc", "1.2.3", "--1", "0,5", "nan.5", "e5", ".", "1e", "infinite", "0x10"]
    )
    def test_text_that_is_not_a_number_gives_none(self, text: str) -> None:
        """Text that is not a number gives None instead of raising."""
        assert parse_number(text) is None


class TestParseEpoch:
    """parse_epoch: an integer, or a float with no fractional part."""

    @pytest.mark.parametrize(
        ("text", "epoch"),
        [("3", 3), ("03", 3), ("0", 0), ("3.0", 3), ("12", 12), ("-1", -1)],
    )
    def test_whole_numbers_are_epochs(self, text: str, epoch: int) -> None:
        """Integers and floats without a fraction are epochs."""
        assert parse_epoch(text) == epoch

    @pytest.mark.parametrize("text", ["3.5", "nan", "inf", "x", ""])
    def test_fractions_and_non_numbers_are_not_epochs(self, text: str) -> None:
        """Fractions, non-finite numbers and non-numbers are not epochs."""
        assert parse_epoch(text) is None


class TestCompiledDefinition:
    """CompiledDefinition.compile: which group holds the value, the epoch, and the gating literal."""

    @pytest.mark.parametrize(
        ("regex", "value_group", "epoch_group"),
        [
            (r"val_loss=([0-9.]+)", 1, None),
            (r"(\d+)/(\d+) .* loss=(?P<value>[0-9.]+)", "value", None),
            (r"epoch (?P<epoch>\d+) loss=(?P<value>[0-9.]+)", "value", "epoch"),
            (r"epoch (?P<epoch>\d+) loss=([0-9.]+)", 2, "epoch"),
        ],
    )
    def test_value_and_epoch_groups(
        self, regex: str, value_group: str | int, epoch_group: str | None
    ) -> None:
        """The value is the `value` group, else the one unnamed group; `epoch` names the epoch."""
        compiled = CompiledDefinition.compile(
            MetricDefinition.model_validate(definition("m", regex))
        )
        assert compiled.value_group == value_group
        assert compiled.epoch_group == epoch_group

    def test_011_definitions_gate_raw_bytes_on_a_piece_without_011(self) -> None:
        """An AWS `#011` definition's byte literal is the text a raw tab-separated line has."""
        compiled = CompiledDefinition.compile(
            MetricDefinition.model_validate(definition("validation:auc", AWS_XGBOOST_AUC))
        )
        assert compiled.tab011
        assert compiled.byte_literal() == b"validation-auc:"


class TestValueGroups:
    """Values come from one unnamed group, a named `value` group; epochs from an `epoch` group."""

    @pytest.mark.parametrize(
        ("regex", "line", "value"),
        [
            (r"val_loss=([0-9.]+)", "step 10 val_loss=0.25 lr=0.1", 0.25),
            (r"(\d+)/(\d+) .* loss=(?P<value>[0-9.]+)", "10/10 [===] loss=0.5", 0.5),
            (r".*loss: (?P<value>[0-9.]+)", "1s - loss: 0.31 - val_loss: 0.29", 0.29),
        ],
    )
    def test_value_comes_from_the_value_group(self, regex: str, line: str, value: float) -> None:
        """One unnamed group, or the group named `value`, holds the metric value."""
        assert parse(make_extractor(definition("m", regex)), [line]) == [Sample("m", 1, value)]

    def test_epoch_group_sets_the_epoch(self) -> None:
        """A definition's `epoch` group gives the value's epoch, not the value's ordinal."""
        extractor = make_extractor(
            definition("loss", r"epoch (?P<epoch>\d+) loss=(?P<value>[0-9.]+)")
        )
        lines = ["epoch 5 loss=0.5", "epoch 7 loss=0.4"]
        assert parse(extractor, lines) == [Sample("loss", 5, 0.5), Sample("loss", 7, 0.4)]

    def test_a_line_without_a_match_gives_nothing(self) -> None:
        """Lines the definition does not match produce no samples and count nothing."""
        counts = ParseCounts()
        extractor = make_extractor(definition("val_loss", r"val_loss=([0-9.]+)"))
        assert parse(extractor, ["loss=0.3", "", "Epoch 1/3"], counts=counts) == []
        assert counts == ParseCounts()

    def test_a_definition_using_fuzzy_regex_syntax_still_matches(self) -> None:
        """A `regex`-module fuzzy definition matches lines as `regex.search` does (no wrong gate)."""
        extractor = make_extractor(definition("val_loss", r"(?:val_loss){e<=1}=([0-9.]+)"))
        assert extractor.might_match(b"val_loss=0.5")
        assert parse(extractor, ["val_loss=0.5"]) == [Sample("val_loss", 1, 0.5)]


class TestTab011Rule:
    """A regex containing `#011` sees each tab as `#011`, as CloudWatch shows built-in algorithms."""

    @pytest.mark.parametrize(
        "line",
        [
            "[3]\ttrain-auc:0.91\tvalidation-auc:0.8875",
            "[3]#011train-auc:0.91#011validation-auc:0.8875",
        ],
    )
    def test_aws_xgboost_definition_reads_raw_and_cloudwatch_lines(self, line: str) -> None:
        """AWS's validation-auc definition reads 0.8875 from tab and `#011` forms alike."""
        extractor = make_extractor(definition("validation:auc", AWS_XGBOOST_AUC))
        assert parse(extractor, [line]) == [Sample("validation:auc", 1, 0.8875)]

    def test_raw_xgboost_line_with_round_epochs(self) -> None:
        """With XGBoost's `[n]` rounds as epochs (offset 1), round 3 is epoch 4."""
        extractor = make_extractor(
            definition("validation:auc", AWS_XGBOOST_AUC), epoch=r"^\[(\d+)\]", offset=1
        )
        lines = [
            "[0]\ttrain-auc:0.80\tvalidation-auc:0.78",
            "[3]\ttrain-auc:0.91\tvalidation-auc:0.8875",
        ]
        assert parse(extractor, lines) == [
            Sample("validation:auc", 1, 0.78),
            Sample("validation:auc", 4, 0.8875),
        ]

    def test_definitions_without_011_see_real_tabs(self) -> None:
        """A definition without `#011` is matched against the line with its tabs unchanged."""
        extractor = make_extractor(
            definition("tabbed", r"\tvalidation-auc:([0-9.]+)"),
            definition("shown", r"#011validation-auc:([0-9.]+)"),
        )
        assert parse(extractor, ["[3]\ttrain-auc:0.91\tvalidation-auc:0.8875"]) == [
            Sample("tabbed", 1, 0.8875),
            Sample("shown", 1, 0.8875),
        ]


class TestNumbersInLines:
    """Captured text becomes a float; text that does not parse is counted and skipped."""

    @pytest.mark.parametrize(
        ("captured", "value"),
        [
            ("nan", math.nan),
            ("NaN", math.nan),
            ("inf", math.inf),
            ("-Infinity", -math.inf),
            ("1e-3", 0.001),
            ("nan.0", math.nan),
            ("3.68e+7", 3.68e7),
        ],
    )
    def test_captured_numbers_parse(self, captured: str, value: float) -> None:
        """Numbers as frameworks and bars print them become float sample values."""
        extractor = make_extractor(definition("loss", r"loss=(\S+)"))
        [sample] = parse(extractor, [f"step 1 loss={captured} lr=0.1"])
        assert (sample.metric, sample.epoch) == ("loss", 1)
        assert same_number(sample.value, value)

    def test_bad_numbers_are_counted_and_skipped(self) -> None:
        """Unparseable captured text is counted as `bad_number`, yields nothing, uses no epoch."""
        counts = ParseCounts()
        extractor = make_extractor(definition("loss", r"loss=(\S+)"))
        lines = ["loss=0.9", "loss=abc", "loss=1.2.3", "loss=0.8"]
        assert parse(extractor, lines, counts=counts) == [
            Sample("loss", 1, 0.9),
            Sample("loss", 2, 0.8),
        ]
        assert counts.errors == {"bad_number": 2}


class TestTemplatedNames:
    """A `{group}` name yields one metric per match; a plain name only the first match."""

    def test_templated_name_yields_one_sample_per_match(self) -> None:
        """XGBoost's four metrics on one line become four samples named from their groups."""
        extractor = make_extractor(
            definition("{set}:{metric}", TEMPLATED), epoch=r"^\[(\d+)\]", offset=1
        )
        assert parse(extractor, [XGBOOST_LINE]) == [
            Sample("train:auc", 4, 0.91),
            Sample("train:logloss", 4, 0.3),
            Sample("validation:auc", 4, 0.8875),
            Sample("validation:logloss", 4, 0.41),
        ]

    def test_plain_name_yields_only_the_first_match(self) -> None:
        """With a plain name, only the first match on the line counts (SageMaker behaviour)."""
        extractor = make_extractor(definition("auc", TEMPLATED))
        assert parse(extractor, [XGBOOST_LINE]) == [Sample("auc", 1, 0.91)]

    def test_templated_names_count_ordinal_epochs_per_metric(self) -> None:
        """Without an epoch regex, each templated metric counts its own values as epochs."""
        extractor = make_extractor(definition("{set}:{metric}", TEMPLATED))
        lines = ["train-auc:0.8\tvalidation-auc:0.7", "train-auc:0.9", "validation-auc:0.75"]
        assert parse(extractor, lines) == [
            Sample("train:auc", 1, 0.8),
            Sample("validation:auc", 1, 0.7),
            Sample("train:auc", 2, 0.9),
            Sample("validation:auc", 2, 0.75),
        ]

    def test_templated_value_nan_parses(self) -> None:
        """A templated definition's `nan` alternative gives a NaN value (a diverged metric)."""
        extractor = make_extractor(definition("{set}:{metric}", TEMPLATED))
        [sample] = parse(extractor, ["[1]\tvalidation-rmse:nan"])
        assert sample.metric == "validation:rmse"
        assert math.isnan(sample.value)


class TestEpochs:
    """The epoch of a value: own group, epoch regex on the line, on an earlier line, or ordinal."""

    def test_own_epoch_group_wins_over_the_epoch_regex(self) -> None:
        """A definition's `epoch` group is used even when the epoch regex matches the line."""
        extractor = make_extractor(
            definition("loss", r"epoch=(?P<epoch>\d+) loss=(?P<value>[0-9.]+)"),
            epoch=r"^\[(\d+)\]",
        )
        assert parse(extractor, ["[7] epoch=2 loss=0.5"]) == [Sample("loss", 2, 0.5)]

    def test_epoch_regex_on_the_same_line(self) -> None:
        """The epoch regex matched on the value's own line gives its epoch."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"), epoch=r"epoch (\d+):"
        )
        lines = ["epoch 4: val_loss=0.5", "epoch 9: val_loss=0.4"]
        assert parse(extractor, lines) == [Sample("val_loss", 4, 0.5), Sample("val_loss", 9, 0.4)]

    def test_named_epoch_group_in_the_epoch_regex(self) -> None:
        """An epoch regex with a named `epoch` group takes the epoch from that group."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"), epoch=r"(\d+) of (?P<epoch>\d+)"
        )
        assert parse(extractor, ["step 10 of 3 val_loss=0.5"]) == [Sample("val_loss", 3, 0.5)]

    def test_epoch_from_an_earlier_line(self) -> None:
        """Keras prints `Epoch 3/10` above the metrics: values take the last epoch seen."""
        extractor = make_extractor(
            definition("loss", r" - loss: ([0-9.]+)"),
            definition("val_loss", r"val_loss: ([0-9.]+)"),
            epoch=r"^Epoch (\d+)/\d+",
        )
        lines = [
            "Epoch 3/10",
            "10/10 [==============================] - 1s 5ms/step - loss: 0.52 - val_loss: 0.61",
            "Epoch 4/10",
            "some other output",
            "10/10 [==============================] - 1s 5ms/step - loss: 0.48 - val_loss: 0.57",
        ]
        assert parse(extractor, lines) == [
            Sample("loss", 3, 0.52),
            Sample("val_loss", 3, 0.61),
            Sample("loss", 4, 0.48),
            Sample("val_loss", 4, 0.57),
        ]

    def test_ordinal_epochs_without_an_epoch_source(self) -> None:
        """With no epoch anywhere, a metric's k-th value is epoch k, counted per metric."""
        extractor = make_extractor(
            definition("loss", r"\bloss=([0-9.]+)"), definition("val_loss", r"val_loss=([0-9.]+)")
        )
        lines = ["loss=0.9", "loss=0.8 val_loss=0.85", "loss=0.7", "val_loss=0.75"]
        assert parse(extractor, lines) == [
            Sample("loss", 1, 0.9),
            Sample("loss", 2, 0.8),
            Sample("val_loss", 1, 0.85),
            Sample("loss", 3, 0.7),
            Sample("val_loss", 2, 0.75),
        ]

    @pytest.mark.parametrize(
        ("offset", "expected"),
        [
            (1, [Sample("validation:auc", 1, 0.7), Sample("validation:auc", 2, 0.75)]),
            (5, [Sample("validation:auc", 5, 0.7), Sample("validation:auc", 6, 0.75)]),
        ],
    )
    def test_epoch_offset_is_added_to_captured_epochs(
        self, offset: int, expected: list[Sample]
    ) -> None:
        """XGBoost's 0-based `[0]` round with offset 1 is epoch 1."""
        extractor = make_extractor(
            definition("validation:auc", r"validation-auc:([0-9.]+)"),
            epoch=r"^\[(\d+)\]",
            offset=offset,
        )
        lines = ["[0]\tvalidation-auc:0.7", "[1]\tvalidation-auc:0.75"]
        assert parse(extractor, lines) == expected

    def test_epoch_offset_is_added_to_an_own_epoch_group(self) -> None:
        """The offset applies to a definition's own `epoch` group too."""
        extractor = make_extractor(
            definition("loss", r"\[(?P<epoch>\d+)\] loss=(?P<value>[0-9.]+)"), offset=1
        )
        assert parse(extractor, ["[0] loss=0.5"]) == [Sample("loss", 1, 0.5)]

    def test_values_below_epoch_1_are_counted_and_skipped(self) -> None:
        """A value whose epoch comes out below 1 is skipped and counted as `epoch_below_1`."""
        counts = ParseCounts()
        extractor = make_extractor(
            definition("validation:auc", r"validation-auc:([0-9.]+)"), epoch=r"^\[(\d+)\]"
        )
        lines = ["[0]\tvalidation-auc:0.7", "[1]\tvalidation-auc:0.75"]
        assert parse(extractor, lines, counts=counts) == [Sample("validation:auc", 1, 0.75)]
        assert counts.errors == {"epoch_below_1": 1}

    def test_new_job_counts_resume_ordinal_epochs(self) -> None:
        """A job resumed with its value counts carries on counting epochs after them."""
        extractor = make_extractor(
            definition("loss", r"\bloss=([0-9.]+)"), definition("val_loss", r"val_loss=([0-9.]+)")
        )
        parser = extractor.job_parser(counts={"val_loss": 5})
        lines = ["val_loss=0.4", "loss=0.3", "val_loss=0.35"]
        assert parse(extractor, lines, parser=parser) == [
            Sample("val_loss", 6, 0.4),
            Sample("loss", 1, 0.3),
            Sample("val_loss", 7, 0.35),
        ]

    def test_new_job_last_epoch_resumes_the_earlier_line_epoch(self) -> None:
        """A job resumed with its last epoch gives the next values that epoch until a new one."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss: ([0-9.]+)"), epoch=r"^Epoch (\d+)/"
        )
        parser = extractor.job_parser(last_epoch=4)
        lines = ["val_loss: 0.5", "Epoch 5/10", "val_loss: 0.4"]
        assert parse(extractor, lines, parser=parser) == [
            Sample("val_loss", 4, 0.5),
            Sample("val_loss", 5, 0.4),
        ]

    def test_jobs_have_separate_parse_state(self) -> None:
        """Two jobs of one extractor count epochs independently."""
        extractor = make_extractor(definition("loss", r"loss=([0-9.]+)"))
        first, second = extractor.job_parser(), extractor.job_parser()
        assert parse(extractor, ["loss=1", "loss=2"], parser=first)[-1] == Sample("loss", 2, 2.0)
        assert parse(extractor, ["loss=3"], parser=second) == [Sample("loss", 1, 3.0)]

    def test_bad_epoch_in_own_group_is_counted_and_skipped(self) -> None:
        """An own `epoch` group holding a fraction is counted as `bad_epoch` and the value skipped."""
        counts = ParseCounts()
        extractor = make_extractor(
            definition("loss", r"epoch (?P<epoch>[0-9.]+) loss=(?P<value>[0-9.]+)")
        )
        assert parse(extractor, ["epoch 1.5 loss=0.3"], counts=counts) == []
        assert counts.errors == {"bad_epoch": 1}


class TestRedrawnBars:
    """`segments: all`: every `\\r` segment is matched; each epoch settles at its last segment."""

    LIGHTNING = (
        "Epoch 0: 50%|..| val_loss=0.9\rEpoch 0: 100%|..| val_loss=0.8"
        "\rEpoch 1: 10%|..| val_loss=0.8\rEpoch 1: 100%|..| val_loss=0.7"
    )

    def test_each_epoch_settles_at_its_last_segment(self) -> None:
        """Epoch 1 takes the last segment labelled `Epoch 0` (0.8), epoch 2 the last (0.7)."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)", segments="all"),
            epoch=r"Epoch (\d+):",
            offset=1,
        )
        assert parse(extractor, [self.LIGHTNING]) == [
            Sample("val_loss", 1, 0.8),
            Sample("val_loss", 2, 0.7),
        ]

    def test_last_segment_definitions_see_only_the_last_segment(self) -> None:
        """Without `segments: all`, only what the terminal shows last is read."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"), epoch=r"Epoch (\d+):", offset=1
        )
        assert parse(extractor, [self.LIGHTNING]) == [Sample("val_loss", 2, 0.7)]

    def test_all_and_last_definitions_on_one_line(self) -> None:
        """A `segments: all` definition and a last-segment one read the same bar side by side."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)", segments="all"),
            definition("shown", r"val_loss=([0-9.]+)"),
            epoch=r"Epoch (\d+):",
            offset=1,
        )
        samples = parse(extractor, [self.LIGHTNING])
        assert sorted(samples, key=lambda s: (s.metric, s.epoch)) == [
            Sample("shown", 2, 0.7),
            Sample("val_loss", 1, 0.8),
            Sample("val_loss", 2, 0.7),
        ]

    def test_bar_with_ansi_and_crlf(self) -> None:
        """A coloured bar ending in `\\r\\n` settles the same way."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)", segments="all"),
            epoch=r"Epoch (\d+):",
            offset=1,
        )
        raw = (
            b"\x1b[2KEpoch 0: 100%|\x1b[32m##\x1b[0m| val_loss=0.8\r"
            b"\x1b[2KEpoch 1: 100%|\x1b[32m##\x1b[0m| val_loss=0.7\r"
        )
        assert parse(extractor, [raw]) == [Sample("val_loss", 1, 0.8), Sample("val_loss", 2, 0.7)]

    def bar(self) -> Extractor:
        return make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)", segments="all"),
            epoch=r"Epoch (\d+):",
            offset=1,
        )

    def test_a_value_does_not_settle_at_the_end_of_its_line(self) -> None:
        """The last segment of a line is held: the next line may show the epoch's true value."""
        extractor = self.bar()
        parser = extractor.job_parser()
        counts = ParseCounts()
        assert parser.feed(decode_line(b"Epoch 0: 100%|..| val_loss=0.9"), counts) == []
        assert parser.feed(decode_line(b"Validation: 100%|..|"), counts) == []
        assert parser.feed(decode_line(b"\rEpoch 0: 100%|..| val_loss=0.8"), counts) == []
        assert parser.finish(counts) == [Sample("val_loss", 1, 0.8)]

    def test_lightning_stale_value_is_replaced_by_the_value_after_validation(self) -> None:
        """Lightning's bar labels epoch 1 with epoch 0's val_loss until validation ends (on
        later lines): only the true value is emitted, when epoch 2's label appears."""
        lines = [
            "Epoch 0: 100%|..| 9/9 [val_loss=0.715]\rEpoch 1:   0%|..| 0/9 [val_loss=0.715]"
            "\rEpoch 1: 100%|..| 9/9 [val_loss=0.715]",
            "\rValidation DataLoader 0: 100%|..| 3/3 [00:00<00:00]\x1b[A",
            "\r          \x1b[A\rEpoch 1: 100%|..| 9/9 [val_loss=0.476]"
            "\rEpoch 2:   0%|..| 0/9 [val_loss=0.476]",
        ]
        extractor = self.bar()
        parser = extractor.job_parser()
        assert parse(extractor, lines, parser=parser, finish=False) == [
            Sample("val_loss", 1, 0.715),
            Sample("val_loss", 2, 0.476),
        ]
        assert parser.finish(ParseCounts()) == [Sample("val_loss", 3, 0.476)]

    def test_finish_returns_the_held_values_once(self) -> None:
        """After `finish` nothing is held: a second call returns nothing."""
        extractor = self.bar()
        parser = extractor.job_parser()
        parse(extractor, [self.LIGHTNING], parser=parser, finish=False)
        assert parser.finish(ParseCounts()) == [Sample("val_loss", 2, 0.7)]
        assert parser.finish(ParseCounts()) == []

    def test_an_earlier_epoch_settles_the_held_value(self) -> None:
        """A log that starts over (epoch 0 after epoch 3) settles the value held for epoch 4."""
        extractor = self.bar()
        parser = extractor.job_parser()
        counts = ParseCounts()
        assert parser.feed(decode_line(b"Epoch 3: val_loss=0.5"), counts) == []
        assert parser.feed(decode_line(b"Epoch 0: val_loss=0.9"), counts) == [
            Sample("val_loss", 4, 0.5)
        ]
        assert parser.finish(counts) == [Sample("val_loss", 1, 0.9)]

    def test_values_without_an_epoch_settle_at_the_end_of_their_line(self) -> None:
        """With no epoch anywhere, a line's last redraw is the value (its ordinal epoch)."""
        extractor = make_extractor(definition("loss", r"loss=([0-9.]+)", segments="all"))
        parser = extractor.job_parser()
        counts = ParseCounts()
        assert parser.feed(decode_line(b"loss=0.9\rloss=0.8"), counts) == [Sample("loss", 1, 0.8)]
        assert parser.feed(decode_line(b"loss=0.7"), counts) == [Sample("loss", 2, 0.7)]
        assert parser.finish(counts) == []

    def test_finish_without_redrawn_bars_returns_nothing(self) -> None:
        """Last-segment definitions emit at once: nothing is left for the end of the log."""
        extractor = make_extractor(definition("loss", r"loss=([0-9.]+)"))
        parser = extractor.job_parser()
        assert parser.feed(decode_line(b"loss=0.9"), ParseCounts()) == [Sample("loss", 1, 0.9)]
        assert parser.finish(ParseCounts()) == []


def jsonl(name: str = "{key}") -> dict[str, Any]:
    """A `kind: jsonl` definition."""
    return {"Name": name, "kind": "jsonl"}


NAN, INF = math.nan, math.inf


class TestJsonLines:
    """`kind: jsonl`: a line that is a JSON object gives each of its numbers as a metric."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ('{"epoch": 3, "val_loss": 0.5}', [("val_loss", 3, 0.5)]),
            ('{"epoch": 3.0, "loss": 1}', [("loss", 3, 1.0)]),
            ('{"step": 7, "loss": 0.5}', [("loss", 7, 0.5)]),
            ('{"epoch": 2, "step": 700, "loss": 0.5}', [("loss", 2, 0.5)]),
            ('{"loss": 0.5, "epoch": 2}', [("loss", 2, 0.5)]),
            (
                '{"epoch": 1, "train": {"loss": 0.4, "acc": {"top1": 0.9}}, "val_loss": 0.3}',
                [("train.loss", 1, 0.4), ("train.acc.top1", 1, 0.9), ("val_loss", 1, 0.3)],
            ),
            (
                '{"epoch": 1, "name": "x", "ok": true, "none": null, "arr": [1, 2], "loss": 0.3}',
                [("loss", 1, 0.3)],
            ),
            ('{"epoch": 1, "train": {"epoch": 5}}', [("train.epoch", 1, 5.0)]),
            (
                '{"epoch": 1, "loss": NaN, "g": Infinity, "h": -Infinity, "big": 1e400}',
                [("loss", 1, NAN), ("g", 1, INF), ("h", 1, -INF), ("big", 1, INF)],
            ),
            ('  {"epoch": 1, "loss": 0.3}  ', [("loss", 1, 0.3)]),
            ('\x1b[32m{"epoch": 1, "loss": 0.3}\x1b[0m', [("loss", 1, 0.3)]),
            ('step 1/9 [==   ]\r{"epoch": 1, "loss": 0.3}\r', [("loss", 1, 0.3)]),
            ('{"epoch": 1, "loss": 0.3}\rstep 1/9 [==   ]', []),
            ('{"epoch": 1, "note": "a } in text", "loss": -2e-3}', [("loss", 1, -0.002)]),
        ],
    )
    def test_numbers_of_a_json_object_line_are_metrics(
        self, line: str, expected: list[tuple[str, int, float]]
    ) -> None:
        """Every int/float (not bool) is a metric by its dotted key; the epoch from `epoch`,
        else `step`, which are not metrics themselves; only what a terminal shows last counts."""
        counts = ParseCounts()
        got = [
            (s.metric, s.epoch, s.value)
            for s in parse(make_extractor(jsonl()), [line], counts=counts)
        ]
        assert len(got) == len(expected)
        for (metric, epoch, value), want in zip(got, expected, strict=True):
            assert (metric, epoch) == want[:2]
            assert same_number(value, want[2])
        assert counts == ParseCounts()

    @pytest.mark.parametrize(
        "line",
        [
            "not json at all",
            "[1, 2, 3]",
            '"a string"',
            "42",
            "null",
            '{"broken": ',
            "{not json}",
            '{"a": 1} {"b": 2}',
            '{"a": 1} and more',
            "",
            "{}",
            '{"epoch": 2}',
            '{"epoch": 2, "phase": "val", "flags": [1.0]}',
        ],
    )
    def test_lines_that_are_not_objects_with_numbers_give_nothing_and_no_error(
        self, line: str
    ) -> None:
        """Other lines of the log, and objects without a number, are not errors."""
        counts = ParseCounts()
        assert parse(make_extractor(jsonl()), [line], counts=counts) == []
        assert counts == ParseCounts()

    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            ('{"epoch": 1.5, "loss": 0.3}', "bad_epoch"),
            ('{"epoch": "3", "loss": 0.3}', "bad_epoch"),
            ('{"epoch": true, "loss": 0.3}', "bad_epoch"),
            ('{"epoch": null, "loss": 0.3}', "bad_epoch"),
            ('{"epoch": NaN, "loss": 0.3}', "bad_epoch"),
            ('{"step": 2.5, "loss": 0.3}', "bad_epoch"),
            ('{"epoch": 0, "loss": 0.3}', "epoch_below_1"),
            ('{"step": -4, "loss": 0.3}', "epoch_below_1"),
            ('{"epoch": 1, "loss": 1' + "0" * 400 + "}", "bad_number"),
        ],
    )
    def test_bad_epochs_and_numbers_are_counted_and_skipped(self, line: str, reason: str) -> None:
        """An epoch that is not a whole number >= 1, or an integer too big for a float, is
        counted under its reason and gives no sample."""
        counts = ParseCounts()
        assert parse(make_extractor(jsonl()), [line], counts=counts) == []
        assert counts.errors == {reason: 1}

    def test_without_epoch_or_step_a_metrics_kth_value_is_epoch_k(self) -> None:
        """No `epoch`/`step` key and no epoch regex: ordinal epochs, counted per metric."""
        lines = ['{"loss": 0.5}', '{"loss": 0.4, "acc": 0.7}', "noise", '{"loss": 0.3}']
        assert parse(make_extractor(jsonl()), lines) == [
            Sample("loss", 1, 0.5),
            Sample("loss", 2, 0.4),
            Sample("acc", 1, 0.7),
            Sample("loss", 3, 0.3),
        ]

    def test_without_epoch_or_step_the_epoch_regex_applies(self) -> None:
        """An object without its own epoch takes the epoch regex's (same or earlier line)."""
        extractor = make_extractor(jsonl(), epoch=r"^Epoch (\d+)/")
        lines = ["Epoch 4/10", '{"loss": 0.3}', '{"epoch": 9, "loss": 0.2}']
        assert parse(extractor, lines) == [Sample("loss", 4, 0.3), Sample("loss", 9, 0.2)]

    def test_epoch_offset_is_added_to_the_objects_epoch(self) -> None:
        """A loop counting epochs from 0 works with `epoch.offset: 1`."""
        extractor = make_extractor(jsonl(), offset=1)
        assert parse(extractor, ['{"epoch": 0, "loss": 0.3}']) == [Sample("loss", 1, 0.3)]

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("{key}", ["train.loss", "val_loss"]),
            ("run1/{key}", ["run1/train.loss", "run1/val_loss"]),
            ("val_loss", ["val_loss"]),
            ("train.loss", ["train.loss"]),
            ("absent", []),
        ],
    )
    def test_name_template_or_plain_name_selects_metrics(
        self, name: str, expected: list[str]
    ) -> None:
        """`{key}` takes every number (also inside a longer name); a plain name one dotted key."""
        line = '{"epoch": 1, "train": {"loss": 0.4}, "val_loss": 0.3}'
        assert [s.metric for s in parse(make_extractor(jsonl(name)), [line])] == expected

    def test_jsonl_and_regex_definitions_read_the_same_line(self) -> None:
        """A config may mix both kinds: each reads the line on its own."""
        extractor = make_extractor(jsonl(), definition("raw", r'"loss": ([0-9.]+)'))
        assert parse(extractor, ['{"epoch": 2, "loss": 0.5}']) == [
            Sample("raw", 1, 0.5),
            Sample("loss", 2, 0.5),
        ]

    @pytest.mark.parametrize(
        ("raw", "might"),
        [
            (b'{"epoch": 1, "loss": 0.3}', True),
            (b'  {"loss": 0.3}', True),
            (b"epoch 1 loss=0.3", False),
            (b"", False),
        ],
    )
    def test_byte_gate_passes_only_lines_with_a_brace(self, raw: bytes, might: bool) -> None:
        """With only jsonl definitions, a line without `{` is never decoded."""
        assert make_extractor(jsonl()).might_match(raw) is might

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"Name": "{key}", "kind": "jsonl", "Regex": "x=(1)"}, "takes no Regex"),
            ({"Name": "{set}", "kind": "jsonl"}, "only {key}"),
            ({"Name": "{key}", "kind": "jsonl", "segments": "all"}, "segments: all"),
            ({"Name": "loss"}, "kind: jsonl"),
        ],
    )
    def test_wrong_jsonl_definitions_are_config_errors(
        self, fields: dict[str, Any], message: str
    ) -> None:
        """A jsonl definition has no Regex, only `{key}` placeholders, no `segments: all`; a
        definition without a Regex must say `kind: jsonl`."""
        with pytest.raises(ValidationError, match=re.escape(message)):
            MetricDefinition.model_validate(fields)


class TestRegexTimeout:
    """A regex that runs past its timeout is counted and skipped; parsing carries on."""

    SLOW_LINE = "loss=0.3 " + "a" * 5000 + "b"

    def test_timeout_is_counted_and_the_parser_continues(self) -> None:
        """`(a+)+$` on a long run of `a` times out: counted under its name, no sample, next line fine."""
        counts = ParseCounts()
        extractor = make_extractor(
            definition("slow", r"(a+)+$"),
            definition("loss", r"loss=([0-9.]+)"),
            timeout=0.05,
        )
        parser = extractor.job_parser()
        first = parse(extractor, [self.SLOW_LINE], parser=parser, counts=counts)
        assert [s for s in first if s.metric == "slow"] == []
        assert first == [Sample("loss", 1, 0.3)]
        assert counts.timeouts == {"slow": 1}
        assert parse(extractor, ["loss=0.2"], parser=parser, counts=counts) == [
            Sample("loss", 2, 0.2)
        ]
        assert counts.timeouts == {"slow": 1}

    def test_epoch_regex_timeout_is_counted_as_epoch(self) -> None:
        """A timed-out epoch regex is counted under `epoch`; values fall back to ordinal epochs."""
        counts = ParseCounts()
        extractor = make_extractor(
            definition("loss", r"loss=([0-9.]+)"), epoch=r"(a+)+$", timeout=0.05
        )
        assert parse(extractor, [self.SLOW_LINE], counts=counts) == [Sample("loss", 1, 0.3)]
        assert counts.timeouts == {"epoch": 1}


class TestMightMatch:
    """Extractor.might_match: a cheap byte test that skips lines no regex can match."""

    def make(self) -> Extractor:
        return make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"),
            definition("validation:auc", AWS_XGBOOST_AUC),
        )

    @pytest.mark.parametrize(
        ("raw", "might"),
        [
            (b"step 10 lr=0.001", False),
            (b"", False),
            (b"loss=0.3", False),
            (b"val_loss=0.3", True),
            (b"epoch 3 - val_loss=0.3 - acc 0.9", True),
            (b"[3]\ttrain-auc:0.91\tvalidation-auc:0.8875", True),
            (b"[3]#011train-auc:0.91#011validation-auc:0.8875", True),
            (b"\x1b[1mval\x1b[0m_loss=0.3", True),
            (b"val_lossX\x08=0.3", True),
            (b"\x1b[2K", True),
            (b"\x08", True),
        ],
    )
    def test_gate_passes_lines_with_a_literal_or_control_characters(
        self, raw: bytes, might: bool
    ) -> None:
        """Lines lacking every literal are skipped; a literal, ESC or backspace lets a line through."""
        assert self.make().might_match(raw) is might

    def test_epoch_literal_also_opens_the_gate(self) -> None:
        """A line the epoch regex may match passes, so `Epoch 3/10` lines are not skipped."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss: ([0-9.]+)"), epoch=r"^Epoch (\d+)/"
        )
        assert extractor.might_match(b"Epoch 3/10")
        assert not extractor.might_match(b"10/10 [====] - loss: 0.5")

    @pytest.mark.parametrize("raw", [b"", b"no digits here", b"12", b"anything at all"])
    def test_a_definition_without_literal_always_passes(self, raw: bytes) -> None:
        """When any definition has no literal (e.g. `(\\d+)`), every line passes the gate."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"), definition("n", r"(\d+)")
        )
        assert extractor.might_match(raw)

    def test_an_epoch_regex_without_literal_always_passes(self) -> None:
        """An epoch regex with no literal (e.g. `(\\d+)`) keeps the gate open."""
        extractor = make_extractor(definition("val_loss", r"val_loss=([0-9.]+)"), epoch=r"(\d+)")
        assert extractor.might_match(b"no literal here")

    @settings(database=None, deadline=None, max_examples=300)
    @given(
        lines=st.lists(
            st.lists(
                st.sampled_from(
                    [b"val_", b"loss", b"=", b"0.5", b"Epoch ", b"2/", b"\x1b[1m", b"\x08", b" "]
                ),
                max_size=6,
            ).map(b"".join),
            min_size=16,  # shorter batches take the per-line path
            max_size=60,
        )
    )
    def test_batch_candidates_are_exactly_the_lines_the_gate_passes(
        self, lines: list[bytes]
    ) -> None:
        """`candidates` (one search per literal over a whole chunk) keeps the same lines, in
        order, as calling `might_match` on each: a literal split across two lines, joined by
        the search, never lets a line through that the gate would skip, and none is lost."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"), epoch=r"Epoch (\d+)/"
        )
        expected = [i for i, raw in enumerate(lines) if extractor.might_match(raw)]
        assert extractor.candidates(lines) == expected

    @settings(database=None, deadline=None, max_examples=300)
    @given(
        raw=st.lists(
            st.sampled_from(
                [
                    b"val_",
                    b"loss",
                    b"=",
                    b"0.5",
                    b"[3]",
                    b"\t",
                    b"#011",
                    b"validation-auc:",
                    b"Epoch ",
                    b"2/",
                    b"\r",
                    b"\x1b[1m",
                    b"\x08",
                    b"\xff",
                    b" ",
                ]
            ),
            max_size=14,
        ).map(b"".join)
    )
    def test_gate_never_skips_a_line_that_yields_samples(self, raw: bytes) -> None:
        """Whenever a line yields samples or an epoch, the gate let it through."""
        extractor = make_extractor(
            definition("val_loss", r"val_loss=([0-9.]+)"),
            definition("validation:auc", AWS_XGBOOST_AUC),
            epoch=r"Epoch (\d+)/",
        )
        parser = extractor.job_parser()
        samples = parser.feed(decode_line(raw), ParseCounts())
        if samples or parser.last_epoch is not None:
            assert extractor.might_match(raw)


class TestSamplesByLine:
    """logfile.samples_by_line: a whole file through splitting, gating, decoding and parsing."""

    def test_file_with_mixed_line_ends_and_no_final_newline(self, tmp_path: Path) -> None:
        """`\\r\\n` and `\\n` lines and a last line without newline all yield their values."""
        path = tmp_path / "job-01.log"
        path.write_bytes(
            b"Epoch 1/3\r\n"
            b"10/10 [====] - loss: 0.90 - val_loss: 0.95\r\n"
            b"noise line\n"
            b"Epoch 2/3\n"
            b"10/10 [====] - loss: 0.80 - val_loss: 0.85\r\n"
            b"\x1b[1mEpoch 3/3\x1b[0m\r\n"
            b" 5/10 [==..] - loss: 0.75\r10/10 [====] - loss: 0.70 - val_loss: 0.75"
        )
        extractor = make_extractor(
            definition("val_loss", r"val_loss: ([0-9.]+)$"), epoch=r"^Epoch (\d+)/"
        )
        stats = FileStats()
        result = list(
            samples_by_line(
                path, extractor, extractor.job_parser(), max_line_bytes=MIB, stats=stats
            )
        )
        assert result == [
            [Sample("val_loss", 1, 0.95)],
            [Sample("val_loss", 2, 0.85)],
            [Sample("val_loss", 3, 0.75)],
        ]
        assert stats.lines == 7
        assert stats.truncated == 0
        assert stats.counts == ParseCounts()

    def test_long_lines_in_a_file_are_cut_and_counted(self, tmp_path: Path) -> None:
        """A line over max_line_bytes is cut and counted; the lines after it still parse."""
        path = tmp_path / "job-02.log"
        path.write_bytes(b"val_loss: 0.9\n" + b"x" * 5000 + b"\nval_loss: 0.8\n")
        extractor = make_extractor(definition("val_loss", r"val_loss: ([0-9.]+)"))
        stats = FileStats()
        result = list(
            samples_by_line(
                path, extractor, extractor.job_parser(), max_line_bytes=1024, stats=stats
            )
        )
        assert result == [[Sample("val_loss", 1, 0.9)], [Sample("val_loss", 2, 0.8)]]
        assert stats.lines == 3
        assert stats.truncated == 1
