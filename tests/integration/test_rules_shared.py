"""Successive halving on a shared PostgreSQL store: a sweep replayed in two sittings, the second
as another process (another node) reading what the first stored, decides as one uninterrupted
replay (rung values come from the stored history, not from memory)."""

from __future__ import annotations

import random
from pathlib import Path

from tests.unit.rules.test_restart import check_split


def test_successive_halving_on_a_shared_postgres_store_decides_as_one(
    tmp_path: Path, postgres_url: str
) -> None:
    rng = random.Random("shared-halving")
    total = bad = 0
    for _ in range(30):
        n, same = check_split(tmp_path, postgres_url, "optuna-successive-halving", rng)
        total += n
        bad += not same
    assert bad == 0
    assert total > 0
