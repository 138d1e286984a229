"""Render kernels.md from the rows `benchmarks/kernels.py` saved in kernels.json (ours, SDPA, torch references and the
same-run NX-AI anchors), with each speed goal of the kernel contract judged from ratios measured in that one run.

Usage:
    python benchmarks/kernels_report.py [benchmarks/results/kernels.json]   # rewrites kernels.md (X.json: X.md)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# goal shapes -> (NX-AI kernel in the anchor rows, ours/theirs goal for forward+backward, goal for forward or None)
MLSTM_GOALS = {
    (1024, 4, 64, 32): ("chunkwise--triton_limit_chunk", 0.33, None),
    (256, 8, 32, 64): ("chunkwise--triton_limit_chunk", 0.33, None),
    (64, 4, 512, 64): ("chunkwise--triton_limit_chunk", 0.5, 0.5),
    (16, 4, 2048, 128): ("chunkwise--triton_limit_chunk", 0.5, 0.5),
    (8, 16, 4096, 256): ("chunkwise--triton_limit_chunk", 0.85, None),
    (8, 8, 8192, 512): ("chunkwise--triton_limit_chunk", 0.85, None),
}  # (B, NH, S, DH), bf16
SLSTM_GOALS = {
    (1024, 64, 128, 4): ("slstm_cuda", 0.33, None),
    (256, 32, 256, 4): ("slstm_cuda", 0.33, None),
    (64, 512, 256, 4): ("slstm_cuda", 0.5, 0.5),
    (16, 2048, 512, 4): ("slstm_cuda", 0.5, 0.5),
}  # (B, S, D, NH)


def _mlstm_key(row: dict) -> tuple:
    return row["B"], row["NH"], row["S"], row["DH"]


def _slstm_key(row: dict) -> tuple:
    return row["B"], row["S"], row["D"], row["NH"]


def _ms(row: dict | None) -> str:
    return "–" if row is None else f"{row['fw_ms']:.3f} / {row['fwbw_ms']:.3f}"


def _verdict(ratio: float, goal: float | None) -> str:
    if goal is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x ({'met' if ratio <= goal else 'missed'}, goal <= {goal}x)"


def mlstm_table(rows: list[dict]) -> list[str]:
    lines = ["## mLSTM (bf16, DQK = DHV = DH)", "",
             "| B, NH, S, DH | ours default fw / fw+bw (ms) | ours best fw / fw+bw (chunk, warps) | SDPA causal "
             "fw / fw+bw | ours / SDPA fw+bw | torch chunkwise fw / fw+bw |", "|---|---|---|---|---|---|"]  # fmt: skip
    shapes = dict.fromkeys(_mlstm_key(r) for r in rows if r["op"] == "mlstm")
    for shape in shapes:
        sel = [r for r in rows if r["op"] == "mlstm" and _mlstm_key(r) == shape]
        ours = [r for r in sel if r["kernel"] == "mlstm_chunkwise--triton"]
        default = next((r for r in ours if r["num_warps"] == "default"), None)
        best = min(ours, key=lambda r: r["fwbw_ms"])
        sdpa = next(r for r in sel if r["kernel"] == "sdpa_causal")
        ref = next((r for r in sel if r["kernel"] == "mlstm_chunkwise--torch"), None)
        lines.append(f"| {', '.join(map(str, shape))} | {_ms(default)} | {_ms(best)} ({best['chunk_size']}, "
                     f"{best['num_warps']}) | {_ms(sdpa)} | {best['fwbw_ms'] / sdpa['fwbw_ms']:.1f}x | {_ms(ref)} |")
    return lines


_SLSTM_OURS = {"slstm--triton": "", "slstm--triton_fp16r": " (slstm--triton_fp16r: fp16 R)",
               "slstm--triton_fp32r": " (slstm--triton_fp32r: fp32 R re-read, opt-in)"}
"""Our sLSTM kernels in the tables, and the note after the dtype of each."""


def slstm_table(rows: list[dict]) -> list[str]:
    lines = ["", "## sLSTM (wx in the listed dtype, r and b fp32)", "",
             "| B, S, D, NH | dtype | ours fw / fw+bw (ms) | torch loop fw / fw+bw (fp32) | speed-up fw+bw |",
             "|---|---|---|---|---|"]  # fmt: skip
    shapes = dict.fromkeys(_slstm_key(r) for r in rows if r["op"] == "slstm")
    for shape in shapes:
        sel = [r for r in rows if r["op"] == "slstm" and _slstm_key(r) == shape]
        ref = next((r for r in sel if r["kernel"] == "slstm--torch"), None)
        for r in (r for r in sel if r["kernel"] in _SLSTM_OURS):
            ratio = f"{ref['fwbw_ms'] / r['fwbw_ms']:.1f}x" if ref and r["dtype"] == "float32" else "–"
            dtype = r["dtype"] + _SLSTM_OURS[r["kernel"]]
            lines.append(f"| {', '.join(map(str, shape))} | {dtype} | {_ms(r)} | {_ms(ref)} | {ratio} |")
    return lines


def anchor_table(rows: list[dict], anchors: list[dict], timer: str | None = None) -> list[str]:
    """Ours against NX-AI at every goal shape that both ran in this run: ratios and the goals' verdicts."""
    good = [a for a in anchors if "error" not in a]
    ours = "`triton.testing.do_bench` medians, as theirs" if timer == "do_bench" else "CUDA-event medians"
    lines = ["", "## Against the NX-AI kernels, same run", "",
             f"Ours: {ours} (this script), for each column the fastest of our launches (default and swept "
             "chunk / warps, the mLSTM table above). Theirs: `triton.testing.do_bench` medians from the anchor script "
             "in the same device call. Ratio = ours / theirs (below 1: ours is faster). The sLSTM anchor is the xlstm "
             "`sLSTMLayer` (cuda backend, fp32, conv off), which also runs its gate projections and norm; ours is the "
             "recurrent kernel alone.", "",
             "| kernel, shape | ours fw / fw+bw (ms) | NX-AI fw / fw+bw (ms) | fw+bw ratio | fw ratio |",
             "|---|---|---|---|---|"]  # fmt: skip
    found = 0
    for shape, (name, goal, goal_fw) in MLSTM_GOALS.items():
        theirs = next((a for a in good if a.get("kernel") == name and _mlstm_key(a) == shape), None)
        ours = [r for r in rows if r["op"] == "mlstm" and r["kernel"] == "mlstm_chunkwise--triton"
                and _mlstm_key(r) == shape]  # fmt: skip
        if theirs is None or not ours:
            continue
        # each goal against our best launch for it: the fastest forward alone, the fastest forward + backward
        best = {"fw_ms": min(r["fw_ms"] for r in ours), "fwbw_ms": min(r["fwbw_ms"] for r in ours)}
        found += 1
        lines.append(f"| mLSTM {shape} bf16, {name} | {_ms(best)} | {_ms(theirs)} | "
                     f"{_verdict(best['fwbw_ms'] / theirs['fwbw_ms'], goal)} | "
                     f"{_verdict(best['fw_ms'] / theirs['fw_ms'], goal_fw)} |")
    for shape, (name, goal, goal_fw) in SLSTM_GOALS.items():
        theirs = next((a for a in good if a.get("kernel") == name and _slstm_key(a) == shape), None)
        ours_rows = [r for r in rows if r["op"] == "slstm" and r["kernel"] in _SLSTM_OURS
                     and _slstm_key(r) == shape]  # fmt: skip
        for ours in ours_rows if theirs is not None else []:
            found += 1
            label = ours["dtype"] + _SLSTM_OURS[ours["kernel"]]
            lines.append(f"| sLSTM {shape} {label}, {name} | {_ms(ours)} | {_ms(theirs)} | "
                         f"{_verdict(ours['fwbw_ms'] / theirs['fwbw_ms'], goal)} | "
                         f"{_verdict(ours['fw_ms'] / theirs['fw_ms'], goal_fw)} |")
    if not found:
        return ["", "## Against the NX-AI kernels", "", "No NX-AI anchor ran at a goal shape in this run."]
    other = [a for a in good if a.get("kernel") in ("sdpa_causal", "slstm_vanilla")]
    if other:
        shape = lambda a: _slstm_key(a) if a["kernel"].startswith("slstm") else _mlstm_key(a)  # noqa: E731
        lines += ["", "Also in the anchor run: " + "; ".join(
            f"{a['kernel']} ({', '.join(map(str, shape(a)))}): {_ms(a)} ms" for a in other)]
    failed = [a for a in anchors if "error" in a]
    if failed:
        lines += ["", "Anchor runs that failed: " + "; ".join(f"{a.get('kernel')}: {a['error'][:120]}" for a in failed)]
    return lines


