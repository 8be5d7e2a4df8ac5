"""Integrity rules: the stored bytes against the checksum the format keeps for them."""

from __future__ import annotations

from typing import Iterator

from ..report import Severity
from .base import Hit, ModelContext, Scope, rule


@rule(
    "INT001",
    "checksum-mismatch",
    Severity.ERROR,
    Scope.MODEL,
    "{path}: stored bytes do not match their checksum ({reason}); the tensor is corrupted on disk",
    "Restore the file from a backup or an earlier checkpoint; TensorFlow refuses to restore it as it is.",
)
def checksum_mismatch(ctx: ModelContext) -> Iterator[Hit]:
    """A tensor's stored bytes do not match the checksum its file records for them.

    ## What it does
    TensorFlow checkpoints record a masked CRC32C of every tensor's bytes in the
    ``.index`` file. While the scan streams a tensor from its data shard it computes the
    CRC32C of the bytes it reads and compares it with the recorded one; each tensor that
    differs is one finding, named by layer and variable.

    ## Why is this bad?
    The bytes changed after TensorFlow wrote them: a bit flip on disk or in transit, a
    partial copy, an edit by a tool that did not update the index. TensorFlow's own
    ``restore``/``load_weights`` refuse the whole checkpoint ("Checksum does not match"),
    so a training job cannot resume from it, and the values the scan saw may be wrong
    even when they are finite.

    ## Example
    ``resnet101v2/conv1_conv/kernel: stored bytes do not match their checksum``

    ## Fix
    Copy the checkpoint again from its source, or go back to an earlier checkpoint.

    ## Known problems
    Only tensors the scan reads are verified: float tensors (integer and string tensors,
    e.g. ``iterations``, are not read). Formats without per-tensor checksums (HDF5) never
    raise it.
    """
    for var, reason in ctx.integrity_failures:
        yield Hit(var.layer_path, var.name, {"path": var.path, "reason": reason},
                  (), var.size, {"key": var.h5path, "file": var.file})
