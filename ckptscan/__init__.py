"""ckptscan: find and repair broken tensors in Keras weight archives, statically.

Reads ``.keras``, ``.weights.h5`` (plain or sharded) and legacy ``.h5`` files with
h5py and numpy only; never imports TensorFlow, Keras or JAX.

The public names below are imported on first use (PEP 562), so ``import ckptscan``
and ``ckptscan --version`` do not pay for numpy, h5py and the rule engine.
"""

import importlib as _importlib

from ._version import __version__

__all__ = [
    "CkptscanError",
    "Checkpoint",
    "FileResult",
    "Finding",
    "Report",
    "Severity",
    "Variable",
    "fix",
    "open_checkpoint",
    "scan",
    "__version__",
]

#: public name -> submodule that defines it
_LAZY = {
    "CkptscanError": ".errors",
    "Checkpoint": ".formats",
    "Variable": ".formats",
    "open_checkpoint": ".formats",
    "fix": ".patch",
    "scan": ".bulk",
    "FileResult": ".report",
    "Finding": ".report",
    "Report": ".report",
    "Severity": ".report",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
