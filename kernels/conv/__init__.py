"""Depthwise causal convolution over time (the conv branch of the xLSTM blocks), with an optional SiLU after it."""
