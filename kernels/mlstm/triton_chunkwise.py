"""Chunkwise mLSTM in Triton: host wrappers and the autograd function behind `mlstm_chunkwise_triton`
(`triton_chunkwise_op.py`).

Launches: forward one kernel (`triton_chunkwise_fwd.py`), backward one (`triton_chunkwise_bwd.py`) plus one adding
the per-block shares when DHV spans several blocks; long sequences with few batch * heads add one boundary kernel
each way (segmented layout, `triton_chunkwise_segments.py`). Inputs, states and upstream gradients are read through
their strides and cast in the kernels; absent ones are compile-time flags, so no torch op runs but allocations.

Forward: one program per (DHV block, batch * head [, segment]), looping over chunks with the state in registers.
It writes h, per step z_t = n~_t . q^_t and m_t, and, when asked (`store_chunk_states`; off by default: recomputing
them was as fast), the state entering each chunk of a backward of several chunks: its dq then needs no pass that
recomputes them.

Backward (true gradient): with den_t = max(|z_t|, exp(-m_t)), num_t = C~_t^T q^_t and m held constant,
    dnum_t = dh_t / (den_t + eps),  dden_t = -<dh_t, h_t> / (den_t + eps),  dz_t = dden_t sign(z_t) [|z_t| > e^{-m_t}],
and num, z are one gated linear-attention readout with V' = [V, 1], so the kernel runs a gated linear-attention
backward with dH' = [dnum, dz] (recomputing the chunk states). The gate gradients follow from identities, computed
in the same kernel while it walks the chunks backward in time:
    di_s = <k_s, dk_s>;   d(cumsum log f)_t = <dH'_t, H'_t> - di_t  (+ <dC_L, C_L> + <dn_L, n_L> at t = S-1);
    d log f = reverse cumsum of that;  df = d log f * sigmoid(-f);  dm0 = <C0, dC0> + <n0, dn0>.
The stabilizer enters the output only through eps (dh_t/dm_t = -eps h_t / (den_t + eps)) and the last states
through C_L = e^{-m_L} C^u; those upstream gradients on m_t are routed back through m_t = max(log f_t + m_{t-1}, i~_t)
(a segmented reverse cumsum), which makes the gradient exact. With detach_normalizer=True, den and m are constants
(mlstm_kernels' custom backward): dz = 0 and no routing.
"""

from __future__ import annotations

import functools

import torch

from .._fast_launch import FastLauncher
from .._ints import cdiv, next_power_of_2
from . import triton_chunkwise_parallel as parallel
from . import triton_one_chunk_fwd as one_fwd
from .triton_chunkwise_bwd import _mlstm_chunkwise_bwd_kernel_tl
from .triton_chunkwise_common import _strides
from .triton_chunkwise_fwd import _mlstm_chunkwise_fwd_kernel_tl
from .triton_chunkwise_gates import sum_shares
from .triton_chunkwise_modes import _bwd_lowp, _fwd_lowp, _on_device, _out_lowp, _qk_lowp
from .triton_chunkwise_parallel_bwd import parallel_backward
from .triton_chunkwise_segments import bounds_backward, bounds_forward, store_chunk_states
from .triton_one_chunk_bwd import ROWS, _mlstm_one_chunk_bwd_kernel_tl

_FWD = FastLauncher(_mlstm_chunkwise_fwd_kernel_tl)
_BWD = FastLauncher(_mlstm_chunkwise_bwd_kernel_tl)
_BWD_ONE = FastLauncher(_mlstm_one_chunk_bwd_kernel_tl)


# widest head (DQK and DHV) the Triton mLSTM takes; DQK above ksplit.K_BLOCK runs in column blocks (one launch
# each takes DQK <= _K_LAUNCH)
MAX_HEAD_DIM = 512
_K_LAUNCH = 256

# set by benchmarks/kernels.py for its one block-size sweep; None picks num_warps from the tile sizes
NUM_WARPS_OVERRIDE: int | None = None

