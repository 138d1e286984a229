"""Merge a kernels.json timed with `benchmarks/kernels.py --only-mlstm` with the sLSTM part of an earlier run.

A full run (ours and NX-AI's, mLSTM and sLSTM, with the anchor script's slow sLSTM references) does not fit every
device call. When only the mLSTM kernels changed, `--only-mlstm` times the mLSTM rows, the mLSTM peak memory and
NX-AI's mLSTM anchors, and this module keeps the earlier file's sLSTM rows (ours and the anchors') beside them,
saying in the file's notes which run each part comes from. Both runs must be on the same device.
"""

from __future__ import annotations

import json
from pathlib import Path


def is_slstm(row: dict) -> bool:
    """Whether a row (ours or an anchor row) belongs to the sLSTM part of the file."""
    return row.get("op") == "slstm" or str(row.get("kernel", "")).startswith("slstm")


def carry_slstm(new: dict, earlier_path: Path) -> dict:
    """`new` (kernels.json content of an --only-mlstm run) with the sLSTM rows and sLSTM anchor rows of the file at
    `earlier_path`; the notes name the earlier run. Raises ValueError when that file is missing, from another
    device, or has no sLSTM rows."""
    if not earlier_path.exists():
        raise ValueError(
            f"--only-mlstm keeps the sLSTM rows of an earlier {earlier_path.name}, and {earlier_path} does not exist; "
            "run benchmarks/kernels.py without --only-mlstm first, or point --out at a folder holding one."
        )
    old = json.loads(earlier_path.read_text())
    old_meta, meta = old.get("meta", {}), dict(new["meta"])
    if old_meta.get("device") != meta.get("device"):
        raise ValueError(
            f"the earlier {earlier_path} was timed on {old_meta.get('device')!r}, this run on {meta.get('device')!r}; "
            "ratios need one device: run the full benchmark on this one."
        )
    rows = [r for r in old.get("rows", []) if is_slstm(r)]
    anchors = [r for r in old.get("anchor_rows", []) if is_slstm(r)]
    if not rows:
        raise ValueError(f"{earlier_path} holds no sLSTM rows to keep; run the full benchmark once.")
    # the sLSTM part's own run: the earlier file's, or where that file had kept it from (no nested notes)
    origin = old_meta.get("slstm_from") if old_meta.get("slstm_notes") else None
    earlier = origin or old_meta.get("commit", "an earlier commit")
    notes = old_meta["slstm_notes"] if origin else {"anchors": old_meta.get("anchors", ""),
                                                     "gpu_tests": old_meta.get("gpu_tests", "")}  # fmt: skip
    meta["anchors"] = (
        f"{meta['anchors']} (mLSTM part at {meta.get('commit', 'this commit')}); the sLSTM rows, ours and NX-AI's, "
        f"are kept from the run at {earlier}: {notes['anchors']}"
    )
    if notes.get("gpu_tests"):
        slstm_tests = f"for the sLSTM rows: {notes['gpu_tests']}"
        meta["gpu_tests"] = "; ".join(filter(None, [meta.get("gpu_tests"), slstm_tests]))
    meta["slstm_from"], meta["slstm_notes"] = earlier, notes
    return {
        "meta": meta,
        "rows": [r for r in new["rows"] if not is_slstm(r)] + rows,
        "anchor_rows": [r for r in new.get("anchor_rows", []) if not is_slstm(r)] + anchors,
    }
