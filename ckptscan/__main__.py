"""``python -m ckptscan`` (``--version`` answers before Typer, numpy or h5py are imported)."""

import sys

from .cli import main

sys.exit(main())
