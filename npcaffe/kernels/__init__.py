"""Compute kernels: Numba-jitted with a plain NumPy reference beside each. No protobuf here."""