# software-pipelining stages of the chunk loops of the forward and backward kernels (None: Triton's default, 3 on
# sm_90). One stage was faster on an H200 (bf16, CUDA-graph timings of fw / fw+bw: (1024, 4, 64, 64) 0.092 / 0.311
# against 0.100 / 0.327 ms, (256, 4, 336, 64) 0.186 / 0.946 against 0.236 / 1.057, (64, 4, 512, 64) 0.073 / 0.361
# against 0.089 / 0.394), and Triton 3.6's default-stage backward of one 64-step chunk of 32-wide bf16 heads with a
# contiguous dh read shared memory out of bounds (illegal address; any batch, e.g. (2, 2, 64, 32))
NUM_STAGES: int | None = 1

# input dtypes whose one-DHV-block backwards that form dq in their single pass sum <dh, h> from their own dots
# (HD_FROM_DOTS), so the forward keeps no fp32 copy of h; () makes every backward read a saved h (A/B timings)
HD_FROM_DOTS_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)

# backwards of one chunk of at most 2 * ROWS steps from zero states, with <dh, h> from their own dots, no gradient
# on the last states and heads of at least ONE_CHUNK_MIN_DQK, run `triton_one_chunk_bwd.py` (steps in blocks of
# ROWS, only the blocks on or below the diagonal); False keeps the general kernel for them (A/B timings). H200, bf16
# fw+bw at the block's layouts, general / blocks (ms): (256, 8, 32, 64) 0.132 / 0.115, (64, 4, 64, 64) 0.0403 /
# 0.0374, (1024, 4, 64, 64) 0.494 / 0.488 with two-block chunks capped at 168 registers (0.502
# uncapped, 0.680 at 8 warps); 32-wide heads stay general: (1024, 4, 64, 32) 0.319 against 0.377 (0.412 capped)
ONE_CHUNK_BLOCKS = True
ONE_CHUNK_MIN_DQK = 64
# launch options of that kernel: num_warps (None: the general backward's) and the register cap of two-block chunks
# (None: no cap); persistent programs per SM on CUDA (None: one program per batch * head) and the
# software-pipelining stages of their loop over batch * heads. H200, bf16 fw+bw (`benchmarks/mlstm_one_chunk.py`):
# (1024, 4, 64, 64) one program per head capped at 168 registers 0.532 ms, 3 per SM with 2 stages 0.503, 2 per SM
# with 2 stages uncapped 0.451; (64, 4, 64, 64) 0.0441 / 0.0443 / 0.0381
ONE_CHUNK_NUM_WARPS: int | None = None
ONE_CHUNK_MAXNREG: int | None = None
ONE_CHUNK_PER_SM: int | None = 2
ONE_CHUNK_STAGES = 2

# register cap of the forward kernel (a launch option; None: no cap)
FWD_MAXNREG: int | None = None

# the forward kernel, walking several chunks, loads the next chunk's gates while it works on this one (False: each
# chunk's at its start, with its q, k, v tiles; A/B timings). H100, bf16, forward without gradients, GPU time of the
# kernel: (64, 4, 512, 64) 45.5 against 47.7 us (do_bench 0.0516, 0.0518 against 0.0540, 0.0535 ms), (16, 4, 2048,
# 64) 49.8 against 50.6 us; bit-identical outputs
FWD_GATE_PREFETCH = True

# dot mode of a bf16/fp16 forward with gradients through the chunk-parallel kernels (`triton_chunkwise_parallel.py`),
# which keeps an fp32 copy of h for the backward: True (default) runs its weighted dots and the boundary carry in the
# input dtype, as the forward without gradients (the copy then holds h before its rounding to the input dtype);
# False in TF32, as every other forward that keeps that copy. H100, bf16 fw+bw at (16, 4, 2048, 128): 1.207 against
# 1.378 ms (`mlstm_segments.py --parallel-variants`); heads above 128 unchanged (their column-block launches keep
# TF32). Under the interpreter every output and gradient stays within the bf16 tolerance of fp64 either way (h
# 0.006 against 0.003 of the tolerance's 0.02, df up to 0.011 against 0.004; `tests/kernels/
# test_mlstm_chunkwise_parallel.py`)
PARALLEL_GRAD_FWD_LOWP = True


