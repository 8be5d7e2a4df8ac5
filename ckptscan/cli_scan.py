"""CLI commands ``scan``, ``rules`` and ``explain`` (registered on :data:`ckptscan.cli.app`)."""
