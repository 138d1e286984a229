"""sLSTM in PyTorch with a hand-written backward: the CPU training path.

The function is the one of `torch_ref.slstm_torch` (same signature, same stabilized states). Autograd through the
reference records about 15 small ops per time step and replays each with its own backward node; here the forward
writes every step's activations into preallocated buffers (time-major, heads first, so no step permutes memory),
and the backward is a second loop of plain tensor ops over those buffers, with the factors that do not depend on
the gradients (c/n, o/n, the gate derivatives) formed for all steps before it. The recurrent-weight gradient is one
batched matmul over all steps after the loop. Gradients flow through the stabilizer max exactly as autograd does
through the reference (except at exact ties of the max, where autograd splits the gradient in halves; the output
does not depend on m, so the gradients of wx, r, b and the initial h, c, n are the same either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .torch_ref import SLSTMState, _check_inputs, _initial_states, slstm_torch


class _SLSTMLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wx: Tensor, r: Tensor, b: Tensor, h0: Tensor, c0: Tensor, n0: Tensor, m0: Tensor):
        # wx (B, S, 4, NH, DH); r (NH, 4, DH, DH); b (NH, 4, DH); states (NH, B, DH) in the compute dtype
        B, S, _, NH, DH = wx.shape
        dtype = h0.dtype
        xs = (wx.to(dtype) + b.to(dtype).transpose(0, 1)).permute(1, 3, 0, 2, 4).contiguous()  # (S, NH, B, 4, DH)
        r_cat = r.to(dtype).permute(0, 2, 1, 3).reshape(NH, DH, 4 * DH)  # (NH, DH, 4 DH)
        kw = {"dtype": dtype, "device": xs.device}
        acts = torch.empty(S, NH, B, 4, DH, **kw)  # i', f', tanh(z~), sigmoid(o~) per step
        states = torch.empty(S + 1, 3, NH, B, DH, **kw)  # h, c, n after each step; index 0 holds the initial ones
        sig_neg_f = torch.empty(S, NH, B, DH, **kw)  # sigmoid(-f~) = d log sigmoid(f~) / d f~
        take_a = torch.empty(S, NH, B, DH, dtype=torch.bool, device=xs.device)  # max picked log f + m_prev
        states[0, 0], states[0, 1], states[0, 2] = h0, c0, n0
        h, c, n, m = h0, c0, n0, m0
        for t in range(S):
            pre = torch.baddbmm(xs[t].view(NH, B, 4 * DH), h, r_cat).view(NH, B, 4, DH)  # (NH, B, 4, DH)
            i_pre, f_pre, z_pre, o_pre = pre.unbind(2)
            a = F.logsigmoid(f_pre) + m  # (NH, B, DH)
            m = torch.maximum(a, i_pre)
            torch.ge(a, i_pre, out=take_a[t])
            i_act, f_act, z, o = acts[t].unbind(2)
            torch.exp(i_pre - m, out=i_act)
            torch.exp(a - m, out=f_act)
            torch.tanh(z_pre, out=z)
            torch.sigmoid(o_pre, out=o)
            torch.sigmoid(-f_pre, out=sig_neg_f[t])
            h_new, c_new, n_new = states[t + 1].unbind(0)
            torch.addcmul(f_act * c, i_act, z, out=c_new)
            torch.addcmul(i_act, f_act, n, out=n_new)
            torch.div(o * c_new, n_new, out=h_new)
            h, c, n = h_new, c_new, n_new
        ctx.save_for_backward(acts, states, sig_neg_f, take_a, r_cat)
        ctx.dtypes = (wx.dtype, r.dtype, b.dtype)
        hs = states[1:, 0].permute(2, 0, 1, 3).to(wx.dtype)  # (B, S, NH, DH)
        return hs, h.clone(), c.clone(), n.clone(), m

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_hs: Tensor, g_h: Tensor, g_c: Tensor, g_n: Tensor, g_m: Tensor):
        acts, states, sig_neg_f, take_a, r_cat = ctx.saved_tensors
        S, NH, B, _, DH = acts.shape
        dtype = acts.dtype
        zeros = acts.new_zeros(NH, B, DH)

        def grad_or_zeros(g: Tensor | None) -> Tensor:
            return zeros if g is None else g.to(dtype)

        g_out = acts.new_zeros(S, NH, B, DH) if g_hs is None else g_hs.to(dtype).permute(1, 2, 0, 3)  # (S, NH, B, DH)
        gh_rec, gc, gn, gm = grad_or_zeros(g_h), grad_or_zeros(g_c), grad_or_zeros(g_n), grad_or_zeros(g_m)
        # gradients of the gate pre-activations (i, f, z, o)
        g_pre = torch.empty(S, NH, B, 4, DH, dtype=dtype, device=acts.device)  # (S, NH, B, 4, DH)
        r_t = r_cat.transpose(1, 2)  # (NH, 4 DH, DH)
        # factors that do not depend on the gradients, for all steps at once (a few ops instead of a few per step)
        i_all, f_all, z_all, o_all = acts.unbind(3)  # each (S, NH, B, DH)
        inv_n = states[1:, 2].reciprocal()  # (S, NH, B, DH)
        c_over_n = states[1:, 1] * inv_n  # dh/do = c/n; dh/dn = -o c/n^2 (with o/n below)
        o_over_n = o_all * inv_n  # dh/dc
        k_o = c_over_n * o_all * (1.0 - o_all)  # dh/do~ = c/n * sigmoid'(o~)
        k_z = i_all * (1.0 - z_all * z_all)  # dc/dz~ = i' tanh'(z~)
        for t in range(S - 1, -1, -1):
            _, c_prev, n_prev = states[t].unbind(0)
            f_act = f_all[t]
            gh = g_out[t] + gh_rec
            gho = gh * o_over_n[t]
            gc = gc + gho
            gn = torch.addcmul(gn, gho, c_over_n[t], value=-1.0)
            gi_pre, gf_pre, gz_pre, go_pre = g_pre[t].unbind(2)
            t_i = torch.addcmul(gn, gc, z_all[t]) * i_all[t]  # through i' = exp(i~ - m)
            t_f = torch.addcmul(gc * c_prev, gn, n_prev) * f_act  # through f' = exp(a - m)
            gm_new = gm - t_i - t_f  # m enters i' and f' with a minus sign
            routed = torch.where(take_a[t], gm_new, 0.0)
            ga = t_f + routed
            torch.add(t_i, gm_new - routed, out=gi_pre)
            torch.mul(ga, sig_neg_f[t], out=gf_pre)
            torch.mul(gc, k_z[t], out=gz_pre)
            torch.mul(gh, k_o[t], out=go_pre)
            gh_rec = torch.bmm(g_pre[t].view(NH, B, 4 * DH), r_t)  # (NH, B, DH)
            gc, gn, gm = gc * f_act, gn * f_act, ga
        wx_dtype, r_dtype, b_dtype = ctx.dtypes
        g_wx = g_pre.permute(2, 0, 3, 1, 4).to(wx_dtype)  # (B, S, 4, NH, DH)
        g_b = g_pre.sum(dim=(0, 2))  # (NH, 4, DH): sums over S and B
        h_prev = states[:-1, 0].permute(1, 0, 2, 3).reshape(NH, S * B, DH)  # (NH, S B, DH)
        g_r_cat = h_prev.transpose(1, 2) @ g_pre.permute(1, 0, 2, 3, 4).reshape(NH, S * B, 4 * DH)  # (NH, DH, 4 DH)
        g_r = g_r_cat.view(NH, DH, 4, DH).permute(0, 2, 1, 3)  # (NH, 4, DH, DH)
        return g_wx, g_r.to(r_dtype), g_b.to(b_dtype), gh_rec, gc, gn, gm


def slstm_torch_loop(
    wx: Tensor,
    r: Tensor,
    b: Tensor,
    initial_states: SLSTMState | None = None,
    return_last_states: bool = False,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """sLSTM over a sequence, the function of `slstm_torch` with a hand-written backward (see the module doc).

    Args:
        wx: (B, S, 4, NH, DH) input parts of the gate pre-activations, gates in the order (i, f, z, o).
        r: (NH, 4, DH, DH) recurrent weights; h (a row vector) multiplies r[head, gate] from the left.
        b: (NH, 4, DH) gate biases.
        initial_states: (h, c, n, m), each (B, NH, DH), or None for h = c = n = 0 and m = -inf. Default: None.
        return_last_states: also return the states after the last step. Default: False.

    Returns:
        h (B, S, NH, DH) in the dtype of wx; with return_last_states, (h, (h_last, c, n, m)), each state
        (B, NH, DH) in float32 (float64 for float64 inputs).
    """
    tensors = [wx, r, b] + list(initial_states or [])
    if not (torch.is_grad_enabled() and any(x.requires_grad for x in tensors)):
        return slstm_torch(wx, r, b, initial_states, return_last_states)  # no backward: the lean reference loop
    B, S, NH, DH = _check_inputs(wx, r, b)
    dtype = torch.promote_types(wx.dtype, torch.float32)
    h0, c0, n0, m0 = (s.transpose(0, 1) for s in _initial_states(initial_states, (B, NH, DH), dtype, wx.device))
    out, h, c, n, m = _SLSTMLoop.apply(wx, r, b, h0, c0, n0, m0)
    if not return_last_states:
        return out
    return out, (h.transpose(0, 1), c.transpose(0, 1), n.transpose(0, 1), m.transpose(0, 1))
