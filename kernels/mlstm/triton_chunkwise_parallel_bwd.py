"""Chunk-parallel backward of the chunkwise mLSTM in Triton (opt-in, with `triton_chunkwise_parallel.py`).

For the segmented layout with short segments (at most 64 steps, each one chunk here): the boundary kernel
(`triton_chunkwise_bounds.py`) has already carried the state gradient backward and left, for every chunk, the
gradient (dC, dn) of the state leaving it and the gradient routed to m at its end (per-DHV-block shares); the
forward left the state entering every chunk. Then every chunk's gradients are local, and one program per (chunk,
batch * head) forms them with small tiles: (L, L) scores and (L, 64) blocks of q, k, v, dh, with the DQK and DHV
columns in inner loops (heads up to 512, no per-block shares).

Per chunk (the identities of `triton_chunkwise.py`, as the segmented backward kernel computes them):
    dnum = dh / (den + eps), <dh, h>, dz;  ds = dnum v^T + dz;  qk = q^ k^T;
    dq = ((w ds) k + w0 (dnum C_in^T + dz n_in)) / sqrt(DQK);   dk = (w ds)^T q^ + e (v dC^T + dn);
    dv = (w qk)^T dnum + e (k dC);   di_s = <k_s, dk_s>;   d(cumsum log f) as there, its reverse cumsum within the
    chunk, the stabilizer route of the chunk-end gradient and of eps, and dC0, dn0, dm0 in the first chunk.
The chunk's term <dC, C_L> + <dn, n_L> needs the leaving state C_L = decay C_in + sum_s e_s k_s v_s^T; it is
decay (<dC, C_in> + <dn, n_in>) + sum_s e_s <k_s, dC v_s + dn>, from the dk terms, so C_L is never formed.
"""

import functools

import torch

from .._fast_launch import fast
from .._ints import cdiv
from .triton_chunkwise_bounds_rows import bounds_rows
from .triton_chunkwise_common import _strides
from .triton_chunkwise_gates import row_dots
from .triton_chunkwise_modes import _bwd_lowp, _on_device, _out_lowp, _qk_lowp
from .triton_chunkwise_parallel import CARRY
from .triton_chunkwise_parallel_grads import _mlstm_chunk_bwd_kernel_tl
from .triton_chunkwise_segments import _bounds_blocks, _carry, _k_block, bounds_backward
from .triton_one_chunk_fwd import reg_cap

