"""sLSTM kernels. Look them up by name with `xlstm_ts.kernels.get_kernel` (e.g. "slstm--torch").

Modules: `torch_ref` (pure-PyTorch per-step loop, the reference). The math is in README.md.
"""
