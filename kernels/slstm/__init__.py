"""sLSTM kernels. Look them up by name with `xlstm_ts.kernels.get_kernel` (e.g. "slstm--torch").

Modules: `torch_ref` (pure-PyTorch per-step loop, the reference), `torch_loop` (the same function with a
hand-written backward, the CPU training path), `triton_slstm` (fused Triton kernels). The math is in README.md.
"""
