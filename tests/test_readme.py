"""The README's commands work as written (the install steps are what CI itself runs)."""

import re

from conftest import ROOT, run_cli


def _bash_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_readme_quick_start_scan_runs_on_fixtures():
    first = _bash_blocks()[0].strip()
    assert "pip install" in first
    cmd = first.split(".venv/bin/ckptscan ", 1)[1].split()
    out = run_cli(*cmd, cwd=ROOT)
    # the bundled seed_broken files hold errors: exit 1, both files reported, the layer named
    assert out.returncode == 1, out.stderr
    for path in cmd[1:]:
        assert path in out.stdout
    assert "resnet101v2/post_bn/moving_variance" in out.stdout
    assert "Traceback" not in out.stderr


def test_readme_test_command_is_what_ci_runs():
    second = _bash_blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert second in ci
