"""Run the long-horizon benchmark for many run presets and seeds in parallel, then record all results at once.

One subprocess of `benchmarks/ltsf.py` runs per (run preset, seed), at most `--jobs` at a time; on a GPU machine
they share the GPU. Each gets OMP_NUM_THREADS = cores // jobs and its own temporary results folder. When all have
finished, their rows are appended to <results-dir>/ltsf.csv and ltsf.md is rewritten once. Baselines do not depend
on the seed, so only the run of a preset's first seed computes them (the others get --no-baselines). A run that
fails is reported with the tail of its stderr; the other runs are still recorded, and the exit code is 1.

Usage:
    python benchmarks/ltsf_sweep.py --all --seeds 0 1 2 --jobs 4 --accelerator gpu --data-dir ../shared/datasets
    python benchmarks/ltsf_sweep.py --presets etth1_96 etth1_192 --seeds 0 1 2 --jobs 2 --max-steps 600
Other flags of benchmarks/ltsf.py (e.g. --lookback 336, --eval-batch-size 256) are passed on to every run.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xlstm_ts.datasets.ltsf_presets import load_run_config, resolve_data_path, run_preset_name, run_preset_names

from provenance import add_accelerator_option

HARNESS = Path(__file__).resolve().parent / "ltsf.py"
RESULTS = HARNESS.parent / "results"
SWEEP_OWNED = ("--preset", "--data", "--seeds", "--results-dir", "--no-record", "--no-baselines", "--accelerator",
               "--data-dir", "--max-steps")
"""Flags of the harness that the sweep sets for each run; passing them on is refused."""
STDERR_TAIL = 25
"""Lines of a failed run's stderr that are printed."""


@dataclass
class Run:
    """One subprocess: a run preset at one seed."""

    preset: str
    seed: int
    baselines: bool
    folder: Path
    returncode: int | None = None
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    """Result rows the run wrote (read back after it finished)."""

    @property
    def name(self) -> str:
        return f"{run_preset_name(self.preset)} seed {self.seed}"

    def stderr_tail(self) -> str:
        path = self.folder / "stderr.log"
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        return "\n".join(lines[-STDERR_TAIL:]) or "(no stderr)"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--presets", nargs="+", help="run preset names (configs/ltsf/) or YAML paths")
    which.add_argument("--all", action="store_true", help="every run preset in configs/ltsf/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    add_accelerator_option(parser)
    parser.add_argument("--data-dir", help="folder the presets' files are relative to (default: $XLSTM_TS_DATA)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where ltsf.csv and ltsf.md live")
    parser.add_argument("--max-steps", type=int, help="override the presets' optimizer step budget")
    args, extra = parser.parse_known_args(argv)
    owned = [flag for flag in extra if flag.split("=")[0] in SWEEP_OWNED]
    if owned:
        parser.error(f"{owned} cannot be passed on: the sweep sets them for each run. Use --presets/--all, --seeds, "
                     "--data-dir, --results-dir, --accelerator and --max-steps of the sweep instead.")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}.")
    args.presets = run_preset_names() if args.all else list(dict.fromkeys(args.presets))
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.data_dir is not None:
        args.data_dir = str(Path(args.data_dir).expanduser().resolve())
    for preset in args.presets:  # fail before starting anything
        try:
            resolve_data_path(load_run_config(preset).data, args.data_dir)
        except ValueError as err:
            parser.error(f"run preset {preset!r}: {err}")
    return args, extra


def command(args: argparse.Namespace, run: Run, extra: list[str]) -> list[str]:
    """The harness call of one run."""
    line = [sys.executable, str(HARNESS), "--preset", run.preset, "--seeds", str(run.seed),
            "--accelerator", args.accelerator, "--results-dir", str(run.folder / "results")]
    if args.data_dir is not None:
        line += ["--data-dir", args.data_dir]
    if args.max_steps is not None:
        line += ["--max-steps", str(args.max_steps)]
    return line + ([] if run.baselines else ["--no-baselines"]) + extra


