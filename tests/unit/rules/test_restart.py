"""Rule state derived from the stored history: a sweep replayed in two sittings against one store
(the second starting from what the first stored, as a restarted daemon or another node does)
stops the same jobs at the same epochs as one uninterrupted replay."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import validate_config
from sidecar.replay import replay
from sidecar.store import open_store
from tests.unit.rules.test_optuna_differential import curve, params

RULES = ["optuna-successive-halving", "optuna-median", "katib-median", "sagemaker"]


def write(folder: Path, curves: list[list[tuple[int, float]]]) -> list[Path]:
    folder.mkdir(parents=True)
    logs = []
    for j, values in enumerate(curves):
        path = folder / f"job-{j:03d}.log"
        path.write_text("".join(f"epoch {e} val={v!r}\n" for e, v in values))
        logs.append(path)
    return logs


def stops(documents: list[dict[str, Any]]) -> dict[str, int]:
    return {
        job["job"]: job["decision"]["epoch"]
        for document in documents
        for job in document["jobs"]
        if job["status"] == "Stopped"
    }


def check_split(tmp: Path, url: str, rule: str, rng: random.Random) -> tuple[int, bool]:
    curves = [curve(rng) for _ in range(rng.randint(2, 10))]
    block: dict[str, Any] = {"rule": rule}
    if rule.startswith("optuna"):
        block["optuna"] = params(rule, rng)
    config = validate_config(
        {
            "tuning_job": f"t{rng.random():.12f}",
            "objective": {"metric": "val", "type": rng.choice(["Minimize", "Maximize"])},
            "metric_definitions": [{"Name": "val", "Regex": r"val=(\S+)"}],
            "epoch": {"regex": r"^epoch (\d+)"},
            "early_stopping": block,
        }
    )
    logs = write(tmp / f"{rng.random():.12f}", curves)
    whole = replay(config, logs, open_store("sqlite://:memory:")).document
    cut = rng.randint(1, len(logs) - 1)
    store = open_store(url)
    first = replay(config, logs[:cut], store).document
    store.close()
    store = open_store(url)  # a new process: only the store carries the state
    second = replay(config, logs[cut:], store).document
    store.close()
    expected = stops([whole])
    return len(expected), stops([first, second]) == expected


@pytest.mark.parametrize("rule", RULES)
def test_two_sittings_on_one_store_decide_as_one(tmp_path: Path, rule: str) -> None:
    rng = random.Random(f"restart-{rule}")
    url = f"sqlite://{tmp_path / 'history.db'}"
    total, bad = 0, 0
    for _ in range(100):
        n, same = check_split(tmp_path, url, rule, rng)
        total += n
        bad += not same
    assert bad == 0
    assert total > 0
