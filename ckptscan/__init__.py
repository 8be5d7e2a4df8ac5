"""ckptscan: find and repair broken tensors in Keras weight archives, statically.

Reads ``.keras``, ``.weights.h5`` (plain or sharded) and legacy ``.h5`` files with
h5py and numpy only; never imports TensorFlow, Keras or JAX.
"""

from __future__ import annotations

__version__ = "0.1.0"

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

from .errors import CkptscanError  # noqa: E402
from .formats import Checkpoint, Variable, open_checkpoint  # noqa: E402
from .patch import fix  # noqa: E402
from .report import FileResult, Finding, Report, Severity  # noqa: E402
from .scan import scan  # noqa: E402  (the function shadows the submodule name on purpose)
