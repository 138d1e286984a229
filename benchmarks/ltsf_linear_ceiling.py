"""How low the centred linear map of `benchmarks/ltsf.py` gets on a cell when its lookback and ridge are chosen on
the validation windows, and when they are chosen on the test windows (an oracle: the floor of this family on that
test set, not a forecaster; no published protocol selects on test).

For each run preset's data set and horizon, each lookback of `--lookbacks` and each ridge penalty of `--ridges`: the
least-squares map from the L context values (each window centred on its context mean, plus an intercept, shared by
all variates) to the horizon, fitted on every training window with the penalty times the mean diagonal of the
contexts' Gram matrix added to that diagonal (the forecaster's linear start, `XLSTMModel.fit_linear_skip`, uses the
same scale-free penalty), then scored on every validation and test window (`xlstm_ts.datasets.ltsf`). Ridge 0 is
the `baseline:linear_centred` map of `ltsf.md`. The cells where even the oracle is above a published number show how
far a forecaster must get beyond linear structure there.

Usage:
    python benchmarks/ltsf_linear_ceiling.py --data-dir ../shared/datasets                    # every ETTh run preset
    python benchmarks/ltsf_linear_ceiling.py --data-dir ../shared/datasets --presets etth2_336 --lookbacks 336 512
Writes benchmarks/results/ltsf_linear_ceiling.md and .json (see --results-dir).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from xlstm_ts.datasets.ltsf import load_ltsf, split_windows
from xlstm_ts.datasets.ltsf_presets import load_run_config, resolve_data_path, run_preset_names

from ltsf_report import anchor
from provenance import commit_id

RESULTS = Path(__file__).resolve().parent / "results"
LOOKBACKS = (96, 192, 336, 512, 720, 768)
RIDGES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def centred(past: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(contexts minus their mean with a column of ones appended (N, L + 1), the means (N, 1)), float64."""
    level = past.mean(axis=1, keepdims=True, dtype=np.float64)
    x = past.astype(np.float64) - level
    return np.hstack([x, np.ones((len(x), 1))]), level


def fit_maps(past: np.ndarray, future: np.ndarray, ridges: tuple[float, ...]) -> list[np.ndarray]:
    """One (L + 1, F) centred map per ridge penalty from training windows past (N, L), future (N, F)."""
    x, level = centred(past)
    gram, rhs = x.T @ x, x.T @ (future.astype(np.float64) - level)  # (L + 1, L + 1), (L + 1, F)
    L = past.shape[1]
    scale = np.trace(gram[:L, :L]) / L
    maps = []
    for ridge in ridges:
        penalized = gram.copy()
        penalized[np.arange(L), np.arange(L)] += ridge * scale  # the intercept is not penalized
        maps.append(np.linalg.lstsq(penalized, rhs, rcond=None)[0])
    return maps


def scores(past: np.ndarray, future: np.ndarray, maps: list[np.ndarray]) -> list[float]:
    """MSE of each map over every window, step and variate."""
    x, level = centred(past)
    target = future.astype(np.float64) - level
    return [float(np.square(x @ m - target).mean()) for m in maps]


def measure(preset: str, data_dir: str | None, lookbacks: tuple[int, ...], ridges: tuple[float, ...]) -> dict:
    """The validation-selected and the test-selected (lookback, ridge) of one run preset's cell, with their MSEs."""
    config = load_run_config(preset)
    data = load_ltsf(resolve_data_path(config.data, data_dir), config.split)
    H, grid = config.horizon, []
    for L in lookbacks:
        maps = fit_maps(*split_windows(data, "train", L, H), ridges)
        val, test = (scores(*split_windows(data, part, L, H), maps) for part in ("val", "test"))
        grid += [(v, t, L, r) for v, t, r in zip(val, test, ridges)]
    by_val, by_test = min(grid), min(grid, key=lambda g: g[1])
    published = {m: anchor(data.name, m, H) for m in ("PatchTST/64", "xLSTM-Mixer")}
    return {"preset": preset, "dataset": data.name, "horizon": H,
            "val_selected": {"lookback": by_val[2], "ridge": by_val[3], "val_mse": by_val[0], "test_mse": by_val[1]},
            "test_selected": {"lookback": by_test[2], "ridge": by_test[3], "val_mse": by_test[0],
                              "test_mse": by_test[1]},
            "published_mse": {m: (a[0] if a else None) for m, a in published.items()}}  # fmt: skip


def write(rows: list[dict], lookbacks: tuple[int, ...], ridges: tuple[float, ...], results_dir: Path) -> Path:
    """Write ltsf_linear_ceiling.json and .md; returns the markdown path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    meta = {"commit": commit_id(), "lookbacks": list(lookbacks), "ridges": list(ridges)}
    (results_dir / "ltsf_linear_ceiling.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = ["# Centred linear maps: lookback and ridge chosen on validation, and on test (oracle)", "",
             "Written by `benchmarks/ltsf_linear_ceiling.py` (setup in its docstring). Lookbacks "
             f"{', '.join(map(str, lookbacks))}; ridge penalties {', '.join(f'{r:g}' for r in ridges)}; MSE on the "
             f"scaled data over every window. Commit {meta['commit']}.", "",
             "| dataset | H | chosen on validation: L, ridge | its val / test MSE | chosen on test: L, ridge "
             "| its val / test MSE | PatchTST/64 | xLSTM-Mixer |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        v, t = r["val_selected"], r["test_selected"]
        pub = [f"{x:.3f}" if x is not None else "–" for x in r["published_mse"].values()]
        lines.append(f"| {r['dataset']} | {r['horizon']} | {v['lookback']}, {v['ridge']:g} | {v['val_mse']:.4f} / "
                     f"{v['test_mse']:.4f} | {t['lookback']}, {t['ridge']:g} | {t['val_mse']:.4f} / "
                     f"{t['test_mse']:.4f} | {' | '.join(pub)} |")  # fmt: skip
    path = results_dir / "ltsf_linear_ceiling.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", help="run presets (default: every ETTh one in configs/ltsf/)")
    parser.add_argument("--data-dir", help="folder the presets' files are relative to (default: $XLSTM_TS_DATA)")
    parser.add_argument("--lookbacks", type=int, nargs="+", default=list(LOOKBACKS))
    parser.add_argument("--ridges", type=float, nargs="+", default=list(RIDGES))
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if any(L < 1 for L in args.lookbacks) or any(r < 0 for r in args.ridges):
        parser.error(f"--lookbacks must be positive and --ridges >= 0, got {args.lookbacks} and {args.ridges}.")
    presets = args.presets or run_preset_names("etth")
    lookbacks, ridges = tuple(args.lookbacks), tuple(args.ridges)
    rows = [measure(p, args.data_dir, lookbacks, ridges) for p in presets]
    print(write(rows, lookbacks, ridges, args.results_dir).read_text())
    return rows


if __name__ == "__main__":
    main()
