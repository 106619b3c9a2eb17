"""required_literal: the literal text every match of a regex contains, or None when unknown.

The literal gates the regex: a line without it is skipped, so a literal that some match lacks
would silently lose metric values. None ("always run the regex") is always safe.
"""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.prefilter import required_literal

AWS_XGBOOST_AUC = r".*\[[0-9]+\].*#011validation-auc:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"

PROPERTY = settings(database=None, deadline=None, max_examples=200)


def assert_literal_in_every_match(pattern: str, lines: list[str]) -> None:
    """For each line the regex matches, the required literal (if any) occurs in the line."""
    literal = required_literal(pattern)
    compiled = regex.compile(pattern)
    for line in lines:
        if compiled.search(line) is not None and literal is not None:
            assert literal in line, (pattern, literal, line)


class TestRequiredLiteral:
    """required_literal(pattern) -> the longest literal every match contains, or None."""

    @pytest.mark.parametrize(
        ("pattern", "literal"),
        [
            (r"val_loss=([0-9.]+)", "val_loss="),
            (r"loss: ([0-9.]+) - val_loss: ([0-9.]+)", " - val_loss: "),
            (r"^\[(\d+)\]", "["),
            (r"Epoch (\d+)/(\d+)", "Epoch "),
            (r"(?P<set>\w+)-(?P<metric>\w+):(?P<value>[-+0-9.eE]+|nan|inf)", "-"),
            (r"^val_loss=([0-9.]+)$", "val_loss="),
            (r"\bval_loss\b=([0-9.]+)", "val_loss="),
            (r"val_acc\s*=\s*([0-9.]+)", "val_acc"),
            (r"train_loss\.([0-9]+)", "train_loss."),
        ],
    )
    def test_plain_literal_text_is_found(self, pattern: str, literal: str) -> None:
        """The longest run of literal characters outside any optional part is the literal."""
        assert required_literal(pattern) == literal

    @pytest.mark.parametrize(
        ("pattern", "literal"),
        [
            (r"(val_)loss=([0-9.]+)", "val_loss="),
            (r"(?:validation)-(?:auc):([0-9.]+)", "validation-auc:"),
            (r"(?P<value>(?:lo)ss)=", "loss="),
            (r"(?>val_)loss=(\d)", "val_loss="),
            (r"x(?:abc)+y(\d)", "abc"),
            (r"x(?:abcd){2,5}y(\d)", "abcd"),
        ],
    )
    def test_a_literal_in_a_mandatory_group_counts(self, pattern: str, literal: str) -> None:
        """Text inside a group that every match goes through is part of the literal."""
        assert required_literal(pattern) == literal

    @pytest.mark.parametrize(
        ("pattern", "literal"),
        [
            (r"(val_)?loss=([0-9.]+)", "loss="),
            (r"(?:validation_)*loss=([0-9.]+)", "loss="),
            (r"loss(?:_validation)?=([0-9.]+)", "loss"),
            (r"ab(?:longer_optional_text)*c(\d)", "ab"),
            (r"ab(?:longer_optional_text){0,3}c(\d)", "ab"),
            (r"ab(?:longer_optional_text)*?c(\d)", "ab"),
            (r"(?:optional_prefix_text)?(\d+)", None),
        ],
    )
    def test_a_literal_in_an_optional_part_does_not_count(
        self, pattern: str, literal: str | None
    ) -> None:
        """Text under `?`, `*` or `{0,n}` may be absent from a match, so it is never the literal."""
        assert required_literal(pattern) == literal

    @pytest.mark.parametrize(
        "pattern",
        [
            r"loss=([0-9.]+)|acc=([0-9.]+)",
            r"train_loss: ([0-9.]+)|validation loss ([0-9.]+)",
            r"(?i)val_loss=([0-9.]+)",
            r"(?i)VAL_LOSS=([0-9.]+)",
            r"(\d+)",
            r"(.*)",
            r"(?x) val_loss = ([0-9.]+)",
            r"\p{L}+=([0-9.]+)",
            r"(?|loss=(\d+)|acc=(\d+))",
            r"(",
        ],
    )
    def test_no_safe_literal_gives_none(self, pattern: str) -> None:
        """Top-level alternation, case-insensitive or verbose patterns, patterns without literal
        text and syntax the parser does not know all give None: always run the regex."""
        assert required_literal(pattern) is None

    @pytest.mark.parametrize(
        ("pattern", "literal"),
        [
            (r"val_loss: ([0-9.]+)|validation loss ([0-9.]+)", "val"),
            (r"(?:loss|lost)=(\d)", "los"),
        ],
    )
    def test_a_prefix_shared_by_every_alternative_counts(self, pattern: str, literal: str) -> None:
        """Alternatives that all start with the same text still require that text."""
        assert required_literal(pattern) == literal

    @pytest.mark.parametrize(
        ("pattern", "literal"),
        [
            (r"(?i:val_loss)=([0-9.]+)", "="),
            (r"val(?i:_LOSS)=(\d)", "val"),
        ],
    )
    def test_text_in_a_case_insensitive_group_is_not_the_literal(
        self, pattern: str, literal: str
    ) -> None:
        """A `(?i:...)` group may match other letter cases, so only text outside it counts."""
        assert required_literal(pattern) == literal

    def test_aws_xgboost_definition_needs_its_011_literal(self) -> None:
        """AWS's XGBoost validation-auc definition requires `#011validation-auc:`."""
        literal = required_literal(AWS_XGBOOST_AUC)
        assert literal is not None
        assert "#011validation-auc:" in literal

    @pytest.mark.filterwarnings("ignore::FutureWarning")
    @pytest.mark.parametrize(
        ("pattern", "line"),
        [
            # `regex` fuzzy matching: `{e<=1}` allows one error; it is not literal text.
            (r"(?:val_loss){e<=1}=([0-9.]+)", "val_loss=0.5"),
            (r"(?:val_loss){e<=1}=([0-9.]+)", "val_los=0.5"),
            # `regex` POSIX class: `[[:digit:].]` is one character, not a set followed by `]`.
            (r"([[:digit:].]+)", "0.5"),
        ],
    )
    def test_regex_module_only_syntax_never_gives_a_wrong_literal(
        self, pattern: str, line: str
    ) -> None:
        """Syntax only the `regex` module knows gets None or a literal its matches really contain."""
        assert regex.compile(pattern).search(line) is not None
        literal = required_literal(pattern)
        assert literal is None or literal in line

    @PROPERTY
    @given(data=st.data())
    @pytest.mark.parametrize(
        ("pattern", "fragments"),
        [
            (r"val_loss=([0-9.]+)", ["val_", "loss", "=", "0.5", "1", ".", " ", "val_loss="]),
            (r"(val_)?loss: ([0-9.]+)", ["val_", "loss", ": ", "loss: ", "0", ".", "3", "x"]),
            (
                AWS_XGBOOST_AUC,
                ["[3]", "[", "]", "#011", "#011validation-auc:", "validation-auc:", "0.9", "e-3"],
            ),
            (r"Epoch (\d+)/(\d+)", ["Epoch", " ", "Epoch ", "3", "/", "10", "epoch "]),
            (r"x(?:abc)+y(\d)", ["x", "abc", "ab", "c", "y", "7", "xabcy"]),
            (
                r"(?P<set>\w+)-(?P<metric>\w+):(?P<value>[-+0-9.eE]+|nan|inf)",
                ["train", "-", "auc", ":", "0.9", "nan", "\t", "validation-logloss:"],
            ),
            (r"loss(?:_validation)?=([0-9.]+)", ["loss", "_validation", "=", "0.1", "_"]),
            (r"\bval_loss\b=([0-9.]+)$", ["val_loss", "=", "0.2", " ", "x", "val"]),
        ],
    )
    def test_every_match_contains_the_literal(
        self, pattern: str, fragments: list[str], data: st.DataObject
    ) -> None:
        """Whenever the compiled regex matches a line, the literal (if any) is in that line."""
        alphabet = "".join(sorted(set("".join(fragments))))
        line = data.draw(
            st.one_of(
                st.lists(st.sampled_from(fragments), max_size=12).map("".join),
                st.text(alphabet=alphabet, max_size=40),
            )
        )
        assert_literal_in_every_match(pattern, [line])

    @pytest.mark.parametrize(
        ("pattern", "line"),
        [
            (r"val_loss=([0-9.]+)", "epoch 3 val_loss=0.25"),
            (AWS_XGBOOST_AUC, "[3]#011train-auc:0.91#011validation-auc:0.8875"),
            (r"x(?:abc)+y(\d)", "xabcabcy7"),
            (r"(val_)?loss: ([0-9.]+)", "loss: 0.3"),
        ],
    )
    def test_lines_that_match_contain_the_literal(self, pattern: str, line: str) -> None:
        """Sanity for the property above: typical matching lines contain the literal."""
        assert regex.compile(pattern).search(line) is not None
        literal = required_literal(pattern)
        assert literal is not None
        assert literal in line
