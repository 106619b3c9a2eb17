"""Golden tests of the built-in presets.

- Every preset file loads and says what it is and where its regexes come from.
- Every sample log in sample_logs/ (written by the real framework, see sample_logs/generate.py),
  parsed with its suite's preset, yields exactly the series the framework's own API reported
  (`<job>.truth.json`): the same metrics, the same epochs, values equal at the precision the log
  prints them.
- `sidecar replay --json` over each sample tuning job gives its stored `expected_replay.json`.
- The Docker json-file and CRI copies parse exactly like the plain logs.
- The SageMaker presets match log lines that AWS's built-in algorithms printed, as published.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.model import Sample
from sidecar.parse import Extractor
from sidecar.presets import load_preset, preset_names
from sidecar.sources.offline import FileStats, samples_by_line

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LOGS = ROOT / "sample_logs"
MAX_LINE = 1 << 20

SUITES = sorted(p.parent.name for p in SAMPLE_LOGS.glob("*/suite.json"))
EXPECTED_PRESETS = {
    "xgboost",
    "lightgbm",
    "keras",
    "transformers",
    "lightning",
    "sklearn",
    "keyvalue",
    "jsonl",
    "sagemaker-xgboost",
    "sagemaker-linear-learner",
    "sagemaker-image-classification",
    "sagemaker-object-detection",
    "sagemaker-seq2seq",
    "sagemaker-ip-insights",
}


def manifest(suite: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SAMPLE_LOGS / suite / "suite.json").read_text())
    return doc


def truth(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def parse(path: Path, preset_name: str, fmt: Any = "auto") -> tuple[list[Sample], FileStats]:
    """Every sample the preset extracts from one log, in order (the end of the log included)."""
    preset = load_preset(preset_name)
    extractor = Extractor(preset.metric_definitions, preset.epoch, timeout=5.0)
    parser = extractor.job_parser()
    stats = FileStats()
    samples: list[Sample] = []
    for line in samples_by_line(
        path, extractor, parser, max_line_bytes=MAX_LINE, stats=stats, fmt=fmt
    ):
        samples.extend(line)
    samples.extend(parser.finish(stats.counts))
    return samples, stats


def final_series(samples: list[Sample]) -> dict[str, dict[int, float]]:
    """metric -> epoch -> value, a repeated epoch replacing the earlier value (docs/design.md, "Concepts")."""
    series: dict[str, dict[int, float]] = {}
    for s in samples:
        series.setdefault(s.metric, {})[s.epoch] = s.value
    return series


def expected_series(doc: dict[str, Any]) -> dict[str, dict[int, float]]:
    """The truth file's series, restricted to the epochs the log shows (Rich: the last one)."""
    series = {m: {int(e): float(v) for e, v in pairs} for m, pairs in doc["series"].items()}
    if doc.get("printed_epochs") == "last":
        series = {m: {max(vs): vs[max(vs)]} for m, vs in series.items() if vs}
    return series


def same(parsed: float, exact: float, printed: dict[str, float]) -> bool:
    """Equal at the precision the log prints: within half a unit of its last printed digit."""
    if math.isnan(exact) or math.isnan(parsed):
        return math.isnan(exact) and math.isnan(parsed)
    return math.isclose(parsed, exact, rel_tol=printed["rel_tol"], abs_tol=printed["abs_tol"])


def assert_matches_truth(
    samples: list[Sample], doc: dict[str, Any], printed: dict[str, float], label: str
) -> None:
    got = final_series(samples)
    want = expected_series(doc)
    assert sorted(got) == sorted(want), f"{label}: metrics differ"
    for metric, values in want.items():
        assert sorted(got[metric]) == sorted(values), f"{label}: epochs of {metric} differ"
        bad = [
            (epoch, got[metric][epoch], value)
            for epoch, value in values.items()
            if not same(got[metric][epoch], value, printed)
        ]
        assert not bad, f"{label}: {metric} (epoch, parsed, truth) outside {printed}: {bad[:5]}"


def logs_of(suite: str) -> list[tuple[str, str]]:
    return [(suite, log) for log in manifest(suite)["logs"]]


ALL_LOGS = [pair for suite in SUITES for pair in logs_of(suite)]


def test_sample_logs_present() -> None:
    assert len(SUITES) >= 10, SUITES
    total = sum(f.stat().st_size for f in SAMPLE_LOGS.rglob("*") if f.is_file())
    assert total < 8_000_000, f"sample_logs/ is {total} bytes: keep it small"


# ------------------------------------------------------------------------------- preset files


def test_every_preset_is_shipped() -> None:
    assert set(preset_names()) >= EXPECTED_PRESETS


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_with_description_and_origin(name: str) -> None:
    preset = load_preset(name)
    assert preset.description.strip(), name
    assert preset.origin.strip(), name
    assert preset.metric_definitions
    Extractor(preset.metric_definitions, preset.epoch, timeout=1.0)  # every regex compiles


