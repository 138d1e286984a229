"""Mixed precision against float32: the validation loss and test accuracy the forecaster reaches on an LTSF preset
when it trains under Lightning's `bf16-mixed` (or another) precision, next to float32, over several seeds.

Data, training and scoring follow `benchmarks/ltsf.py` (split borders, train-only StandardScaler, validation on the
validation rows with the best weights kept, MSE/MAE over every test window and variate). Each seed trains once per
precision. The verdict "within noise" holds when the two means of the best validation loss differ by at most two
standard errors of their difference, sqrt(s1^2 / n1 + s2^2 / n2), with s the sample std over seeds.

Usage:
    python benchmarks/precision.py --preset etth1_96 --seeds 0 1 2 --accelerator gpu --data-dir ../shared/datasets
    python benchmarks/precision.py --preset etth1_96 --seeds 0 1 2 --max-steps 300 --val-check-steps 50   # CPU
Other flags are those of `benchmarks/ltsf.py` (preset overrides). Merges rows into <out>/precision.json and
rewrites <out>/precision.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from xlstm_ts.datasets.ltsf import load_ltsf, split_windows

import ltsf
from provenance import commit_id, device_name, merge_rows

KEY = ("device", "preset", "max_steps", "val_check_steps", "seed", "precision")


def run(args: argparse.Namespace, precisions: list[str]) -> list[dict]:
    """One row per (seed, precision): best validation loss, its step, test MSE/MAE and training seconds."""
    data = load_ltsf(args.data, args.split)
    test_past, test_future = split_windows(data, "test", args.lookback, args.horizon)  # (N * C, L), (N * C, H)
    base_label = args.label
    rows = []
    for seed in args.seeds:
        for precision in precisions:
            args.precision = None if precision == "32-true" else precision
            start = time.perf_counter()
            model = ltsf.fit_forecaster(args, data, seed)
            seconds = time.perf_counter() - start
            scores = ltsf.score_forecaster([model], args, len(data.columns), test_past, test_future)
            rows.append({"device": device_name(args.accelerator), "preset": base_label, "seed": seed,
                         "precision": precision, "max_steps": args.max_steps, "val_check_steps": args.val_check_steps,
                         "best_val_loss": model.best_val_loss_, "best_step": model.best_step_, **scores,
                         "train_seconds": seconds, "commit": commit_id()})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def within_noise(a: list[float], b: list[float]) -> tuple[float, float, bool]:
    """(difference of means b - a, two standard errors of it, whether the difference is within them)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"within_noise needs at least 2 seeds per side, got {len(a)} and {len(b)}; "
                         "pass --seeds 0 1 2.")
    diff = float(b.mean() - a.mean())
    bound = 2.0 * float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    return diff, bound, abs(diff) <= bound


def write_markdown(rows: list[dict], path: Path) -> Path:
    """One line per (device, preset, budget) and precision, then the verdict against float32."""
    lines = ["# Mixed precision against float32", "",
             "Written by `benchmarks/precision.py`: the same preset, seeds and budget trained in float32 and in "
             "mixed precision; best validation loss (pinball, data units) and test MSE/MAE of the kept weights. "
             "Within noise: |difference of the mean validation losses| <= 2 standard errors of the difference.", "",
             "| device | preset | steps (val every) | precision | seeds | best val loss | test MSE | test MAE | "
             "train s (mean) | val loss vs float32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["preset"], r["max_steps"], r["val_check_steps"]), {}).setdefault(
            r["precision"], []).append(r)
    for (device, preset, steps, every), by_precision in groups.items():
        ref = [r["best_val_loss"] for r in by_precision.get("32-true", [])]
        for precision, cell in sorted(by_precision.items(), key=lambda kv: kv[0] != "32-true"):
            val = [r["best_val_loss"] for r in cell]
            mse, mae = [r["mse"] for r in cell], [r["mae"] for r in cell]
            verdict = "–"
            if precision != "32-true" and len(ref) >= 2 and len(val) >= 2:
                diff, bound, ok = within_noise(ref, val)
                verdict = f"{diff:+.4f} (bound {bound:.4f}): {'within noise' if ok else 'outside noise'}"
            seconds = np.mean([r["train_seconds"] for r in cell])
            lines.append(f"| {device} | {preset} | {steps} ({every}) | {precision} | {len(cell)} | "
                         f"{ltsf.mean_std(val)} | {ltsf.mean_std(mse)} | {ltsf.mean_std(mae)} | {seconds:.0f} | "
                         f"{verdict} |")
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False, allow_abbrev=False)
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--out", type=Path, default=ltsf.RESULTS)
    ours, rest = parser.parse_known_args(argv)
    args = ltsf.parse_args([*rest, "--no-record", "--no-baselines"])
    if "32-true" not in ours.precisions:
        parser.error(f"--precisions must include 32-true, the reference; got {ours.precisions}")
    rows = run(args, ours.precisions)
    merged = merge_rows(ours.out / "precision.json", rows, KEY)
    print(write_markdown(merged, ours.out / "precision.md").read_text())
    return rows


if __name__ == "__main__":
    main()
