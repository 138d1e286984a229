"""The NX-AI anchors of `benchmarks/kernels.py`: run ../shared/bench/anchor_kernels.py in subprocesses on the same GPU
and collect its JSON rows; and the summary line of a GPU test log recorded beside the timings."""

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


def anchor_rows(only_mlstm: bool = False) -> tuple[list[dict], str]:
    """Run the NX-AI anchor script if it and its packages are present (only its mLSTM part with `only_mlstm`); else
    say why not."""
    if not ANCHOR.exists():
        return [], (f"anchor script {ANCHOR} not present on this machine "
                    "(the shared/ folder is not copied to the GPU machine)")
    missing = [m for m in ("mlstm_kernels", "xlstm") if importlib.util.find_spec(m) is None]
    if missing:
        return [], f"anchor script present but packages {missing} are not installed (mlstm-kernels, xlstm 2.0.6)"
    rows = []
    # mLSTM at the six goal shapes with the long sLSTM shapes; then the patched sLSTM shapes alone (no mLSTM config
    # is named "none"). One process per call: a Triton compile crash in theirs must not end this run.
    runs = [(MLSTM_CONFIGS, {"NO_SLSTM": "1"})]
    if not only_mlstm:
        runs = [(MLSTM_CONFIGS, {}), ("none", {"SLSTM_PATCHED": "1"})]
    for configs, extra in runs:
        proc = subprocess.run([sys.executable, str(ANCHOR), "chunkwise--triton_limit_chunk", configs],
                              capture_output=True, text=True, env={**os.environ, "TAG": "anchor", **extra})  # fmt: skip
        for line in proc.stdout.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the script also prints version lines and kernel lists
            if isinstance(row, dict):
                rows.append(row)
    return rows, f"ran {ANCHOR.name} in the same device call"


def tests_summary(log: Path | None) -> str | None:
    """The last line of a pytest log ("90 passed, 129 deselected in 194.36s"), without the '=' frame."""
    if log is None:
        return None
    lines = [x.strip(" =") for x in log.read_text().splitlines() if x.strip()]
    return lines[-1] if lines else f"empty log {log}"