# ------------------------------------------------------------------------------- golden parses


@pytest.mark.parametrize(("suite", "log"), ALL_LOGS, ids=[f"{s}/{g}" for s, g in ALL_LOGS])
def test_log_yields_ground_truth(suite: str, log: str) -> None:
    info = manifest(suite)
    path = SAMPLE_LOGS / suite / log
    samples, stats = parse(path, info["preset"])
    doc = truth(path.with_name(log.removesuffix(".log") + ".truth.json"))
    assert_matches_truth(samples, doc, info["printed"], f"{suite}/{log}")
    assert not stats.counts.errors, stats.counts.errors
    assert not stats.counts.timeouts, stats.counts.timeouts
    assert stats.truncated == 0


@pytest.mark.parametrize(("suite", "log"), ALL_LOGS, ids=[f"{s}/{g}" for s, g in ALL_LOGS])
def test_every_emitted_value_is_the_epochs_true_value(suite: str, log: str) -> None:
    """The rule decides on each value as it is emitted: none may be a stale one replaced later
    (Lightning's tqdm bar shows an epoch's label with the previous epoch's validation values
    until validation ends, on a later line: docs/design.md, "Concepts", Redrawn bars)."""
    info = manifest(suite)
    path = SAMPLE_LOGS / suite / log
    samples, _ = parse(path, info["preset"])
    want = expected_series(truth(path.with_name(log.removesuffix(".log") + ".truth.json")))
    wrong = [
        s
        for s in samples
        if s.metric in want
        and s.epoch in want[s.metric]
        and not same(s.value, want[s.metric][s.epoch], info["printed"])
    ]
    assert not wrong, f"{len(wrong)} stale value(s), first {wrong[:3]}"


