"""Numerical kernels shared by the algorithms: small pure functions on tensors."""
