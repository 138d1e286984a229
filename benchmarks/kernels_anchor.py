"""The NX-AI anchors of `benchmarks/kernels.py`: run ../shared/bench/anchor_kernels.py in subprocesses on the same GPU
(each part `runs` times, keeping each row's fastest medians) and collect its JSON rows; and the summary line of a GPU
test log recorded beside the timings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

# the NX-AI anchor timing script: $XLSTM_TS_ANCHOR, else ../shared/bench/anchor_kernels.py beside the repository
_DEFAULT_ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "anchor_kernels.py"
ANCHOR = Path(os.environ.get("XLSTM_TS_ANCHOR", _DEFAULT_ANCHOR))
MLSTM_CONFIGS = "ts_patched,ts_patched_wide,ts_small,ts_long,llm_mid,llm_7b"  # the anchor script's goal shapes
# fields of an anchor row that a rerun measures anew; the others name the case
_MEASURED = ("fw_ms", "fwbw_ms", "fw_tflops", "tokens_per_s_fw", "build_s", "error")
# anchor processes of each part: (mLSTM configs, extra environment). All of it: the mLSTM configs with the long sLSTM
# shapes, then the patched sLSTM shapes alone (no mLSTM config is named "none"); "mlstm" skips the sLSTM layers,
# "slstm" names no mLSTM config. One process per call: a Triton compile crash in theirs must not end this run.
PARTS = {
    None: [(MLSTM_CONFIGS, {}), ("none", {"SLSTM_PATCHED": "1"})],
    "mlstm": [(MLSTM_CONFIGS, {"NO_SLSTM": "1"})],
    "slstm": [("none", {}), ("none", {"SLSTM_PATCHED": "1"})],
}


def anchor_rows(part: str | None = None, runs: int = 1) -> tuple[list[dict], str]:
    """Run the NX-AI anchor script if it and its packages are present (all of it, or only its "mlstm" or "slstm"
    part), each part `runs` times (`fastest`); else say why not."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {sorted(PARTS, key=str)}, got {part!r}")
    if not ANCHOR.exists():
        return [], (f"anchor script {ANCHOR} not present on this machine "
                    "(the shared/ folder is not copied to the GPU machine)")
    missing = [m for m in ("mlstm_kernels", "xlstm") if importlib.util.find_spec(m) is None]
    if missing:
        return [], f"anchor script present but packages {missing} are not installed (mlstm-kernels, xlstm 2.0.6)"
    rows = []
    parts = PARTS[part]
    for configs, extra in parts:
        rows += fastest([_run(configs, extra) for _ in range(runs)])
    note = f"ran {ANCHOR.name} in the same device call"
    if runs > 1:
        note += f", {runs} times (each row's fastest fw and fw+bw medians)"
    return rows, note


def _run(configs: str, extra: dict) -> list[dict]:
    """The JSON rows of one anchor process over `configs`, with `extra` in its environment."""
    proc = subprocess.run([sys.executable, str(ANCHOR), "chunkwise--triton_limit_chunk", configs],
                          capture_output=True, text=True, env={**os.environ, "TAG": "anchor", **extra})  # fmt: skip
    rows = []
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the script also prints version lines and kernel lists
        if isinstance(row, dict):
            rows.append(row)
    return rows


def fastest(runs: list[list[dict]]) -> list[dict]:
    """One row per case (the fields outside `_MEASURED`) over repeated anchor runs, in first-seen order: the row of
    the fastest forward (its derived rates with it) with the fastest fw+bw of any run; a timed row wins over an
    error row. A single run comes back as it is."""
    cases: dict[tuple, list[dict]] = {}
    for run in runs:
        for row in run:
            key = tuple(sorted((k, str(v)) for k, v in row.items() if k not in _MEASURED))
            cases.setdefault(key, []).append(row)
    out = []
    for rows in cases.values():
        timed = [r for r in rows if r.get("fw_ms") is not None]
        if not timed:
            out.append(rows[0])
            continue
        best = dict(min(timed, key=lambda r: r["fw_ms"]))
        fwbw = [r["fwbw_ms"] for r in timed if r.get("fwbw_ms") is not None]
        if fwbw:
            best["fwbw_ms"] = min(fwbw)
        out.append(best)
    return out


def tests_summary(log: Path | None) -> str | None:
    """The last line of a pytest log ("90 passed, 129 deselected in 194.36s"), without the '=' frame."""
    if log is None:
        return None
    lines = [x.strip(" =") for x in log.read_text().splitlines() if x.strip()]
    return lines[-1] if lines else f"empty log {log}"