# ------------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def replay_cli() -> Callable[[str], dict[str, Any]]:
    def run(suite: str) -> dict[str, Any]:
        folder = SAMPLE_LOGS / suite
        proc = subprocess.run(
            [sys.executable, "-m", "sidecar", "replay", "-c", "config.yaml", "--json"]
            + manifest(suite)["logs"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        doc: dict[str, Any] = json.loads(proc.stdout)
        return doc

    return run


@pytest.mark.parametrize("suite", SUITES)
def test_replay_gives_expected_decisions(
    suite: str, replay_cli: Callable[[str], dict[str, Any]]
) -> None:
    expected = json.loads((SAMPLE_LOGS / suite / "expected_replay.json").read_text())
    assert replay_cli(suite) == expected


def test_sample_tuning_jobs_stop_some_jobs() -> None:
    """The sample jobs include clearly worse ones: most suites' replays stop at least one."""
    stopping = [
        s
        for s in SUITES
        if any(
            j["status"] == "Stopped"
            for j in json.loads((SAMPLE_LOGS / s / "expected_replay.json").read_text())["jobs"]
        )
    ]
    assert len(stopping) >= len(SUITES) // 2, stopping


# ------------------------------------------------------------------------------- log formats


def _format_copies() -> list[dict[str, Any]]:
    path = SAMPLE_LOGS / "formats" / "formats.json"
    copies: list[dict[str, Any]] = json.loads(path.read_text())["copies"] if path.exists() else []
    return copies


@pytest.mark.parametrize("copy", _format_copies(), ids=lambda c: c["log"])
def test_container_log_copy_parses_like_the_plain_log(copy: dict[str, Any]) -> None:
    samples, stats = parse(SAMPLE_LOGS / "formats" / copy["log"], copy["preset"])
    assert stats.format == copy["format"]
    assert stats.bad_records == 0
    plain, _ = parse(SAMPLE_LOGS / copy["original"], copy["preset"], fmt="plain")
    assert samples == plain
    assert_matches_truth(samples, truth(SAMPLE_LOGS / copy["truth"]), copy["printed"], copy["log"])


# ------------------------------------------------------------------------------- SageMaker
#
# Lines as AWS's built-in algorithms printed them, quoted from published output. `#011` is how
# CloudWatch shows a tab; the same lines with real tabs (raw stdout) must parse the same.

SAGEMAKER_CASES: list[tuple[str, str, str, dict[str, list[tuple[int, float]]]]] = [
    (
        "sagemaker-xgboost",
        # CloudWatch output of the built-in XGBoost (reg:linear, Abalone) in a public SageMaker
        # example notebook's output cell.
        "INFO:root:Train matrix has 227 rows\n"
        "INFO:root:Validation matrix has 112 rows\n"
        "[20:03:46] WARNING: /workspace/src/objective/regression_obj.cu:152: reg:linear is now "
        "deprecated in favor of reg:squarederror.\n"
        "[0]#011train-rmse:18.7885#011validation-rmse:19.9369\n"
        "[1]#011train-rmse:15.3861#011validation-rmse:16.6421\n"
        "[2]#011train-rmse:12.7352#011validation-rmse:14.0599\n",
        "Abalone example notebook (XGBoost 0.90 container), CloudWatch",
        {
            "train:rmse": [(1, 18.7885), (2, 15.3861), (3, 12.7352)],
            "validation:rmse": [(1, 19.9369), (2, 16.6421), (3, 14.0599)],
        },
    ),
    (
        "sagemaker-linear-learner",
        # Linear Learner binary classifier, output cell of a public SageMaker example notebook.
        "[11/24/2020 18:53:56 INFO 140513285547840] #quality_metric: host=algo-1, epoch=0, train "
        "binary_classification_cross_entropy_objective <loss>=0.595682421003\n"
        '[2020-11-24 18:53:56.999] [tensorio] [info] epoch_stats={"data_pipeline": '
        '"/opt/ml/input/data/validation", "epoch": 0, "duration": 1825, "num_examples": 1, '
        '"num_bytes": 56000}\n'
        "[11/24/2020 18:53:57 INFO 140513285547840] #quality_metric: host=algo-1, epoch=0, "
        "validation binary_classification_cross_entropy_objective <loss>=0.508278604365\n"
        "[11/24/2020 18:53:57 INFO 140513285547840] #early_stopping_criteria_metric: host=algo-1, "
        "epoch=0, criteria=sampled_accuracy, value=0.943377806704\n"
        "[11/24/2020 18:53:57 INFO 140513285547840] Epoch 0: Loss improved. Updating best model\n"
        "[11/24/2020 18:53:57 INFO 140513285547840] #progress_metric: host=algo-1, completed 6 % "
        "of epochs\n"
        "[11/24/2020 18:53:57 INFO 140513285547840] #throughput_metric: host=algo-1, train "
        "throughput=22356.2318742 records/second\n",
        "Linear Learner binary classification notebook output",
        {
            "train:objective_loss": [(1, 0.595682421003)],
            "validation:objective_loss": [(1, 0.508278604365)],
            "train:progress": [(1, 6.0)],
            "train:throughput": [(1, 22356.2318742)],
        },
    ),
    (
        "sagemaker-linear-learner",
        # Linear Learner regressor (mse objective), same kind of source.
        "[03/22/2020 20:43:21 INFO 140403405219648] #quality_metric: host=algo-1, epoch=0, train "
        "mse_objective <loss>=0.968532333374\n"
        "[03/22/2020 20:43:21 INFO 140403405219648] #quality_metric: host=algo-1, epoch=0, "
        "validation mse_objective <loss>=88.1902204241\n"
        "[03/22/2020 20:43:21 INFO 140403405219648] #early_stopping_criteria_metric: "
        "host=algo-1, epoch=0, criteria=mse_objective, value=42.0374973842\n",
        "Linear Learner regression notebook output",
        {
            "train:objective_loss": [(1, 0.968532333374)],
            "validation:objective_loss": [(1, 88.1902204241)],
        },
    ),
    (
        "sagemaker-image-classification",
        # Built-in image classification training logs (MXNet), published notebook outputs.
        "[09/07/2019 22:57:58 INFO 140484553713472] Epoch[0] Train-accuracy=0.375000\n"
        "[09/07/2019 22:57:58 INFO 140484553713472] Epoch[0] Time cost=14.863\n"
        "[09/07/2019 22:57:59 INFO 140484553713472] Epoch[0] Validation-accuracy=0.771429\n"
        "[09/07/2019 22:58:00 INFO 140484553713472] Storing the best model with validation "
        "accuracy: 0.771429\n"
        '[09/07/2019 22:58:00 INFO 140484553713472] Saved checkpoint to "/opt/ml/model/'
        'image-classification-0001.params"\n'
        "[09/03/2023 16:29:28 INFO 139962714154816] Epoch[29] Batch [20]#011Speed: 191.406 "
        "samples/sec#011accuracy=0.976190\n"
        "[09/03/2023 16:29:30 INFO 139962714154816] Epoch[29] Train-accuracy=0.980847\n"
        "[09/03/2023 16:29:30 INFO 139962714154816] Epoch[29] Time cost=4.990\n"
        "[09/03/2023 16:29:30 INFO 139962714154816] Epoch[29] Validation-accuracy=0.802083\n",
        "image-classification notebook outputs (2019, 2023)",
        {
            "train:accuracy": [(1, 0.375), (30, 0.980847)],
            "validation:accuracy": [(1, 0.771429), (30, 0.802083)],
        },
    ),
    (
        "sagemaker-object-detection",
        # NOT a published line: written in the form AWS's validation:mAP regex and the
        # object-detection example notebooks' CloudWatch parser (`validation mAP <score>=(`) show.
        "[01/30/2019 21:20:21 INFO 140286410475328] #quality_metric: host=algo-1, epoch=0, "
        "batch=10 train cross_entropy <loss>=1.2931\n"
        "[01/30/2019 21:20:21 INFO 140286410475328] #quality_metric: host=algo-1, epoch=0, "
        "batch=10 train smooth_l1 <loss>=0.4212\n"
        "[01/30/2019 21:20:40 INFO 140286410475328] #quality_metric: host=algo-1, epoch=0, "
        "validation mAP <score>=(0.0166)\n"
        "[01/30/2019 21:21:02 INFO 140286410475328] #quality_metric: host=algo-1, epoch=1, "
        "validation mAP <score>=(0.1088)\n",
        "reconstructed from AWS's regex (no published line found)",
        {
            "validation:mAP": [(1, 0.0166), (2, 0.1088)],
            "train:cross_entropy": [(1, 1.2931)],
            "train:smooth_l1": [(1, 0.4212)],
        },
    ),
    (
        "sagemaker-ip-insights",
        # NOT a published line: written in the form of AWS's own regex for this algorithm.
        "[05/21/2020 10:01:12 INFO 139925532960576] #quality_metric: host=algo-1, epoch=0, "
        "validation discriminator_auc <score>=0.9366\n"
        "[05/21/2020 10:01:40 INFO 139925532960576] #quality_metric: host=algo-1, epoch=1, "
        "validation discriminator_auc <score>=0.9512\n",
        "reconstructed from AWS's regex (no published line found)",
        {"validation:discriminator_auc": [(1, 0.9366), (2, 0.9512)]},
    ),
    (
        "sagemaker-seq2seq",
        # NOT a published line: Sockeye's checkpoint line format (the algorithm is built on it).
        "[INFO:sockeye.training] Checkpoint [1]#011Train-perplexity=131.262844\n"
        "[INFO:sockeye.training] Checkpoint [1]#011Validation-perplexity=89.351321"
        "#011Validation-accuracy=0.312200#011Validation-bleu=0.031800\n"
        "[INFO:sockeye.training] Checkpoint [2]#011Validation-perplexity=42.108800"
        "#011Validation-accuracy=0.412900#011Validation-bleu=0.087100\n",
        "reconstructed from Sockeye's format strings (no published SageMaker line found)",
        {
            "train:perplexity": [(1, 131.262844)],
            "validation:perplexity": [(1, 89.351321), (2, 42.1088)],
            "validation:accuracy": [(1, 0.3122), (2, 0.4129)],
            "validation:bleu": [(1, 0.0318), (2, 0.0871)],
        },
    ),
]


@pytest.mark.parametrize("tabs", ["#011", "\t"], ids=["cloudwatch", "raw"])
@pytest.mark.parametrize(
    "case", SAGEMAKER_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SAGEMAKER_CASES)]
)
def test_sagemaker_preset_matches_published_lines(
    case: tuple[str, str, str, dict[str, list[tuple[int, float]]]], tabs: str, tmp_path: Path
) -> None:
    preset, text, source, expected = case
    log = tmp_path / "job.log"
    log.write_text(text.replace("#011", tabs))
    samples, stats = parse(log, preset, fmt="plain")
    got = final_series(samples)
    for metric, pairs in expected.items():
        assert got.get(metric) == dict(pairs), f"{metric} from {source}: {got.get(metric)}"
    assert not stats.counts.errors


