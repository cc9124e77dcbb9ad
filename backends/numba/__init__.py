"""The Numba backend: float and integer kernels, memory planning and a generated driver."""
