"""mLSTM kernels. Look them up by name with `xlstm_ts.kernels.get_kernel` (e.g. "mlstm_chunkwise--torch").

Modules: `parallel_torch` (quadratic form), `recurrent_torch` (step and step loop), `chunkwise_torch` (CPU
training path), `_common` (pieces shared by the parallel and chunkwise forms). The math is in README.md.
"""
