"""The segmented layout of the chunkwise mLSTM in Triton: when to use it, and the launches of its boundary kernels.

One program per (DHV block, batch * head) walks every chunk of its sequence in turn; with few batch * heads and
long sequences most of the GPU idles (at (1, 4, 8192, 64): 4 programs of 128 chunks each). The segmented layout
cuts the sequence into G segments of CPS chunks: the boundary kernels (`triton_chunkwise_bounds.py`) carry only the
state (forward) or the state gradient (backward) across the chunks, split over DQK blocks too, and the forward and
backward kernels then run on all segments in parallel. It is the same function; the state at a boundary is
computed once instead of being carried by one program.

It pays only while the plain launch leaves SMs idle. bf16, H200 (132 SMs), fw+bw: (1, 4, 8192, 64) 1.28 against
5.09 ms plain, (2, 4, 4096, 128) 1.55 against 3.64, (4, 8, 2048, 64) 1.01 against 1.46, (8, 4, 2048, 128)
1.57 against 1.96; with 128 programs or more the plain layout was faster ((16, 4, 2048, 128): 2.03 against
2.41-3.00 ms, (64, 4, 512, 64): 0.87 against 1.00-1.24 ms), because the segment kernels redo the state terms.
"""

from __future__ import annotations

import functools

import torch

from .._fast_launch import fast
from .._ints import cdiv, next_power_of_2
from .triton_chunkwise_bounds import _mlstm_bounds_bwd_kernel_tl, _mlstm_bounds_fwd_kernel_tl
from .triton_chunkwise_bounds_rows import bounds_gates
from .triton_chunkwise_common import _strides

# chunks per segment for every call (None: `segment_plan` decides); set by tests and the benchmark's sweep
SEGMENT_CHUNKS_OVERRIDE: int | None = None

# store the state entering each chunk in the forward, so that the backward forms dq without a recomputing pass.
# None (default): recompute. Measured on an H200 (bf16 fw+bw, benchmarks/results/README.md), storing saved 10-16 %
# only with 256-wide heads, at twice the peak memory, and was 3-19 % slower or within noise at 64- and 128-wide
# heads; True stores them for every backward of several chunks (tests, A/Bs, memory-rich long-context training).
STORE_STATES_OVERRIDE: bool | None = None

# steps per chunk of the boundary kernels' carry (None: the layout's chunk length; a longer one must divide the
# segment) and their num_warps; set by benchmarks for A/B timings
BOUNDS_CARRY_OVERRIDE: int | None = None
BOUNDS_WARPS = 4
# (DQK block, DHV block) of the boundary kernels (None: `_k_block`'s at most 64 columns, the caller's DHV block);
# an A/B knob of benchmarks: smaller blocks give more, lighter programs over the same sequential walk
BOUNDS_BLOCKS_OVERRIDE: tuple[int, int] | None = None
# heads of at least BOUNDS_WIDE_DQK columns carry the boundary state in DQK blocks of BOUNDS_WIDE_BK: each program
# reads its (L, BV) block of v once per BK columns of k, so wider blocks read v fewer times, and such heads have
# programs to spare. H100, bf16, chunk-parallel kernels, DQK blocks of 128 against 64 (DHV blocks of 64): fw+bw
# (8, 16, 4096, 256) 11.20 against 11.92 ms, (8, 8, 8192, 512) 36.08 against 39.13; forward without gradients 2.11
# against 2.38 and 7.27 against 8.59; at (16, 4, 2048, 128) slower (fw+bw 1.089 against 1.027 ms)
BOUNDS_WIDE_DQK = 256
BOUNDS_WIDE_BK = 128
# the forward boundary kernel loads the next chunk's gates while it carries the state across this one (its k and v
# tiles are pipelined into shared memory; the gates, which the whole carry starts from, were loaded at each chunk's
# start). H100, bf16, forward without gradients (chunk-parallel): (16, 4, 2048, 128) 0.188 against 0.200 ms (the
# boundary kernel 97.0 against 103.7 us), (8, 16, 4096, 256) 2.132 against 2.179; bit-identical outputs. False: each
# chunk's gates at its start (A/B timings)
BOUNDS_GATE_PREFETCH = True
# the backward boundary kernel, given <dh, h> per step (`row_dots`), loads each chunk's z, m, <dh, h>, gates and
# branch rows (`_walk_rows`) while it carries the gradient across the chunk after it (the q and dh tiles feed its dot
# and are pipelined already). Interpreter: the same gradients either way. Not timed yet: an A/B knob
BOUNDS_BWD_PREFETCH = False
# the forward boundary kernel reads each chunk's gate terms (the keys' log weights, the chunk's log-forget total and
# their max: `triton_chunkwise_bounds_rows.bounds_gates`) from one pass over every chunk at once, ahead of its walk,
# instead of forming them (log-sigmoid, cumulative sum, max) in its sequential loop. Not timed yet: an A/B knob
BOUNDS_GATES_FIRST = False

# segment only when the plain launch has at most one program per this many SMs, then aim for this many per SM
_SMS_PER_PROGRAM = 2
_PROGRAMS_PER_SM = 4


