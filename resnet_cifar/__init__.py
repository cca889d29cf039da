"""Reproduce He et al. 2015, "Deep Residual Learning for Image Recognition", on CIFAR."""

__version__ = "0.1.0"
