"""Size bounds every reader obeys before it allocates (bytes, elements, depths).

Memory: every reader refuses, before allocating, any structure whose declared size
exceeds the constants below, and reads tensor values block by block
(:meth:`ckptscan.formats.base.Checkpoint.iter_blocks`). What cannot be sized in advance
(libhdf5 decoding corrupt metadata) is bounded by the memory cap
(:mod:`ckptscan.runtime.memory`).
"""

from __future__ import annotations

#: Default ``--timeout`` (seconds per file) of the read-only commands; 0 disables it.
DEFAULT_TIMEOUT = 300.0

#: Declared-but-unstored dataset bytes refused above this (a "shape bomb": a huge shape
#: over no or tiny storage; Keras always writes every byte of every weight).
MAX_UNBACKED_BYTES = 256 << 20
#: A filtered (compressed) dataset may expand at most this much over its stored bytes
#: once it declares more than :data:`MAX_UNBACKED_BYTES`.
MAX_DATASET_EXPANSION = 1000
#: Largest JSON document read (``config.json``, ``metadata.json``, sharded index).
MAX_JSON_BYTES = 64 << 20
#: Deepest JSON nesting accepted (Python's parser would otherwise hit RecursionError).
MAX_JSON_DEPTH = 200
#: Largest attribute read (elements times item size; vlen strings counted per element).
MAX_ATTR_BYTES = 64 << 20
#: Most elements in one list attribute (``layer_names``, ``weight_names``).
MAX_ATTR_ELEMS = 1 << 20
#: Deepest group nesting walked in an HDF5 file.
MAX_GROUP_DEPTH = 64
#: A compressed zip member may expand at most this much (Keras' own ``_reject_zip_bomb``)
#: once it is larger than :data:`MAX_SMALL_MEMBER`.
MAX_ZIP_EXPANSION = 100
MAX_SMALL_MEMBER = 256 << 20
#: Largest compressed member inflated to a temporary file.
MAX_INFLATED = 64 << 30
