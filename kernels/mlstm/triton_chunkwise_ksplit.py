"""Chunkwise mLSTM in Triton for wide heads (DQK > K_BLOCK = 128): the DQK columns in blocks.

Everything of the mLSTM but its normalization is linear in the DQK columns: with q = [q_1 .. q_K], k = [k_1 .. k_K]
and the states' rows split alike, the numerator C_t^T q^_t and z_t = n_t^T q^_t are sums of per-block terms over
the same gates and stabilizer m. The forward runs the plain-layout kernel once per block in RAW mode (its share of
the numerator and of z, in fp32), adds the shares and divides by max(|z|, e^{-m}) + eps. The backward runs the
backward kernel once per block on the full h, z and m: each launch writes its block's columns of dq, dk, rows of
dC0, dn0, and its shares of dv, di, df, dm0, which are added here; the terms that do not split by columns are
counted by the first block (K_FIRST, see `triton_chunkwise_bwd.py`). Same function and gradients as the one-launch
path; the price is a pass over fp32 (S, DHV) shares per block and one launch per block each way.

With few programs and a long sequence (`segment_plan`, as for the one-launch path) the blocks run the segmented
layout: one boundary launch each way over all columns (`triton_chunkwise_segments.py`), then every block's launch
on all segments at once from their entering states (rows `cols` of the boundary buffers).
"""

from __future__ import annotations

import torch

from .._ints import cdiv, next_power_of_2
from . import triton_chunkwise
from .triton_chunkwise import _BWD, _FWD, _bwd_num_warps, _launch_config
from .triton_chunkwise_common import _strides
from .triton_chunkwise_modes import _bwd_lowp, _fwd_lowp, _on_device, _out_lowp, _qk_lowp
from .triton_chunkwise_parallel import CARRY, chunk_outputs, grad_state_dtype, layout
from .triton_chunkwise_parallel_bwd import parallel_backward
from .triton_chunkwise_segments import bounds_backward, bounds_forward

# widest DQK block of one launch (at most the one-launch kernels' limit, 256); set by tests to split narrow heads.
# 128, not 256: a 256-column block sizes its tiles for the fp32 backward at chunks of 16 and DHV blocks of 32, two
# 128-column blocks at chunks of 32 and DHV blocks of 64. bf16 fw+bw on an H200 (ms, peak GB above the inputs):
# (8, 16, 4096, 256) 37.0 / 4.6 against 57.6 / 10.0 in one launch, (8, 8, 8192, 512) 153 / 9.2 against 254 / 22.1
# in blocks of 256 (mlstm_kernels: 12.1 / 6.5 and 41.9 / 24.9); the forward alone 8.3 against 7.5 and 32.7 against
# 31.7 ms. Blocks of 64 at (16, 4, 2048, 128) were slower than one launch: 3.66 against 2.06 ms.
K_BLOCK = 128

# DHV block of every column-block launch (None: `value_block` decides); set by benchmarks/mlstm_segments.py's sweep
VALUE_BLOCK_OVERRIDE: int | None = None


def value_block(DHV: int, BV: int, num_warps: int, dtype: torch.dtype, grad: bool) -> tuple[int, int]:
    """(BV, num_warps) of the column-block launches: bf16/fp16 heads of 128 or more value columns run DHV blocks of
    128 (8 warps with a gradient, 4 without) instead of the one-launch kernels' 64: each value block recomputes the
    chunk's scores and gates, and a wider block has half as many. bf16 on an H200 (ms, fw / fw+bw, peak GB):
    (8, 16, 4096, 256) 4.63 / 27.2, 3.5 against 8.35 / 37.1, 4.6 with blocks of 64; (8, 8, 8192, 512) 17.4 / 116.5,
    7.0 against 32.8 / 153.5, 9.2 (8 warps with a gradient: 27.2 against 32.1 at 4; forward alone at 4: 4.63
    against 5.27 at 8). fp32 inputs keep the one-launch sizes; so does NUM_WARPS_OVERRIDE's sweep."""
    if VALUE_BLOCK_OVERRIDE is not None:
        BV = max(16, next_power_of_2(VALUE_BLOCK_OVERRIDE))
        return BV, 8 if BV >= 128 and grad else num_warps
    if DHV < 128 or dtype == torch.float32 or triton_chunkwise.NUM_WARPS_OVERRIDE is not None:
        return BV, num_warps
    return 128, 8 if grad else 4


