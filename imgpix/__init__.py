"""imgpix: image-level to pixel-wise labeling (IJCAI-18), reference implementation.

Submodules load on first use, so ``import imgpix.theory`` (numpy only) and the CLI's help never import torch.
"""

from importlib import import_module

__all__ = ["fuse", "fuse_log", "information", "labels", "metrics", "theory"]
__version__ = "0.1.0"
_FUNCTIONS = {"fuse": "fusion", "fuse_log": "fusion"}


def __getattr__(name: str):
    if name in _FUNCTIONS:
        return getattr(import_module(f".{_FUNCTIONS[name]}", __name__), name)
    if name in __all__:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
