"""The public Triton chunkwise mLSTM op, `mlstm_chunkwise_triton` ("mlstm_chunkwise--triton"): input checks, then the
chunk-parallel forward (calls without gradients where it is faster), the autograd function of one launch per pass
(`triton_chunkwise.py`) or of DQK column blocks (`triton_chunkwise_ksplit.py`); calls autograd does not record run
the function's forward alone (`kernels/_autograd.py`)."""

from __future__ import annotations

from torch import Tensor

from .._autograd import forward_only, needs_grad
from . import triton_chunkwise_ksplit as ksplit
from . import triton_chunkwise_parallel as parallel
from ._common import MLSTMState, check_initial_states, check_sequence_inputs, pack_states
from .triton_chunkwise import MAX_HEAD_DIM, _MLSTMChunkwiseTriton
from .triton_chunkwise_modes import _LOWP


def mlstm_chunkwise_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    c_initial: Tensor | None = None,
    n_initial: Tensor | None = None,
    m_initial: Tensor | None = None,
    return_last_states: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 64,
    detach_normalizer: bool = False,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """mLSTM over a sequence, chunkwise, in Triton (forward and backward), same function as mlstm_chunkwise--torch.

    Args:
        q: (B, NH, S, DQK) queries, float32, bfloat16 or float16; DQK <= 512 (above 128 in blocks of DQK columns).
        k: (B, NH, S, DQK) keys.
        v: (B, NH, S, DHV) values; DHV <= 512.
        i: (B, NH, S) input-gate pre-activations.
        f: (B, NH, S) forget-gate pre-activations.
        c_initial: (B, NH, DQK, DHV) initial stabilized C, or None for zeros. Default: None.
        n_initial: (B, NH, DQK) initial stabilized n, or None for zeros. Default: None.
        m_initial: (B, NH, 1) or (B, NH) initial stabilizer, or None for zeros. Default: None.
        return_last_states: also return the states after the last step. Default: False.
        eps: added to the denominator max(|n^T q|, exp(-m)). Default: 1e-6.
        chunk_size: time steps per chunk, rounded up to a power of two in [16, 128] (and down to 32 for DQK > 64,
            or for DQK > 32 when S spans more than one chunk; a bf16/fp16 forward without gradients over several
            chunks with 32 < DQK <= 128 keeps up to 64).
            Changes rounding only. Default: 64.
        detach_normalizer: treat the denominator and m as constants in the backward, as mlstm_kernels' custom
            backward does; the gradient is then not the true gradient where |n^T q| > exp(-m). Default: False.

    Returns:
        h (B, NH, S, DHV) in the dtype of q; with return_last_states, (h, (C, n, m)) with C (B, NH, DQK, DHV),
        n (B, NH, DQK), m (B, NH, 1) in float32.

    Memory: on CUDA, heads wider than 64 over 1024+ steps run the chunk-parallel kernels
    (`triton_chunkwise_parallel.auto_parallel`), which keep the state entering every 64-step segment for the
    backward: B * NH * S / 64 * DQK * DHV elements, fp32, or the input dtype for bf16/fp16 inputs without initial
    states (at (8, 8, 8192, 512) bf16 fw+bw peaked at 15.6 GB on an H100, against 24.9 GB for mlstm_kernels'; with
    fp32 states 19.9 GB, and 7.0 GB with the chunk-walking layout). Set
    `triton_chunkwise_parallel.PARALLEL_FORWARD = False` to keep the chunk-walking layouts (slower there).
    """
    B, NH, S, DQK, DHV = check_sequence_inputs(q, k, v, i, f)
    if q.dtype not in _LOWP:
        raise ValueError(
            f"mlstm_chunkwise--triton takes float32, bfloat16 or float16 inputs, got {q.dtype}; "
            "cast the inputs, or use mlstm_chunkwise--torch for float64."
        )
    if any(x.dtype != q.dtype for x in (k, v)) or q.device != k.device or q.device != v.device:
        raise ValueError(
            f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on {q.device}/{k.device}/"
            f"{v.device}; cast them to one dtype."
        )
    states = (c_initial, n_initial, m_initial)
    if not check_initial_states(*states, (B, NH, DQK, DHV)):
        states = (None, None, None)  # zero states, without allocating them
    for name, x in zip(("i", "f", "c_initial", "n_initial", "m_initial"), (i, f, *states)):
        if x is not None and (x.device != q.device or not x.is_floating_point()):
            raise ValueError(
                f"{name} must be a floating-point tensor on {q.device} like q, got {x.dtype} on {x.device}; "
                "move or cast it with .to(q.device, torch.float32)."
            )
    if DQK > MAX_HEAD_DIM or DHV > MAX_HEAD_DIM:
        raise ValueError(
            f"mlstm_chunkwise--triton takes heads up to {MAX_HEAD_DIM} wide, got DQK={DQK}, DHV={DHV}; use more "
            "heads, or mlstm_chunkwise--torch."
        )
    # a call without gradients where the chunk-parallel kernels were faster (or while PARALLEL_FORWARD asks for
    # them) runs every chunk at once from stored states
    grad = needs_grad(q, k, v, i, f, *states)
    if not grad and parallel.use_parallel_forward(S, chunk_size, DQK, q.device):
        h, C, n, m = parallel.parallel_forward(q, k, v, i, f, *states, eps, chunk_size, bool(return_last_states))
    else:
        # heads wider than one launch takes: one launch per block of DQK columns each way; calls autograd does not
        # record skip its apply
        fn = ksplit._MLSTMChunkwiseKSplit if DQK > ksplit.K_BLOCK else _MLSTMChunkwiseTriton
        args = (q, k, v, i, f, *states, eps, chunk_size, detach_normalizer, bool(return_last_states))
        h, C, n, m = fn.apply(*args) if grad else forward_only(fn, *args)
    if not return_last_states:
        return h
    return h, pack_states(C, n, m)