# num_warps of the gradient kernel: 4, at every head width. H100 (5d4ee14, bf16 fw+bw at (16, 4, 2048, 128), summed
# kernel time per call from torch.profiler): 403.8 us at 4 warps against 453.5 at 8 (the call 0.917 against 0.961 ms),
# 403.4 at 4 warps with 1 pipeline stage, 447.6 with 2, 663.9 at 16 warps; at (32, 8, 1024, 128) fw+bw 1.760 against
# 1.873 ms (a4ad740). benchmarks/kernels.py on an H100 with 4 warps (ef4acfe's kernels, `pytest -m gpu` passed in the
# same call) against 8 at 5d4ee14, fw+bw: 0.924 against 0.980 ms at (16, 4, 2048, 128), 10.82 against 11.25 at
# (8, 16, 4096, 256), 35.09 against 36.18 at (8, 8, 8192, 512). Offline sm_90 (64-step segments, 128-wide bf16 heads):
# 4 warps 255 registers with 488 B of stack and 123 KB of shared memory (one program per SM), 8 warps 255 with 8 B and
# 131 KB. An older kernel was slower at 4 (H200: 1.63 against 1.45 ms at (16, 4, 2048, 128); 18.86 against 17.20 at
# (8, 16, 4096, 256), e8cf5b6). benchmarks/mlstm_segments.py --parallel-variants --gpu-ms
NUM_WARPS = 4
# software-pipelining stages of the gradient kernel's column loops (None: Triton's default, 3). Offline sm_90 compile
# at 64-step segments, bf16, 8 warps (DQK 128 and 256 alike): 3 stages 240 B of stack and 147 KB of shared memory,
# 2 stages 264 B and 98 KB, 1 stage 104 B and 66 KB; an A/B knob of benchmarks/mlstm_segments.py --parallel-variants
NUM_STAGES: int | None = None
# dq's dnum C_in^T and dv's k dC take the output dot mode (bf16 operands for bf16 inputs, as the plain backward's dq
# and dv dots; neither feeds the gate gradients) instead of TF32: H200, bf16 fw+bw 1.340 against 1.454 ms at
# (16, 4, 2048, 128), 15.60 against 17.20 at (8, 16, 4096, 256), 53.14 against 59.12 at (8, 8, 8192, 512)
# (benchmarks/mlstm_segments.py --parallel-variants); False keeps TF32 (A/B)
STATE_OUT_DOTS = True
# sum <dh_t, h_t> over every column in one pass ahead of the boundary and gradient kernels (`row_dots`), which then
# read that (BNH, S) row instead of the fp32 h: the boundary kernel's programs of DHV block 0 each read whole rows of
# h and dh for it, one per DQK block, and the gradient kernel reads h once more. False: each reads h (A/B timings)
ROW_DOTS_FIRST = True
# with ROW_DOTS_FIRST: that pass also forms every per-chunk factor of the backward boundary walk (the gates, dnum's
# and dz's row factors, the decay, the stabilizer route's linear terms: `triton_chunkwise_bounds_rows.py`), in
# parallel over the chunks, so the walk's sequential loop keeps one dot and a few multiply-adds per chunk (offline
# sm_90, 128-wide bf16 heads: 190 registers against 248, 1424 SASS instructions against 2208). H100, bf16 fw+bw,
# kernel time per call (torch.profiler, a15ba2d): (16, 4, 2048, 128) 841 against 886 us (the walk 96.7 against
# 154.4, the pass 38.6 against row_dots' 26.9), (8, 16, 4096, 256) 10.21 against 10.78 ms (do_bench 10.21 against
# 10.79). False: the walk forms them itself (A/B)
BOUNDS_ROWS_FIRST = True
# the gradient kernel's launches, each forming some of the gradients (its PART): (0,) one launch forming all; (1, 2)
# dv in a launch of its own (at DV_NUM_WARPS) after one forming the rest; (3, 4, 2) dq, then dk with the gate
# gradients, then dv, each launch forming the (L, L) block w * ds it needs itself. Offline sm_90, 64-step segments,
# 128-wide bf16 heads, 8 warps: one launch 255 registers, 8 B of stack, 128 KB of shared memory; dv alone 122
# registers and 72 KB (two programs per SM), the rest 242; dq alone 120 and 64 KB, dk with the gates 231; no stack.
# Not timed yet: an A/B knob
GRAD_PARTS: tuple[int, ...] = (0,)
DV_NUM_WARPS = 8
# bf16/fp16 inputs: the boundary kernel stores the state gradients dC in fp16, each of its blocks divided by a power
# of two that puts the block's largest |dC| in [2^14, 2^15) (one fp32 scale per block), instead of fp32: half the
# bytes of the largest buffer of the backward (B * NH * S / 64 (DQK, DHV) blocks), written once and read twice. Its
# 11 significant bits are what the TF32 dot v dC^T (dk, and through it di) keeps of fp32 anyway; bf16 storage (8
# bits) took di past its tolerance. H100, bf16 fw+bw at (16, 4, 2048, 128), kernel time per call: the boundary
# kernel 150.2 against 155.3 us, but the gradient kernel 423.6 against 402.6 (the call's kernels 911 against 894 us).
# Off by default (an A/B knob)
SCALED_DC = False
# the dq launch (PART 3, which needs no state gradient) runs beside the backward boundary kernel, on a second CUDA
# stream: that kernel's one program per (DQK block, DHV block, batch * head) walks its chunks in turn, two programs
# per SM at (16, 4, 2048, 128), and leaves most of each SM idle; then one launch forms the rest (PART 5). The dq
# launch is queued after the boundary kernel, whose programs then take their SMs first. Off CUDA the two launches
# run in turn. False: GRAD_PARTS after the boundary kernel. H100, bf16 fw+bw at (16, 4, 2048, 128), three
# alternating rounds in one call (bb51c52): 0.995 / 1.005 / 1.076 ms against 0.937 / 0.981 / 0.910 without (queued
# ahead of the boundary kernel, 07929db: 1.370 against 0.914-1.018). Off: an A/B knob
CONCURRENT_DQ = False
# register cap of part 4 (dk with the gates) in a split launch (None: no cap). Offline sm_90, same heads: 128
# registers spill 208 B per thread (two programs per SM), 168 spill 56 B. An A/B knob
DK_PART_MAXNREG: int | None = None
# a launch forming both dq and dk (GRAD_PARTS 0 or 1) sweeps the DQK blocks twice, dq first, then dk (each sweep
# loads its own tiles of k and C), instead of forming both in one sweep: fewer (L, BK) tiles are live at once
# (offline sm_90, 128-wide bf16 heads, 4 warps: 208 B spilled against 488, 74 KB of shared memory against 123, two
# programs per SM against one; benchmarks/results/mlstm_parallel_sm90.md). H100, bf16 fw+bw at (16, 4, 2048, 128),
# three alternating rounds of benchmarks/kernels.py's timing in one call (6446267): 0.915 / 0.913 / 0.912 ms against
# 0.912 / 1.114 / 0.953 with one sweep, 1.000 / 0.996 / 0.996 at 8 warps and 1 stage: a tie at best. Off (A/B)
DQ_SWEEP = False
# register cap of every other launch of the gradient kernel (None: no cap): at 8 warps and 1 pipeline stage, 128
# registers put two programs on an SM and spill 496 B per thread (offline sm_90). Not timed yet: an A/B knob
GRAD_MAXNREG: int | None = None