def _launch_config(
    S: int, DQK: int, DHV: int, chunk_size: int, dtype: torch.dtype, column_block: bool = False
) -> tuple[int, int, int, int]:
    """Chunk length L, padded DQK block BK, DHV block BV and num_warps for one call; `dtype` is the tile dtype
    (float32 for a call with gradients), `column_block` a launch of the column-block path (ksplit)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; 64 is a good default.")
    return _tiles(S, DQK, DHV, chunk_size, dtype, NUM_WARPS_OVERRIDE, column_block)


@functools.lru_cache(maxsize=256)
def _tiles(
    S: int, DQK: int, DHV: int, chunk_size: int, dtype: torch.dtype, warps: int | None, column_block: bool = False
) -> tuple[int, ...]:
    """`_launch_config` after its argument check, memoized (it runs in every call's host time)."""
    if not 1 <= DQK <= _K_LAUNCH or not 1 <= DHV <= MAX_HEAD_DIM:
        raise ValueError(
            f"one launch of the chunkwise mLSTM kernels takes DQK <= {_K_LAUNCH} and DHV <= {MAX_HEAD_DIM}, got "
            f"DQK={DQK}, DHV={DHV}; mlstm_chunkwise--triton splits DQK up to {MAX_HEAD_DIM} itself; use "
            "mlstm_chunkwise--torch for larger heads, or more heads."
        )
    # tl.dot needs every dimension >= 16; the chunk is a power of two in [16, 128], no longer than needed
    L = min(max(next_power_of_2(chunk_size), 16), 128, max(next_power_of_2(S), 16))
    BK = max(next_power_of_2(DQK), 16)
    BV = min(max(next_power_of_2(DHV), 16), 64)
    # a forward without gradients (bf16/fp16 tiles) of one launch over several chunks of a 33-128-wide head keeps
    # chunks of 64: H200, (16, 4, 2048, 128) bf16, forward 0.329 against 0.478 ms at 32 (with gradients the backward
    # at 64 was slower, fw+bw 2.90 against 2.06; column-block launches at 64: 4.81 against 4.63 ms); H100, (64, 4,
    # 512, 64) bf16, 0.0756 against 0.0796 ms at 32 (0.0756 against 0.0793 on another H100; with the running max and
    # log2-unit weights 0.0555 against 0.0794)
    wide_fwd = BK in (64, 128) and dtype != torch.float32 and not column_block and S > 64
    if L > 32 and (BK >= 128 or (BK >= 64 and S > L)) and not wide_fwd:
        # keep the (L, BK) tiles and the (BK, BV) state in registers; over several chunks of a 64-wide head, chunks
        # of 32 also run faster (H200, (64, 4, 512, 64) bf16, GPU time of fw+bw: 0.47 ms against 0.79 at 64)
        L = 32
    if BK >= 256 and dtype == torch.float32:
        L, BV = 16, 32  # fp32 / TF32 dot operands of a 256-wide head overflow shared memory (242 KB > 227 KB)
    num_warps = 4 if BK * BV <= 64 * 64 else 8
    return L, BK, BV, warps or num_warps


def _stages() -> dict[str, int]:
    """The num_stages launch option of the forward and backward kernels: `NUM_STAGES` where set."""
    return {} if NUM_STAGES is None else {"num_stages": NUM_STAGES}


def _bwd_num_warps(one_pass: bool, L: int, fwd_warps: int, hd_dots: bool) -> int:
    """num_warps of the backward: 8 for a one-pass backward (one chunk, or stored entering states) of chunks of 64 or
    more steps that reads <dh, h> from a saved h, which holds several (L, L) fp32 tiles at once (one chunk at 4
    warps spilled: fw+bw 0.66 against 0.43 ms at (1024, 4, 64, 32) bf16 on an H200); the forward's otherwise: 8 was
    slower for the two-pass backward at (256, 8, 32, 64) and (64, 4, 512, 64), and with <dh, h> from its own dots
    (`HD_FROM_DOTS`) one chunk runs faster at 4 (H200, bf16, backward kernel alone: 0.239 against 0.410 ms at
    (1024, 4, 64, 64), 0.149 against 0.264 at (1024, 4, 64, 32); with stored states not measured)."""
    if NUM_WARPS_OVERRIDE is not None:
        return NUM_WARPS_OVERRIDE
    return 8 if one_pass and L >= 64 and not hd_dots else fwd_warps


def _one_chunk_blocks(
    L: int, BK: int, G: int, CPS: int, stored: bool, hd_dots: bool, has_init: bool, upstream: list
) -> bool:
    """Whether a backward runs `triton_one_chunk_bwd.py`: one chunk of at most 2 * ROWS steps (no segments, no
    stored states) from zero states, <dh, h> from its own dots (one DHV block), no upstream state gradients, heads of
    at least ONE_CHUNK_MIN_DQK (padded DQK block BK)."""
    one_chunk = G == 1 and CPS == 1 and not stored and L <= 2 * ROWS
    wanted = ONE_CHUNK_BLOCKS and BK >= ONE_CHUNK_MIN_DQK
    return wanted and one_chunk and hd_dots and not has_init and all(x is None for x in upstream)


def _one_chunk_cap(L: int) -> dict[str, int]:
    """The register cap of `triton_one_chunk_bwd.py` for chunks of L steps (two blocks only), as a launch option."""
    return one_fwd.reg_cap(ONE_CHUNK_MAXNREG if L > ROWS else None)


class _MLSTMChunkwiseTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, eps, chunk_size, detach_normalizer, need_last):
        B, NH, S, DQK = q.shape
        DHV = v.shape[-1]
        # the backward runs fp32/TF32 dots for every input dtype: size the tiles for fp32 when a gradient is needed
        grad = any(ctx.needs_input_grad)
        L, BK, BV, num_warps = _launch_config(S, DQK, DHV, chunk_size, torch.float32 if grad else q.dtype)
        has_init = C0 is not None
        f32 = {"dtype": torch.float32, "device": q.device}
        h = torch.empty(B, NH, S, DHV, dtype=q.dtype, device=q.device)  # (B, NH, S, DHV)
        NV = cdiv(DHV, BV)
        G, CPS, ctx.parallel = parallel.layout(S, L, DQK, NV * B * NH, q.device, grad)
        NC = cdiv(S, L)
        stored = grad and G == 1 and store_chunk_states(NC)
        # the backward needs <dh, h> unrounded and as exact as its own TF32 dots (the df identity cancels). For
        # bf16/fp16 inputs with one DHV block and dq formed in its single pass, it sums <dh, h> from those dots
        # (HD_FROM_DOTS) and needs no h; otherwise they run the forward's weighted dots in TF32 and keep an fp32
        # copy of h. fp32 inputs keep reading h, their output: their exact-fp32 backward at 64-step chunks and 64-wide
        # heads already fills the shared memory (with the extra dots it needed 8 bytes more than an H200 has)
        hd_dots = q.dtype in HD_FROM_DOTS_DTYPES and G == 1 and NV == 1 and (NC == 1 or stored)
        store_h32 = grad and q.dtype != torch.float32 and not hd_dots
        h32 = torch.empty(B, NH, S, DHV, **f32) if store_h32 else h  # (B, NH, S, DHV)
        z = torch.empty(B, NH, S, **f32)  # (B, NH, S)
        m = torch.empty(B, NH, S, **f32)  # (B, NH, S)
        if need_last:
            C_last = torch.empty(B, NH, DQK, DHV, **f32)  # (B, NH, DQK, DHV)
            n_last = torch.empty(B, NH, DQK, **f32)  # (B, NH, DQK)
            m_last = torch.empty(B, NH, **f32)  # (B, NH)
            last = (C_last, n_last, m_last)
        else:
            C_last = n_last = m_last = None
            last = (z, z, z)  # placeholders are never written
        states = (C0, n0, m0) if has_init else (q, q, q)  # placeholders are never read
        lowp = _fwd_lowp(q.dtype, store_h32 and not (ctx.parallel and PARALLEL_GRAD_FWD_LOWP))
        segs = None
        chunk_states = (z, z)  # placeholders are never written
        if stored:  # (BNH, NC + 1, DQK, DHV), (BNH, NC + 1, DQK)
            chunk_states = (torch.empty(B * NH, NC + 1, DQK, DHV, **f32), torch.empty(B * NH, NC + 1, DQK, **f32))
        carry = parallel.CARRY if ctx.parallel else None
        if G > 1:  # long sequence, few programs: entering states of all segments first, then all segments at once
            state_dtype = parallel.grad_state_dtype(q.dtype, has_init) if ctx.parallel else torch.float32
            BV_b = parallel.grad_bounds_block(DQK, DHV, BV, q.dtype) if ctx.parallel else BV
            segs, last_states = bounds_forward(k, v, i, f, C0, n0, m0, G, CPS, L, BV_b, _on_device(lowp), need_last,
                                               carry, state_dtype)  # fmt: skip
            if need_last:
                C_last, n_last, m_last = last_states
            states = segs
        plain = not (has_init or need_last or store_h32 or stored or ctx.parallel or G > 1)
        if one_fwd.use_one_chunk_forward(L, BK, NV, CPS == 1, plain, q.dtype):  # one chunk in blocks of ROWS steps
            one_fwd.one_chunk_forward(q, k, v, i, f, h, z, m, eps, L, BK, BV, _on_device(lowp),
                                      _on_device(_qk_lowp(q.dtype, lowp)), num_warps)  # fmt: skip
        elif ctx.parallel:  # short segments: each segment's output at once as one chunk, small tiles
            parallel.chunk_outputs(q, k, v, i, f, segs, G, CPS * L, eps, _on_device(lowp),
                                   _on_device(_qk_lowp(q.dtype, lowp)), h, h32 if store_h32 else None, z, m)
        else:
            _FWD[(NV, B * NH * G)](
                q, k, v, i, f, *states, h, h32, z, m, *last, *chunk_states,
                *q.stride(), *k.stride(), *v.stride(), *i.stride(), *f.stride(),
                *_strides(states[0], 4), *_strides(states[1], 3), *_strides(states[2], 2),
                NH, S, DQK, DHV, G, CPS * L, DQK**-0.5, eps,
                L=L, BK=BK, BV=BV, LOWP=_on_device(lowp), QK_LOWP=_on_device(_qk_lowp(q.dtype, lowp)),
                STORE_H32=store_h32, HAS_INIT=has_init or G > 1, ONE_CHUNK=CPS == 1, NEED_LAST=need_last and G == 1,
                SEGMENTED=G > 1, STORE_STATES=stored, PREFETCH=FWD_GATE_PREFETCH and CPS > 1, num_warps=num_warps,
                **_stages(), **one_fwd.reg_cap(FWD_MAXNREG),
            )  # fmt: skip
        # the segments' entering states and the last ones, or the chunks' entering states (stored)
        seg_saved = (*segs, C_last, n_last) if G > 1 else (*chunk_states, None, None, None) if stored else (None,) * 5
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, None if hd_dots else h32, z, m, *seg_saved)
        ctx.config = (eps, L, BK, BV, num_warps, detach_normalizer, G, CPS, stored, hd_dots)
        # absent upstream gradients arrive as None and become compile-time flags instead of zero tensors
        ctx.set_materialize_grads(False)
        return h, C_last, n_last, m_last

    @staticmethod
    def backward(ctx, dh, dC_last, dn_last, dm_last):
        q, k, v, i, f, C0, n0, m0, h, z, m, cs, ns, ms, C_last, n_last = ctx.saved_tensors
        eps, L, BK, BV, num_warps, detach, G, CPS, stored, hd_dots = ctx.config
        if ctx.parallel:  # short segments: each segment's gradients at once as one chunk, small tiles
            return parallel_backward(ctx.saved_tensors, (dh, dC_last, dn_last, dm_last), L, CPS, eps, detach)
        B, NH, S, DQK = q.shape
        num_warps = _bwd_num_warps(CPS == 1 or stored, L, num_warps, hd_dots)
        DHV = v.shape[-1]
        NV = cdiv(DHV, BV)
        has_init = C0 is not None
        if dh is None:  # only the last states were used
            dh = torch.zeros(B, NH, S, DHV, dtype=q.dtype, device=q.device)
        # with one DHV block the kernel writes the final gradients; with several, fp32 shares summed below
        lead = (B, NH) if NV == 1 else (NV, B, NH)
        share = lambda x: x.dtype if NV == 1 else torch.float32
        new = lambda shape, x: torch.empty(shape, dtype=share(x), device=q.device)
        dq, dk = new((*lead, S, DQK), q), new((*lead, S, DQK), k)  # ([NV,] B, NH, S, DQK)
        di, df = new((*lead, S), i), new((*lead, S), f)  # ([NV,] B, NH, S)
        dv = torch.empty(v.shape, dtype=v.dtype, device=q.device)  # (B, NH, S, DHV)
        if has_init:
            dC0 = torch.empty(C0.shape, dtype=C0.dtype, device=q.device)  # (B, NH, DQK, DHV)
            dn0 = torch.empty(n0.shape, dtype=n0.dtype, device=q.device)  # (B, NH, DQK)
            dm0 = new(m0.shape if NV == 1 else (NV, B * NH), m0)  # (B, NH[, 1]) or (NV, B * NH)
            states, grads0 = (C0, n0, m0), (dC0, dn0, dm0)
        else:
            dC0 = dn0 = dm0 = None
            states, grads0 = (q, q, q), (dv, dv, dv)  # placeholders are never read or written
        upstream = [dC_last, dn_last, dm_last]
        lowp = _bwd_lowp(q.dtype)
        if _one_chunk_blocks(L, BK, G, CPS, stored, hd_dots, has_init, upstream):
            _BWD_ONE[(one_fwd.grid_programs(B * NH, ONE_CHUNK_PER_SM, q.device),)](
                q, k, v, i, f, z, m, dh, dq, dk, dv, di, df,
                *q.stride(), *k.stride(), *v.stride(), *i.stride(), *f.stride(), *dh.stride(),
                NH, B * NH, S, DQK, DHV, DQK**-0.5, eps,
                R=min(L, ROWS), TWO=L > ROWS, BK=BK, BV=BV, LOWP=_on_device(lowp),
                QK_LOWP=_on_device(_qk_lowp(q.dtype, lowp)), OUT_LOWP=_on_device(_out_lowp(q.dtype, lowp)),
                DETACH=detach, PERSISTENT=ONE_CHUNK_PER_SM is not None, STAGES=ONE_CHUNK_STAGES,
                num_warps=ONE_CHUNK_NUM_WARPS or num_warps, **_one_chunk_cap(L),
            )  # fmt: skip
            return dq, dk, dv, di, df, None, None, None, None, None, None, None
        if G > 1:  # gradients of the state leaving each segment first, then all segments at once
            states = (cs, ns, ms)
            last = (C_last, n_last) if C_last is not None else None
            upstream = bounds_backward(
                q, i, f, h, z, m, last, dh, dC_last, dn_last, dm_last, G, CPS, L, BV, _on_device(lowp), eps, detach
            )[:3]
        dm_strides = (0, *_strides(dm_last, 2)) if G == 1 else upstream[2].stride()
        _BWD[(NV, B * NH * G)](
            q, k, v, i, f, *states, dh if hd_dots else h, z, m, dh, *(x if x is not None else dh for x in upstream),
            dq, dk, dv, di, df, *grads0, *((cs, ns) if stored else (dh, dh)),
            *q.stride(), *k.stride(), *v.stride(), *i.stride(), *f.stride(),
            *_strides(states[0], 4), *_strides(states[1], 3), *_strides(states[2], 2), *dh.stride(),
            *_strides(upstream[0], 4), *_strides(upstream[1], 3), *dm_strides,
            NH, S, DQK, DHV, B * NH, G, CPS * L, DQK**-0.5, eps,
            L=L, BK=BK, BV=BV, LOWP=_on_device(lowp),
            QK_LOWP=_on_device(_qk_lowp(q.dtype, lowp)), OUT_LOWP=_on_device(_out_lowp(q.dtype, lowp)),
            HAS_INIT=has_init or G > 1, STORE_D0=has_init,
            HAS_DC=upstream[0] is not None, HAS_DN=upstream[1] is not None, HAS_DM=upstream[2] is not None,
            MULTI_V=NV > 1, DETACH=detach, ONE_CHUNK=CPS == 1, SEGMENTED=G > 1, STORED=stored, HD_FROM_DOTS=hd_dots,
            num_warps=num_warps, **_stages(),
        )  # fmt: skip
        if NV > 1:
            dq, dk, di, df, dm0 = sum_shares(dq, dk, di, df, dm0, q, k, i, f, m0, BK)
        return dq, dk, dv, di, df, dC0, dn0, dm0, None, None, None, None

