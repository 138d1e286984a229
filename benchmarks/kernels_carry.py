"""Merge a kernels.json timed with `benchmarks/kernels.py --only-mlstm` (or `--only-slstm`) with the other part of an
earlier run.

A full run (ours and NX-AI's, mLSTM and sLSTM, with the anchor script's slow sLSTM references) does not fit every
device call. When only one part's kernels changed, `--only-mlstm` times the mLSTM rows, the mLSTM peak memory and
NX-AI's mLSTM anchors (`--only-slstm`: the sLSTM rows and NX-AI's sLSTM anchors), and this module keeps the earlier
file's rows of the other part (ours and the anchors') beside them, saying in the file's notes which run each part comes
from. Both runs must be on the same device.
"""

from __future__ import annotations

import json
from pathlib import Path

LABELS = {"mlstm": "mLSTM", "slstm": "sLSTM"}


def is_slstm(row: dict) -> bool:
    """Whether a row (ours or an anchor row) belongs to the sLSTM part of the file."""
    return row.get("op") == "slstm" or str(row.get("kernel", "")).startswith("slstm")


def part_of(row: dict) -> str:
    """"slstm" or "mlstm" (every other row: the mLSTM timings, peak memory, the SDPA and mLSTM anchors)."""
    return "slstm" if is_slstm(row) else "mlstm"


def _own(meta: dict) -> dict:
    return {"commit": meta.get("commit", "an earlier commit"), "anchors": meta.get("anchors", ""),
            "gpu_tests": meta.get("gpu_tests", "")}  # fmt: skip


def run_of_parts(meta: dict) -> dict[str, dict]:
    """For each part, the run its rows come from: {"mlstm": {commit, anchors, gpu_tests}, "slstm": {...}}; a file
    of one full run (no `parts`) has both from that run."""
    if "parts" in meta:
        return meta["parts"]
    own = _own(meta)
    return {"mlstm": own, "slstm": dict(own)}


def carry_part(new: dict, earlier_path: Path, kept: str) -> dict:
    """`new` (kernels.json content of a run that timed only the part other than `kept`) with the `kept` part's rows
    and anchor rows of the file at `earlier_path`; the notes name the run of each part. Raises ValueError when that
    file is missing, from another device, or has no rows of that part."""
    if kept not in LABELS:
        raise ValueError(f"kept must be one of {sorted(LABELS)}, got {kept!r}")
    ran = "slstm" if kept == "mlstm" else "mlstm"
    flag, KEPT, RAN = f"--only-{ran}", LABELS[kept], LABELS[ran]
    if not earlier_path.exists():
        raise ValueError(
            f"{flag} keeps the {KEPT} rows of an earlier {earlier_path.name}, and {earlier_path} does not exist; "
            f"run benchmarks/kernels.py without {flag} first, or point --out at a folder holding one."
        )
    old = json.loads(earlier_path.read_text())
    old_meta, meta = old.get("meta", {}), dict(new["meta"])
    if old_meta.get("device") != meta.get("device"):
        raise ValueError(
            f"the earlier {earlier_path} was timed on {old_meta.get('device')!r}, this run on {meta.get('device')!r}; "
            "ratios need one device: run the full benchmark on this one."
        )
    rows = [r for r in old.get("rows", []) if part_of(r) == kept]
    anchors = [r for r in old.get("anchor_rows", []) if part_of(r) == kept]
    if not rows:
        raise ValueError(f"{earlier_path} holds no {KEPT} rows to keep; run the full benchmark once.")
    source = run_of_parts(old_meta)[kept]
    this = _own(meta)
    meta["anchors"] = (
        f"{this['anchors']} ({RAN} part at {this['commit']}); the {KEPT} rows, ours and NX-AI's, "
        f"are kept from the run at {source['commit']}: {source['anchors']}"
    )
    if source.get("gpu_tests"):
        meta["gpu_tests"] = "; ".join(filter(None, [this["gpu_tests"], f"for the {KEPT} rows: {source['gpu_tests']}"]))
    if kept == "mlstm" and "ceilings" in old_meta:  # the device's ceilings were measured beside the mLSTM rows
        meta["ceilings"] = old_meta["ceilings"]
    meta["parts"] = {ran: this, kept: source}
    return {
        "meta": meta,
        "rows": [r for r in new["rows"] if part_of(r) == ran] + rows,
        "anchor_rows": [r for r in new.get("anchor_rows", []) if part_of(r) == ran] + anchors,
    }
