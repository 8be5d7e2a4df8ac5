"""``ckptscan fix`` takes a TensorFlow checkpoint by its prefix, as ``scan`` does.

It used to answer "no such file or directory" for ``…/model.ckpt`` (only ``.index`` and
the folder worked), because the prefix is no file of its own.
"""

from __future__ import annotations

import shutil

import ckptscan
from conftest import FIXTURES
from ckptscan.cli import main


def test_fix_by_prefix_repairs_the_index_it_names(tmp_path, capsys):
    d = tmp_path / "tf1"
    shutil.copytree(FIXTURES / "tfckpt" / "tf1", d)
    prefix = d / "model.ckpt"
    assert "BN001" in {f.rule_id for f in ckptscan.scan(prefix).files[0].findings}
    assert main(["fix", str(prefix)]) == 0
    assert "fixed in-place, 1 change(s)" in capsys.readouterr().out
    assert "BN001" not in {f.rule_id for f in ckptscan.scan(prefix).files[0].findings}
    assert (d / "model.ckpt.index").read_bytes() != (FIXTURES / "tfckpt" / "tf1" / "model.ckpt.index").read_bytes()
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in (FIXTURES / "tfckpt" / "tf1").iterdir())


def test_fix_of_a_missing_name_still_fails(tmp_path, capsys):
    assert main(["fix", str(tmp_path / "model.ckpt")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
