"""Regenerate the quickstart tuning job: 8 synthetic jobs with noisy learning curves (seeded).

These logs are synthetic (a formula, not a framework): they exist so the README's first command has
something to show. Logs written by real frameworks live beside this folder.
"""

import math
import random
from pathlib import Path

HERE = Path(__file__).parent
EPOCHS = 12
# (job, final validation loss, speed of convergence, noise); a few clearly worse, one diverges
JOBS = [
    ("lr-0.010", 0.32, 0.45, 0.010),
    ("lr-0.030", 0.28, 0.60, 0.012),
    ("lr-0.001", 0.55, 0.15, 0.008),
    ("lr-0.020", 0.30, 0.50, 0.010),
    ("lr-0.300", None, 0.90, 0.020),  # diverges: loss becomes nan
    ("lr-0.050", 0.27, 0.70, 0.015),
    ("lr-0.0005", 0.70, 0.08, 0.006),
    ("lr-0.015", 0.31, 0.48, 0.010),
]


def main() -> None:
    rng = random.Random(42)
    for i, (name, final, speed, noise) in enumerate(JOBS, 1):
        lines = [f"starting job {name} (trial {i})", "loading data: 60000 train, 10000 val"]
        for epoch in range(1, EPOCHS + 1):
            lines.append(f"Epoch {epoch}/{EPOCHS}")
            if final is None:
                val = 1.2 + 0.4 * epoch if epoch < 4 else math.nan
            else:
                val = final + (2.3 - final) * math.exp(-speed * epoch) + rng.gauss(0, noise)
            train = val * 0.9 if not math.isnan(val) else val
            acc = max(0.0, min(1.0, 1.05 - val / 2.4)) if not math.isnan(val) else 0.1
            bar = "".join(
                f"\r{step}/50 [{'=' * (step // 5):<10}] loss: {train + 0.1:.4f}"
                for step in (10, 30, 50)
            )
            lines.append(bar.lstrip("\r"))
            lines.append(
                f"epoch {epoch} train_loss={train:.4f} val_loss={val:.4f} val_acc={acc:.4f}"
            )
        lines.append("done")
        (HERE / f"job-{i:02d}-{name}.log").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
