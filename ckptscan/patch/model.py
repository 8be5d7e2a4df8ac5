"""The records of a repair: what to change (:class:`Change`, :class:`PatchPlan`) and
what was done (:class:`ChangeRecord`, :class:`FileFix`, :class:`FixManifest`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..formats.base import Variable

#: Version of the JSON patch manifest (``ckptscan fix --manifest``).
MANIFEST_VERSION = 1


@dataclass(frozen=True, eq=False)
class Change:
    """New values for some elements (or all) of one stored tensor."""

    variable: Variable
    indices: tuple[int, ...] | None
    """Flat (C-order) element indices, channels for 1-D tensors; None = whole tensor."""
    new_values: np.ndarray
    """The values to store, one per index (or the whole tensor, flattened)."""
    old_values: np.ndarray
    """The values found, same length as :attr:`new_values`."""
    reason: str = ""
    """Why (rule ID and message, or a free text)."""
    strategy: str = "explicit"
    """``reset``, ``median``, ``clamp``, ``from``, ``value`` or ``explicit``."""
    note: str = ""
    """Caveat shown with the change (``stop-gap: …``)."""

    @property
    def count(self) -> int:
        """Number of elements written."""
        return int(np.asarray(self.new_values).size)


@dataclass(frozen=True, eq=False)
class PatchPlan:
    """Every change to make to one checkpoint (file, folder or sharded index)."""

    file: str
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class ChangeRecord:
    """One change as recorded in the manifest (JSON-ready values)."""

    layer_path: str
    variable: str
    dtype: str
    shape: tuple[int, ...]
    strategy: str
    indices: tuple[int, ...] | None
    """Flat indices changed; None when the whole tensor was written."""
    old: tuple[float | str, ...]
    new: tuple[float | str, ...]
    reason: str = ""
    note: str = ""
    file: str = ""
    """Physical file written (the archive, the member's host, or a shard)."""


@dataclass(frozen=True)
class FileFix:
    """The outcome of ``fix`` for one input path."""

    path: str
    status: str
    """``fixed``, ``unchanged`` (nothing to fix), ``planned`` (dry run), ``refused``,
    ``unfixed`` (targets left without a repair) or ``failed`` (unreadable / error)."""
    reason: str = ""
    format: str = ""
    mode: str = ""
    """``in-place``, ``rewrite`` (atomic full rewrite) or ``copy`` (``--output``)."""
    output: str = ""
    """Where the patched bytes are (the input itself unless ``--output``)."""
    backup: str = ""
    sha256_before: dict = field(default_factory=dict, hash=False, compare=False)
    """Physical file → sha256 before (empty when not computed)."""
    sha256_after: dict = field(default_factory=dict, hash=False, compare=False)
    changes: tuple[ChangeRecord, ...] = ()
    unfixed: tuple[str, ...] = ()
    """Targets left as they were, each ``layer/variable: why``."""
    notes: tuple[str, ...] = ()
    verified: str = ""
    """``full`` (every tensor compared), ``targets`` or empty (nothing written)."""

    @property
    def ok(self) -> bool:
        """True when nothing is left to do for this file."""
        return self.status in ("fixed", "unchanged", "planned") and not self.unfixed


@dataclass(frozen=True)
class FixManifest:
    """What ``ckptscan fix`` did to every file (the ``--manifest`` JSON document)."""

    files: tuple[FileFix, ...] = ()
    dry_run: bool = False

    def count(self, status: str) -> int:
        """Number of files with ``status``."""
        return sum(1 for f in self.files if f.status == status)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"manifest_version": MANIFEST_VERSION, "dry_run": self.dry_run,
                "files": [asdict(f) for f in self.files]}


def json_number(x: float) -> float | str:
    """A float for JSON: NaN/Inf become the strings ``nan``, ``inf``, ``-inf``."""
    x = float(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x