def execute(run: Run, line: list[str], env: dict[str, str]) -> Run:
    run.folder.mkdir(parents=True)
    start = time.perf_counter()
    with open(run.folder / "stdout.log", "w") as out, open(run.folder / "stderr.log", "w") as err:
        run.returncode = subprocess.run(line, stdout=out, stderr=err, env=env).returncode
    run.seconds = time.perf_counter() - start
    return run


def collect(run: Run) -> list[dict]:
    """Read back the result rows a run wrote into its own folder (none if it failed before writing)."""
    path = run.folder / "results" / "ltsf.csv"
    if path.is_file():
        run.rows = pd.read_csv(path, dtype={"preset": str}, keep_default_na=False, na_values=[""]).to_dict("records")
    return run.rows


def load_harness():
    spec = importlib.util.spec_from_file_location("ltsf_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    series = pd.Series(values, dtype=float)
    return f"{series.mean():.4f}" + (f" ± {series.std(ddof=1):.4f}" if len(series) > 1 else "")


def summary(runs: list[Run]) -> str:
    """One line per run preset: its cell, seeds done, model MSE/MAE over seeds, linear baseline MSE, wall seconds."""
    lines = [f"{'preset':<22} {'dataset':<18} {'H':>4} {'L':>4} {'seeds':>5} {'MSE':>17} {'MAE':>17} "
             f"{'linear MSE':>10} {'wall s':>7}"]
    for preset in dict.fromkeys(run.preset for run in runs):
        mine = [run for run in runs if run.preset == preset]
        rows = [row for run in mine for row in run.rows]
        model = [row for row in rows if not row["mode"].startswith("baseline:")]
        linear = [row["mse"] for row in rows if row["mode"] == "baseline:linear"]
        config = load_run_config(preset)
        first = rows[0] if rows else {"dataset": Path(config.data).name, "horizon": config.horizon,
                                      "lookback": config.lookback}
        ok = sum(run.returncode == 0 for run in mine)
        lines.append(f"{run_preset_name(preset):<22} {first['dataset']:<18} {first['horizon']:>4} "
                     f"{first['lookback']:>4} {f'{ok}/{len(mine)}':>5} {_mean_std([r['mse'] for r in model]):>17} "
                     f"{_mean_std([r['mae'] for r in model]):>17} {linear[0] if linear else math.nan:>10.4f} "
                     f"{sum(run.seconds for run in mine):>7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    threads = max(1, available_cores() // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ltsf_sweep_") as tmp:
        runs = []
        for preset in args.presets:
            for i, seed in enumerate(args.seeds):
                runs.append(Run(preset, seed, baselines=i == 0, folder=Path(tmp) / f"{len(runs):03d}"))
        print(f"{len(runs)} runs ({len(args.presets)} presets x {len(args.seeds)} seeds), {args.jobs} at a time, "
              f"OMP_NUM_THREADS={threads}, accelerator {args.accelerator}", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(execute, run, command(args, run, extra), env) for run in runs]
            for done, future in enumerate(as_completed(futures), 1):
                run = future.result()
                status = "ok" if run.returncode == 0 else f"FAILED (exit code {run.returncode})"
                print(f"[{done}/{len(runs)}] {run.name}: {status} in {run.seconds:.0f} s", flush=True)
        rows = [row for run in runs for row in collect(run)]  # preset and seed order, whatever the finish order
        failed = [run for run in runs if run.returncode != 0]
        for run in failed:
            print(f"\n{run.name} failed (exit code {run.returncode}); last lines of its stderr:\n{run.stderr_tail()}",
                  file=sys.stderr)
    if rows:
        markdown = load_harness().record(rows, args.results_dir)
        print(f"\nappended {len(rows)} rows to {args.results_dir / 'ltsf.csv'}, rewrote {markdown}")
    print("\n" + summary(runs))
    wall = time.perf_counter() - start
    print(f"\n{len(runs) - len(failed)}/{len(runs)} runs succeeded; total wall time {wall:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
