"""Fused Triton update kernels, installed as ``scaled_decay.kernels``.

Each kernel sits beside a launcher with the pure-torch reference's signature.
"""
