"""What bounds a run: size bounds, the memory cap, the per-file timeout, the processes that watch it.

Modules (lowest layer above :mod:`ckptscan.errors`; they import nothing else of ckptscan):

- :mod:`.bounds`: the size bounds every reader obeys before it allocates.
- :mod:`.memory`: the memory cap (``--max-memory``) and recovery after a file hit it.
- :mod:`.timeout`: the per-file ``--timeout`` (:func:`~.timeout.file_timeout`) and the
  scope of the work on one file (:func:`~.timeout.file_scope`).
- :mod:`.watchdog`: the hard stop of a process stuck in one C call.
- :mod:`.supervisor`: the CLI's supervisor process.
- :mod:`.executor`: in-process, process-pool and dask execution of per-file work.
"""
