"""TensorFlow tensor bundles (checkpoint ``.index`` + ``.data-*`` shards), read without TensorFlow.

=============  ==========================================================================
module         what it reads
=============  ==========================================================================
``table``      the LevelDB-style ``.index`` table: footer, blocks, restarts, CRC32C, Snappy
``proto``      the few protobuf messages, with a small bounded wire-format decoder
``bundle``     header and entries, shard files, string tensors, partitioned variables
``names``      object-graph and TF1 keys -> tf-keras layer paths, optimizer slots
``crc``        CRC32C (``google-crc32c``, the ``tf`` extra) and TensorFlow's masking
=============  ==========================================================================

:class:`ckptscan.formats.tf.TFCheckpoint` puts them together behind the
:class:`~ckptscan.formats.base.Checkpoint` interface.
"""