def test_sagemaker_xgboost_matches_xgboost_preset_on_cloudwatch_logs() -> None:
    """AWS's per-metric definitions and the templated xgboost preset agree on the CloudWatch copies."""
    suite = "xgboost-cloudwatch"
    if suite not in SUITES:
        pytest.skip("no CloudWatch copies")
    for log in manifest(suite)["logs"]:
        aws, _ = parse(SAMPLE_LOGS / suite / log, "sagemaker-xgboost")
        ours, _ = parse(SAMPLE_LOGS / suite / log, "xgboost")
        assert final_series(aws) == final_series(ours)


def test_lightgbm_repeated_best_iteration_replaces_with_same_value() -> None:
    """LightGBM prints the best iteration again after early stopping: same epoch, same values."""
    logs = [SAMPLE_LOGS / "lightgbm" / log for log in manifest("lightgbm")["logs"]]
    repeated = [p for p in logs if b"Early stopping, best iteration is:" in p.read_bytes()]
    assert repeated, "no early-stopped LightGBM sample"
    for path in repeated:
        samples, _ = parse(path, "lightgbm")
        last = samples[-1]
        earlier = [s for s in samples[:-1] if (s.metric, s.epoch) == (last.metric, last.epoch)]
        assert earlier and earlier[0].value == last.value
