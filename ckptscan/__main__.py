"""``python -m ckptscan``."""

import sys

if sys.argv[1:] == ["--version"]:  # fast path: no typer, numpy or h5py import
    from . import __version__

    sys.stdout.write(f"ckptscan {__version__}\n")
    sys.exit(0)

from .cli import main  # noqa: E402

sys.exit(main())
