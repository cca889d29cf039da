"""Reproduce He et al. 2015, "Deep Residual Learning for Image Recognition", on CIFAR."""

__version__ = "0.1.0"

__all__ = ["load_run"]


def __getattr__(name: str):
    """`from resnet_cifar import load_run` without importing torch and the data code for every submodule."""
    if name == "load_run":
        from .saved_run import load_run

        return load_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
