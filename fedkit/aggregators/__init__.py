"""Aggregation kernels: plain functions ``name(updates, weights=None, *, ..., key=None) -> Tensor[d]``."""