def mlstm_work(B: int, NH: int, S: int, DH: int, chunk: int = 64) -> dict[str, float]:
    """Work models of the chunkwise mLSTM (bf16, DQK = DHV = DH) for the ceilings table.

    FLOPs executed by the chunkwise form with full (L, L) tiles, L = the chunk the kernel runs (64, or the sequence
    rounded up to a power of two >= 16 when shorter): per step 2 L DH for the scores, 2 L DH for their product with V,
    2 DH^2 for the state readout and 2 DH^2 for the state update; forward+backward counts 3x the forward (the usual
    convention). Bytes: the least a kernel must move in bf16: the forward reads q, k, v, i, f and writes h; the
    backward also reads q, k, v, i, f and dh and writes dq, dk, dv, di, df.
    """
    L = min(chunk, max(16, 1 << (S - 1).bit_length()))
    fw_flops = 2.0 * B * NH * S * (2 * L * DH + 2 * DH * DH)
    fw_bytes = 2.0 * B * NH * S * (4 * DH + 2)
    bw_bytes = 2.0 * B * NH * S * (7 * DH + 4)
    return {"fw_flops": fw_flops, "fwbw_flops": 3 * fw_flops, "fw_bytes": fw_bytes, "fwbw_bytes": fw_bytes + bw_bytes}