@functools.lru_cache(maxsize=8)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def segment_plan(S: int, L: int, programs: int, device: torch.device) -> tuple[int, int]:
    """(G, CPS): the number of segments and chunks per segment for a sequence of S steps in chunks of L.

    Args:
        S: sequence length. L: chunk length. programs: programs of the unsegmented launch (DHV blocks x batch * heads).
        device: where the kernels run; off CUDA (the Triton interpreter) only `SEGMENT_CHUNKS_OVERRIDE` segments.

    Returns:
        G >= 1 and CPS >= 1 with G = ceil(ceil(S / L) / CPS); G = 1 is the plain layout.
    """
    NC = cdiv(S, L)
    if SEGMENT_CHUNKS_OVERRIDE is not None:
        CPS = max(1, int(SEGMENT_CHUNKS_OVERRIDE))
    elif device.type != "cuda" or NC < 2:
        return 1, NC
    else:
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        if programs * _SMS_PER_PROGRAM > sms:
            return 1, NC
        want = _PROGRAMS_PER_SM * sms
        CPS = cdiv(NC, min(NC, cdiv(want, programs)))
    G = cdiv(NC, CPS)
    return (G, CPS) if G > 1 else (1, NC)


def store_chunk_states(NC: int) -> bool:
    """Whether the forward of a plain launch with NC > 1 chunks stores the entering states for the backward (fp32
    (DQK, DHV) per chunk: at DQK = DHV = 64, L = 64, bf16 0.7x the bytes of q, k, v; 256 with L = 32: 5.3x). Only
    when `STORE_STATES_OVERRIDE` asks for it: recomputing was as fast or faster except at 256-wide heads."""
    return NC > 1 and bool(STORE_STATES_OVERRIDE)


def _k_block(DQK: int) -> tuple[int, int]:
    """DQK block of the boundary kernels (at most 64: small state tiles, more programs) and the number of blocks."""
    BK = min(max(next_power_of_2(DQK), 16), 64)
    return BK, cdiv(DQK, BK)


def _bounds_blocks(DQK: int, BV: int) -> tuple[int, int, int]:
    """(BK, NKB, BV) of a boundary-kernel launch: `BOUNDS_BLOCKS_OVERRIDE` when set, else `_k_block` (blocks of
    `BOUNDS_WIDE_BK` from `BOUNDS_WIDE_DQK` columns) and `BV`."""
    if BOUNDS_BLOCKS_OVERRIDE is None:
        if DQK >= BOUNDS_WIDE_DQK:
            return BOUNDS_WIDE_BK, cdiv(DQK, BOUNDS_WIDE_BK), BV
        return (*_k_block(DQK), BV)
    BK, BV = BOUNDS_BLOCKS_OVERRIDE
    return BK, cdiv(DQK, BK), BV


def _carry(L: int, CPS: int, carry: int | None = None) -> tuple[int, int]:
    """(chunk length, chunks per segment) the boundary kernels carry a segment of CPS * L steps in: chunks of
    `BOUNDS_CARRY_OVERRIDE`, else of `carry`, steps when that divides the segment; the layout's own otherwise."""
    want = BOUNDS_CARRY_OVERRIDE if BOUNDS_CARRY_OVERRIDE is not None else carry
    if want is None or want == L or (L * CPS) % want:
        return L, CPS
    return want, L * CPS // want


def bounds_forward(k, v, i, f, C0, n0, m0, G: int, CPS: int, L: int, BV: int, lowp: int, need_last: bool,
                   carry: int | None = None, state_dtype: torch.dtype = torch.float32):  # fmt: skip
    """The stabilized state entering each segment, and the last states when `need_last`. `carry`: steps per chunk
    of the carry when it divides the segment (None: L). `state_dtype`: dtype of the stored entering C (rounded once
    from the fp32 carry); n, m and the last states stay fp32.

    Returns:
        (cs (B, NH * G, DQK, DHV) in state_dtype, ns (B, NH * G, DQK), ms (B, NH * G)) and (C_L (B, NH, DQK, DHV),
        n_L (B, NH, DQK), m_L (B, NH)) or None; fp32 but cs.
    """
    B, NH, S, DQK = k.shape
    DHV = v.shape[-1]
    f32 = {"dtype": torch.float32, "device": k.device}
    cs = torch.empty(B, NH * G, DQK, DHV, dtype=state_dtype, device=k.device)  # (B, NH * G, DQK, DHV)
    ns = torch.empty(B, NH * G, DQK, **f32)  # (B, NH * G, DQK)
    ms = torch.empty(B, NH * G, **f32)  # (B, NH * G)
    last = (
        (torch.empty(B, NH, DQK, DHV, **f32), torch.empty(B, NH, DQK, **f32), torch.empty(B, NH, **f32))
        if need_last
        else (cs, ns, ms)  # placeholders are never written
    )
    has_init = C0 is not None
    init = (C0, n0, m0) if has_init else (k, k, k)  # placeholders are never read
    BK, NKB, BV = _bounds_blocks(DQK, BV)
    NV = cdiv(DHV, BV)
    L, CPS = _carry(L, CPS, carry)
    gates = bounds_gates(i, f, L) if BOUNDS_GATES_FIRST else (ns, ns)  # placeholders are never read
    fast(_mlstm_bounds_fwd_kernel_tl)[(NKB * NV, B * NH)](
        k, v, i, f, *init, cs, ns, ms, *last, *gates,
        *k.stride(), *v.stride(), *i.stride(), *f.stride(), *_strides(C0, 4), *_strides(n0, 3), *_strides(m0, 2),
        NH, S, DQK, DHV, G, CPS, NV,
        L=L, BK=BK, BV=BV, LOWP=lowp, HAS_INIT=has_init, NEED_LAST=need_last,
        PREFETCH=BOUNDS_GATE_PREFETCH and not BOUNDS_GATES_FIRST, GATES_GIVEN=BOUNDS_GATES_FIRST,
        num_warps=BOUNDS_WARPS,
    )  # fmt: skip
    return (cs, ns, ms), (last if need_last else None)


