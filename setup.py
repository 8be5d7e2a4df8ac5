"""Builds the screening pass's optional C loop (ckptscan/formats/tfbundle/_screen.c).

Everything else about the package is in pyproject.toml. The extension is optional: where
no C compiler is found (or on Windows, which it is not written for) the build goes on
without it and ckptscan screens TensorFlow checkpoints in Python, with the same results
(docs/benchmarks.md, issue 14).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.name == "posix":
    ext_modules.append(Extension(
        "ckptscan.formats.tfbundle._screen",
        ["ckptscan/formats/tfbundle/_screen.c"],
        extra_compile_args=["-O3"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