def tiles(S: int, DQK: int, DHV: int, chunk_size: int, dtype: torch.dtype, grad: bool) -> tuple[int, int, int]:
    """(L, BV, num_warps) of the column-block launches of a call: the one-launch tiles of the widest block (fp32
    tiles with a gradient), then `value_block`."""
    widest = k_blocks(DQK)[0].stop
    L, _, BV, num_warps = _launch_config(S, widest, DHV, chunk_size, torch.float32 if grad else dtype, True)
    BV, num_warps = value_block(DHV, BV, num_warps, dtype, grad)
    return L, BV, num_warps


def k_blocks(DQK: int) -> list[slice]:
    """Column slices of DQK in blocks of equal width, each at most K_BLOCK."""
    NK = cdiv(DQK, K_BLOCK)
    width = cdiv(DQK, NK)
    return [slice(s, min(DQK, s + width)) for s in range(0, DQK, width)]


class _MLSTMChunkwiseKSplit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, eps, chunk_size, detach_normalizer, need_last):
        B, NH, S, DQK = q.shape
        DHV = v.shape[-1]
        blocks = k_blocks(DQK)
        grad = any(ctx.needs_input_grad)
        L, BV, num_warps = tiles(S, DQK, DHV, chunk_size, q.dtype, grad)
        NV = cdiv(DHV, BV)
        G, CPS, together = layout(S, L, DQK, NV * B * NH, q.device, grad)
        ctx.parallel = together  # short segments: one output launch over all columns writes the normalized h itself
        f32 = {"dtype": torch.float32, "device": q.device}
        num = torch.empty(B * NH, S, DHV, **f32)  # the blocks' shares of the numerator, added up by the kernel
        z = torch.empty(B, NH, S, **f32)  # the blocks' shares of z, likewise
        m = torch.empty(B, NH, S, **f32)  # the same in every block (gates and m0 only)
        lowp = _fwd_lowp(q.dtype, grad and q.dtype != torch.float32)
        has_init = C0 is not None
        lasts, segs, seg_last = [], None, None
        if G > 1:  # few programs, long sequence: the segments' entering states over all columns, then the segments
            state_dtype = grad_state_dtype(q.dtype, has_init) if together else torch.float32
            segs, seg_last = bounds_forward(k, v, i, f, C0, n0, m0, G, CPS, L, BV, _on_device(lowp), need_last,
                                            CARRY if together else None, state_dtype)  # fmt: skip
        if together:
            chunk_outputs(q, k, v, i, f, segs, G, CPS * L, eps, _on_device(lowp),
                          _on_device(_qk_lowp(q.dtype, lowp)),
                          num, None, z, m)  # fmt: skip
        for kb, cols in enumerate([] if together else blocks):
            DK = cols.stop - cols.start
            states = (C0[:, :, cols], n0[:, :, cols], m0) if has_init else (q, q, q)  # placeholders: never read
            if G > 1:
                states = (segs[0][:, :, cols], segs[1][:, :, cols], segs[2])
            last = (m, m, m)  # placeholders: written only with NEED_LAST
            if need_last and G == 1:
                last = (torch.empty(B, NH, DK, DHV, **f32), torch.empty(B, NH, DK, **f32), torch.empty(B, NH, **f32))
                lasts.append(last)
            init = has_init or G > 1
            _FWD[(NV, B * NH * G)](
                q[..., cols], k[..., cols], v, i, f, *states, num, num, z, m, *last, m, m,
                *q[..., cols].stride(), *k[..., cols].stride(), *v.stride(), *i.stride(), *f.stride(),
                *_strides(states[0] if init else None, 4), *_strides(states[1] if init else None, 3),
                *_strides(states[2] if init else None, 2), NH, S, DK, DHV, G, CPS * L, DQK**-0.5, eps,
                L=L, BK=max(next_power_of_2(DK), 16), BV=BV, LOWP=_on_device(lowp),
                QK_LOWP=_on_device(_qk_lowp(q.dtype, lowp)), STORE_H32=False, HAS_INIT=init, ONE_CHUNK=CPS == 1,
                NEED_LAST=need_last and G == 1, SEGMENTED=G > 1, STORE_STATES=False, RAW=True, RAW_ADD=kb > 0,
                num_warps=num_warps,
            )  # fmt: skip
        h32 = num.view(B, NH, S, DHV)  # (B, NH, S, DHV)
        if not together:  # the blocks' numerator shares, added up: normalize
            h32.div_((torch.maximum(z.abs(), torch.exp(-m)) + eps).unsqueeze(-1))
        C_last = n_last = m_last = None
        if need_last and G > 1:
            C_last, n_last, m_last = seg_last
        elif need_last:
            C_last = torch.cat([x[0] for x in lasts], dim=2)  # (B, NH, DQK, DHV)
            n_last = torch.cat([x[1] for x in lasts], dim=2)  # (B, NH, DQK)
            m_last = lasts[0][2]  # (B, NH)
        seg_saved = (*segs, C_last, n_last) if G > 1 else (None,) * 5
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, h32, z, m, *seg_saved)
        ctx.config = (eps, L, BV, num_warps, detach_normalizer, G, CPS)
        ctx.set_materialize_grads(False)
        return h32.to(q.dtype), C_last, n_last, m_last

    @staticmethod
    def backward(ctx, dh, dC_last, dn_last, dm_last):
        q, k, v, i, f, C0, n0, m0, h, z, m, cs, ns, ms, C_last, n_last = ctx.saved_tensors
        eps, L, BV, num_warps, detach, G, CPS = ctx.config
        if ctx.parallel:  # short segments: each segment's gradients at once, all columns in one launch
            return parallel_backward(ctx.saved_tensors, (dh, dC_last, dn_last, dm_last), L, CPS, eps, detach)
        B, NH, S, DQK = q.shape
        DHV = v.shape[-1]
        NV = cdiv(DHV, BV)
        num_warps = _bwd_num_warps(CPS == 1, L, num_warps, False)
        has_init = C0 is not None
        if dh is None:  # only the last states were used
            dh = torch.zeros(B, NH, S, DHV, dtype=q.dtype, device=q.device)
        f32 = {"dtype": torch.float32, "device": q.device}
        dq, dk = torch.empty_like(q), torch.empty_like(k)  # (B, NH, S, DQK)
        dv = torch.zeros(B, NH, S, DHV, **f32)  # shares added over the blocks
        di, df = torch.zeros(B, NH, S, **f32), torch.zeros(B, NH, S, **f32)
        dC0 = torch.empty_like(C0) if has_init else None  # (B, NH, DQK, DHV)
        dn0 = torch.empty_like(n0) if has_init else None  # (B, NH, DQK)
        dm0 = torch.zeros(B * NH, **f32) if has_init else None
        lowp = _bwd_lowp(q.dtype)
        dm_strides = (0, *_strides(dm_last, 2))
        if G > 1:  # the gradients of the state leaving each segment, over all columns, then the segments
            last = (C_last, n_last) if C_last is not None else None
            dcs, dns, dms, _ = bounds_backward(
                q, i, f, h, z, m, last, dh, dC_last, dn_last, dm_last, G, CPS, L, BV, _on_device(lowp), eps, detach
            )
            dm_strides = dms.stride()
        blocks = k_blocks(DQK)
        # one set of share buffers for every block (the launches and sums run in stream order): the peak holds one
        # block's (NV, BNH, S, DK) fp32 shares of dq and dk
        width = blocks[0].stop - blocks[0].start
        dq_buf, dk_buf = torch.empty(NV * B * NH * S * width, **f32), torch.empty(NV * B * NH * S * width, **f32)
        di_p, df_p = torch.empty(NV, B * NH, S, **f32), torch.empty(NV, B * NH, S, **f32)
        dv_p = torch.empty(B, NH, S, DHV, **f32)
        for kb, cols in enumerate(blocks):
            DK = cols.stop - cols.start
            dq_p = dq_buf[: NV * B * NH * S * DK].view(NV, B * NH, S, DK)  # (NV, BNH, S, DK)
            dk_p = dk_buf[: NV * B * NH * S * DK].view(NV, B * NH, S, DK)  # (NV, BNH, S, DK)
            if has_init:
                states = (C0[:, :, cols], n0[:, :, cols], m0)
                grads0 = (torch.empty(B, NH, DK, DHV, **f32), torch.empty(B, NH, DK, **f32),
                          torch.empty(NV, B * NH, **f32))  # fmt: skip
            else:
                states, grads0 = (q, q, q), (dv_p, dv_p, dv_p)  # placeholders are never read or written
            upstream = [None if x is None else x[:, :, cols] for x in (dC_last, dn_last)] + [dm_last]
            if G > 1:
                states = (cs[:, :, cols], ns[:, :, cols], ms)
                upstream = [dcs[:, :, cols], dns[:, :, cols], dms]
            init = has_init or G > 1
            _BWD[(NV, B * NH * G)](
                q[..., cols], k[..., cols], v, i, f, *states, h, z, m, dh,
                *(x if x is not None else dh for x in upstream),
                dq_p, dk_p, dv_p, di_p, df_p, *grads0, dh, dh,
                *q[..., cols].stride(), *k[..., cols].stride(), *v.stride(), *i.stride(), *f.stride(),
                *_strides(states[0] if init else None, 4), *_strides(states[1] if init else None, 3),
                *_strides(states[2] if init else None, 2), *dh.stride(),
                *_strides(upstream[0], 4), *_strides(upstream[1], 3), *dm_strides,
                NH, S, DK, DHV, B * NH, G, CPS * L, DQK**-0.5, eps,
                L=L, BK=max(next_power_of_2(DK), 16), BV=BV, LOWP=_on_device(lowp),
                QK_LOWP=_on_device(_qk_lowp(q.dtype, lowp)), OUT_LOWP=_on_device(_out_lowp(q.dtype, lowp)),
                HAS_INIT=init, STORE_D0=has_init,
                HAS_DC=upstream[0] is not None, HAS_DN=upstream[1] is not None, HAS_DM=upstream[2] is not None,
                MULTI_V=NV > 1, DETACH=detach, ONE_CHUNK=CPS == 1, SEGMENTED=G > 1, STORED=False, K_FIRST=kb == 0,
                num_warps=num_warps,
            )  # fmt: skip
            dq[..., cols] = dq_p.sum(0).view(B, NH, S, DK)
            dk[..., cols] = dk_p.sum(0).view(B, NH, S, DK)
            dv += dv_p
            di += di_p.sum(0).view(B, NH, S)
            df += df_p.sum(0).view(B, NH, S)
            if has_init:
                dC0[:, :, cols] = grads0[0]
                dn0[:, :, cols] = grads0[1]
                dm0 += grads0[2].sum(0)
        if has_init:
            dm0 = dm0.view(m0.shape).to(m0.dtype)
        return (dq, dk, dv.to(v.dtype), di.to(i.dtype), df.to(f.dtype), dC0, dn0, dm0,
                None, None, None, None)  # fmt: skip