def parallel_backward(saved: tuple, upstream: tuple, L: int, CPS: int, eps: float, detach: bool) -> tuple:
    """Every input gradient of a call that ran the segmented layout with segments of CPS chunks of L steps (at most
    `triton_chunkwise_parallel.MAX_SEGMENT` steps each): the boundary kernel in chunks of L, then every segment as
    one chunk.

    Args:
        saved: the autograd function's saved tensors, (q, k, v, i, f, C0, n0, m0, h, z, m, cs, ns, ms, C_L, n_L): the
            inputs, the forward's fp32 h (B, NH, S, DHV) and z, m (B, NH, S), the segments' entering states as
            `bounds_forward` returns them, and the last states (None unless returned).
        upstream: (dh, dC_L, dn_L, dm_L), None where absent.

    Returns:
        The autograd function's gradients: dq, dk, dv, di, df in the input dtypes, dC0, dn0, dm0 (None without
        initial states), and None for its four non-tensor arguments.
    """
    q, k, v, i, f, C0, n0, m0, h, z, m, cs, ns, ms, C_last, n_last = saved
    dh, dC_last, dn_last, dm_last = upstream
    last = (C_last, n_last) if C_last is not None else None
    mode = _bwd_lowp(q.dtype)
    lowp, qk_lowp, out_lowp = (_on_device(x) for x in (mode, _qk_lowp(q.dtype, mode), _out_lowp(q.dtype, mode)))
    B, NH, S, DQK = q.shape
    DHV = v.shape[-1]
    NC = cdiv(cdiv(S, L), CPS)  # segments, each one chunk of the gradient kernel
    L_seg = L * CPS
    BV, BK = _k_block(DHV)[0], _k_block(DQK)[0]  # blocks of at most 64 columns, as the boundary kernels'
    if dh is None:  # only the last states were used
        dh = torch.zeros(B, NH, S, DHV, dtype=q.dtype, device=q.device)
    if ROW_DOTS_FIRST and BOUNDS_ROWS_FIRST:  # hd (B, NH, S) fp32 and the boundary walk's factors
        hd, rows = bounds_rows(h, dh, z, m, i, f, _carry(L, CPS, CARRY)[0], DQK**-0.5, eps, detach)
    else:
        hd, rows = (row_dots(h, dh) if ROW_DOTS_FIRST else None), None
    bounds_k, _, bounds_v = _bounds_blocks(DQK, BV)  # each gradient-kernel tile of dC lies in one of theirs
    scaled = SCALED_DC and q.dtype in (torch.bfloat16, torch.float16) and BK <= bounds_k and BV <= bounds_v
    new = lambda x: torch.empty(x.shape, dtype=x.dtype, device=q.device)  # noqa: E731  contiguous, x's dtype
    dq, dk, dv, di, df = new(q), new(k), new(v), new(i), new(f)  # (B, NH, S, D...) and (B, NH, S)
    has_init = C0 is not None
    dC0 = new(C0) if has_init else None  # (B, NH, DQK, DHV)
    dn0 = new(n0) if has_init else None  # (B, NH, DQK)
    dm0 = torch.empty(B * NH, dtype=m0.dtype, device=q.device) if has_init else None
    init = (C0, n0, m0) if has_init else (q, q, q)  # placeholders are never read
    grads0 = (dC0, dn0, dm0) if has_init else (dq, dq, dq)  # placeholders are never written

    def launch(part: int, dcs, dns, dsc, dms, BK_S: int, BV_S: int) -> None:
        fast(_mlstm_chunk_bwd_kernel_tl)[(NC, B * NH)](
            q, k, v, i, f, cs, ns, ms, dcs, dns, dsc, dms, h, z, m, z if hd is None else hd, dh, *init,
            dq, dk, dv, di, df, *grads0,
            *q.stride(), *k.stride(), *v.stride(), *i.stride(), *f.stride(), *dh.stride(),
            *_strides(C0, 4), *_strides(n0, 3), *_strides(m0, 2),
            NH, S, DQK, DHV, NC, dms.shape[0], B * NH, DQK**-0.5, eps, BK_S, BV_S, cdiv(DQK, BK_S), cdiv(DHV, BV_S),
            L=L_seg, BK=BK, BV=BV, LOWP=lowp, QK_LOWP=qk_lowp, OUT_LOWP=out_lowp, STORE_D0=has_init, DETACH=detach,
            STATE_LOWP=out_lowp if STATE_OUT_DOTS else lowp, HD_GIVEN=hd is not None, PART=part,
            SCALED=scaled, DQ_SWEEP=DQ_SWEEP, num_warps=DV_NUM_WARPS if part == 2 else NUM_WARPS,
            **reg_cap(DK_PART_MAXNREG if part == 4 else GRAD_MAXNREG),
            **({} if NUM_STAGES is None else {"num_stages": NUM_STAGES}),
        )  # fmt: skip

    side = _side_stream(q.device) if CONCURRENT_DQ and q.is_cuda else None
    ready = torch.cuda.current_stream(q.device).record_event() if side is not None else None  # hd and the inputs
    dcs, dns, dms, scales = bounds_backward(q, i, f, h, z, m, last, dh, dC_last, dn_last, dm_last, NC, CPS, L, BV,
                                            lowp, eps, detach, CARRY, shares_summed=True, hd=hd, scaled=scaled,
                                            rows=rows)  # fmt: skip
    dsc, BK_S, BV_S = scales if scaled else (dcs, 1, 1)  # placeholder is never read
    dq_launch = lambda: launch(3, q, z, z, z.view(1, -1), 1, 1)  # noqa: E731  no state gradient read: placeholders
    if side is not None:  # queued after the boundary kernel's programs, on the second stream
        side.wait_event(ready)
        with torch.cuda.stream(side):
            dq_launch()
        torch.cuda.current_stream(q.device).wait_stream(side)  # every buffer it reads is freed after this
    elif CONCURRENT_DQ:  # off CUDA: in turn
        dq_launch()
    for part in (5,) if CONCURRENT_DQ else GRAD_PARTS:
        launch(part, dcs, dns, dsc, dms, BK_S, BV_S)
    if has_init:
        dm0 = dm0.view(m0.shape)
    return dq, dk, dv, di, df, dC0, dn0, dm0, None, None, None, None


@functools.lru_cache(maxsize=8)
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """A second CUDA stream of `device`, made once, for launches that run beside the boundary kernel."""
    return torch.cuda.Stream(device)
