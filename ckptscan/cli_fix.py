"""CLI command ``fix`` (registered on :data:`ckptscan.cli.app`)."""