def ceilings_table(rows: list[dict], peaks: dict | None) -> list[str]:
    """Achieved TFLOP/s and GB/s of our default mLSTM launch against the device's measured ceilings."""
    if not peaks:
        return []
    lines = ["", "## mLSTM against the device's ceilings", "",
             f"Measured {peaks.get('measured', 'in the same run')}: copy bandwidth {peaks['copy_gbs']:.0f} GB/s "
             "(1 GiB bf16 copy, bytes read "
             f"plus written), bf16 matmul {peaks['bf16_tflops']:.0f} TFLOP/s (8192^3). Work models in "
             "`kernels_report.mlstm_work`: executed FLOPs of the chunkwise form, the least bytes a kernel moves.", "",
             "| B, NH, S, DH | fw TFLOP/s (% of peak) | fw GB/s (% of copy) | fw+bw TFLOP/s (%) | fw+bw GB/s (%) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r["op"] != "mlstm" or r["kernel"] != "mlstm_chunkwise--triton" or r.get("num_warps") != "default":
            continue
        work = mlstm_work(r["B"], r["NH"], r["S"], r["DH"], r.get("chunk_size", 64))
        cells = []
        for part in ("fw", "fwbw"):
            seconds = r[f"{part}_ms"] / 1e3
            tflops, gbs = work[f"{part}_flops"] / seconds / 1e12, work[f"{part}_bytes"] / seconds / 1e9
            cells += [f"{tflops:.1f} ({100 * tflops / peaks['bf16_tflops']:.1f} %)",
                      f"{gbs:.0f} ({100 * gbs / peaks['copy_gbs']:.1f} %)"]
        lines.append(f"| {', '.join(map(str, _mlstm_key(r)))} | " + " | ".join(cells) + " |")
    return lines


def peak_table(rows: list[dict]) -> list[str]:
    """Peak memory of forward+backward, ours and mlstm_kernels', and the goal's verdict (ours no higher)."""
    peaks = [r for r in rows if r["op"] == "mlstm_peak"]
    if not peaks:
        return []
    lines = ["", "## Peak memory of mLSTM forward+backward", "",
             "CUDA memory allocated above the inputs during one forward + `out.sum().backward()` (bf16), same run.", "",
             "| B, NH, S, DH | kernel | peak GB |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {', '.join(map(str, _mlstm_key(r)))} | {r['kernel']} | {r['peak_gb']:.2f} |" for r in peaks]
    ours = next((r for r in peaks if r["kernel"] == "mlstm_chunkwise--triton"), None)
    theirs = next((r for r in peaks if r["kernel"] == "chunkwise--triton_limit_chunk"), None)
    if ours and theirs:
        met = "met" if ours["peak_gb"] <= theirs["peak_gb"] else "missed"
        lines += ["", f"Ours / mlstm_kernels': {ours['peak_gb'] / theirs['peak_gb']:.2f}x ({met}, goal <= 1x)."]
    return lines


def _timer(meta: dict) -> str:
    if meta.get("timer") == "do_bench":
        return (f"Medians of `triton.testing.do_bench` ({meta['warmup']} ms warm-up, {meta['reps']} ms timed), the "
                "anchor script's timer")
    return f"Median of {meta['reps']} CUDA-event-timed calls after {meta['warmup']} warm-up calls"


def render(data: dict) -> str:
    meta = data["meta"]
    lines = ["# Kernel timings: Triton mLSTM / sLSTM next to torch SDPA, the torch references and NX-AI", "",
             f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}. {_timer(meta)}; "
             "fw+bw = forward + `out.sum().backward()`.",
             "Written by `benchmarks/kernels.py` (rendered by `benchmarks/kernels_report.py`). Anchors: "
             f"{meta['anchors']}."]  # fmt: skip
    if meta.get("gpu_tests"):
        lines.append(f"Kernel tests on this device (`pytest -m gpu tests/kernels`; in the same call unless noted): "
                     f"{meta['gpu_tests']}.")
    lines.append("")
    rows = data["rows"]
    lines += mlstm_table(rows) + ceilings_table(rows, meta.get("ceilings")) + slstm_table(rows)
    lines += anchor_table(rows, data.get("anchor_rows", []), meta.get("timer")) + peak_table(rows)
    return "\n".join(lines) + "\n"


def write(json_path: Path) -> Path:
    """Rewrite the Markdown beside `json_path` from its rows: kernels.json -> kernels.md, a copy kept for another
    device (e.g. kernels_h100.json) -> kernels_h100.md."""
    path = json_path.with_suffix(".md")
    path.write_text(render(json.loads(json_path.read_text())))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, default=RESULTS / "kernels.json")
    print(write(parser.parse_args().json).read_text())


if __name__ == "__main__":
    main()