def bounds_backward(q, i, f, h, z, m, last, dh, dC_last, dn_last, dm_last, G, CPS, L, BV, lowp, eps, detach,
                    carry=None, shares_summed=False, hd=None, scaled=False, rows=None):  # fmt: skip
    """Gradients of the state leaving each segment (the caller's for the last one) and the per-DHV-block shares
    of the gradient routed to m there; `carry` as in `bounds_forward`. A caller that sums all the shares itself
    (`shares_summed`) lets `BOUNDS_BLOCKS_OVERRIDE` pick the DHV block; others get one share per block of BV.
    `scaled`: dcs in fp16, each (BK, BV) block of the kernel divided by a power of two (`_store_grad_state`).

    Args:
        h, z, m: the forward's saved h (BNH, S, DHV), z and m (BNH, S). hd: <dh_t, h_t> (BNH, S) fp32 over every
            column (`triton_chunkwise_gates.row_dots`), read instead of h when given. last: (C_L, n_L) from the
            forward, read only with dC_last or dn_last. dh, dC_last, dn_last, dm_last: upstream gradients (None where
            absent).

    Returns:
        dcs (B, NH * G, DQK, DHV), dns (B, NH * G, DQK), dms (NV, B, NH * G), fp32 (dcs fp16 if `scaled`); and with
        `scaled` (dsc (B, NH * G, NKB, NV) fp32, BK, BV): each block's scale and the blocks' shape, else None.
    """
    B, NH, S, DQK = q.shape
    DHV = dh.shape[-1]
    BK, NKB, own_bv = _bounds_blocks(DQK, BV)
    BV = own_bv if shares_summed else BV
    NV = cdiv(DHV, BV)
    f32 = {"dtype": torch.float32, "device": q.device}
    dcs = torch.empty(B, NH * G, DQK, DHV, dtype=torch.float16 if scaled else torch.float32, device=q.device)
    dns = torch.empty(B, NH * G, DQK, **f32)  # (B, NH * G, DQK)
    dms = torch.empty(NV, B, NH * G, **f32)  # (NV, B, NH * G)
    dsc = torch.empty(B, NH * G, NKB, NV, **f32) if scaled else dns  # placeholder is never written
    C_L, n_L = last if last is not None else (dcs, dns)  # placeholders are never read
    upstream = [x if x is not None else dh for x in (dC_last, dn_last, dm_last)]
    L, CPS = _carry(L, CPS, carry)
    if rows is not None and (hd is None or rows[1].shape[1] != B * NH * cdiv(S, L)):
        raise ValueError(f"bounds_backward: rows must come with hd and hold {cdiv(S, L)} chunks of {L} steps per "
                         f"batch * head, got {rows[1].shape[1]} terms for {B * NH}; call bounds_rows with L={L}")
    rows_ptr, terms_ptr = rows if rows is not None else (dns, dns)  # placeholders are never read
    fast(_mlstm_bounds_bwd_kernel_tl)[(NKB * NV, B * NH)](
        q, i, f, h, z, m, z if hd is None else hd, rows_ptr, terms_ptr, C_L, n_L, dh, *upstream, dcs, dsc, dns, dms,
        *q.stride(), *i.stride(), *f.stride(), *dh.stride(),
        *_strides(dC_last, 4), *_strides(dn_last, 3), *_strides(dm_last, 2),
        NH, S, DQK, DHV, B * NH, G, CPS, NV, DQK**-0.5, eps,
        L=L, BK=BK, BV=BV, NKB=NKB, LOWP=lowp,
        HAS_DC=dC_last is not None, HAS_DN=dn_last is not None, HAS_DM=dm_last is not None, MULTI_V=NV > 1,
        DETACH=detach, HD_GIVEN=hd is not None, PREFETCH=BOUNDS_BWD_PREFETCH and hd is not None and rows is None,
        SCALED=scaled, ROWS_GIVEN=rows is not None, num_warps=BOUNDS_WARPS,
    )  # fmt: skip
    return dcs, dns, dms, ((dsc, BK, BV) if scaled else None)
