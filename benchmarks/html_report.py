"""What ``--format html`` costs on ResNet101V2 (on demand; never a unit test).

    python benchmarks/inputs.py --out benchmarks/out/inputs --only resnet   # once
    python benchmarks/html_report.py --inputs benchmarks/out/inputs [--repeat 7]

Two files: ``resnet.keras`` as built (random weights: BN statistics 0/1, every layer
healthy) and ``resnet_broken.weights.h5``, a copy of ``resnet.weights.h5`` in which
every BatchNormalization ``moving_variance`` gets one NaN and channel 1 of every
``moving_mean`` is set to 1e6 (the worst case for the report: ~100 flagged layers, the
chart cap of 40 layers reached, up to 2048 channels each). The copy is written with
h5py here, as a benchmark input only (fixtures are written by Keras).

Per file, same run, page-cached, one untimed warm-up, best of ``--repeat``:

* in process: ``scan_file`` + JSON render vs ``scan_file(profile="charts")`` + HTML
  render (the overhead of the report: collecting the profile and writing the page);
* as a process: ``ckptscan scan --format json -o`` vs ``--format html -o`` (wall, peak
  RSS of the child from ``wait4``);
* the page: its size, and the time Chromium takes to open and render it
  (``goto`` until ``load``, then one animation frame, network blocked).

Prints a markdown table (quoted in ``docs/benchmarks.md``) and writes JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

INPROC = r"""
import json, sys, time
from ckptscan.engine import ScanOptions, scan_file
from ckptscan.report import Report
from ckptscan.render import render
path, repeat = sys.argv[1], int(sys.argv[2])
out = {m: {"total": 1e9, "cpu": 1e9, "scan_cpu": 1e9, "render_cpu": 1e9} for m in ("json", "html")}
for _ in range(repeat + 1):          # the first round warms up; json and html alternate
    for mode in ("json", "html"):
        opts = ScanOptions(profile="charts" if mode == "html" else "")
        t0, c0 = time.perf_counter(), time.process_time()
        fr = scan_file(path, opts)
        c1 = time.process_time()
        text = render(Report((fr,)), mode)
        t2, c2 = time.perf_counter(), time.process_time()
        if _ == 0:
            continue
        o = out[mode]
        o["total"] = min(o["total"], t2 - t0)
        o["cpu"] = min(o["cpu"], c2 - c0)
        o["scan_cpu"] = min(o["scan_cpu"], c1 - c0)
        o["render_cpu"] = min(o["render_cpu"], c2 - c1)
        o["chars"] = len(text)
print(json.dumps(out))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"
    return env


def run_child(cmd: list[str]) -> dict:
    """Wall time and peak RSS (wait4) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env())
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc not in (0, 1):
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return {"wall": time.perf_counter() - t0, "cpu": usage.ru_utime + usage.ru_stime,
            "maxrss_mb": usage.ru_maxrss / 1024, "stdout": out.decode()}


def broken_copy(src: Path, dst: Path) -> int:
    """``dst``: ``src`` with a NaN in every BN moving_variance and a 1e6 in every moving_mean."""
    import h5py
    import numpy as np

    if not dst.exists():
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as f:
            names: list[str] = []
            f.visit(names.append)
            for n in names:
                obj = f[n]
                if not isinstance(obj, h5py.Group) or not n.rsplit("/", 1)[-1].startswith("batch_normalization"):
                    continue
                vs = obj.get("vars")
                if isinstance(vs, h5py.Group) and len(vs) == 4:  # gamma, beta, moving_mean, moving_variance
                    var, mean = vs["3"], vs["2"]
                    v = var[...]
                    v[0] = np.nan
                    var[...] = v
                    m = mean[...]
                    m[1] = 1e6
                    mean[...] = m
    with h5py.File(dst, "r") as f:
        count = 0

        def seen(name, obj):
            nonlocal count
            if isinstance(obj, h5py.Dataset) and name.endswith("vars/3") and obj.ndim == 1 and np.isnan(obj[0]):
                count += 1

        f.visititems(seen)
    return count


def browser_time(page_file: Path, repeat: int) -> float:
    """Best time for Chromium to open the page and paint one frame (network blocked)."""
    from playwright.sync_api import sync_playwright

    best = 1e9
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        url = page_file.resolve().as_uri()
        for _ in range(repeat + 1):
            ctx = b.new_context(viewport={"width": 1100, "height": 900})
            page = ctx.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
            t0 = time.perf_counter()
            page.goto(url, wait_until="load")
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
            best = min(best, time.perf_counter() - t0)
            ctx.close()
        b.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=Path, default=Path("benchmarks/out/inputs"))
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    res_dir = args.inputs / "resnet"
    broken = res_dir / "resnet_broken.weights.h5"
    nbroken = broken_copy(res_dir / "resnet.weights.h5", broken)
    files = {"resnet101v2.keras (healthy)": res_dir / "resnet.keras",
             f"resnet101v2 broken ({nbroken} BN layers)": broken}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in files.items():
            inp = json.loads(subprocess.run([PY, "-c", INPROC, str(path), str(args.repeat)], capture_output=True,
                                            text=True, check=True, env=_env()).stdout.strip().splitlines()[-1])
            proc = {}
            for fmt in ("json", "html"):
                out = Path(tmp) / f"r.{fmt}"
                cmd = [PY, "-m", "ckptscan", "scan", str(path), "--format", fmt, "-o", str(out), "--fail-on", "never"]
                run_child(cmd)  # warm-up
                runs = [run_child(cmd) for _ in range(max(3, args.repeat // 2))]
                proc[fmt] = {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
                             "maxrss_mb": max(r["maxrss_mb"] for r in runs),
                             "bytes": out.stat().st_size}
            page = Path(tmp) / "r.html"
            rows[label] = {"inproc": inp, "process": proc, "browser_s": browser_time(page, 3)}
    doc = {"repeat": args.repeat, "cpus": os.cpu_count(), "rows": rows}
    out_json = args.inputs.parent / "html_report.json"
    out_json.write_text(json.dumps(doc, indent=1))
    print("| file | in process: scan + JSON, wall (CPU) | scan + HTML, wall (CPU) | overhead wall (CPU) | "
          "process: `--format json`, wall (CPU) | `--format html`, wall (CPU) | overhead wall (CPU) | "
          "peak RSS json / html | HTML size | Chromium open + render |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def pct(a: float, b: float) -> str:
        return f"{(b / a - 1) * 100:+.0f} %"

    for label, r in rows.items():
        j, h = r["inproc"]["json"], r["inproc"]["html"]
        pj, ph = r["process"]["json"], r["process"]["html"]
        print(f"| {label} | {j['total']:.3f} ({j['cpu']:.3f}) s | {h['total']:.3f} ({h['cpu']:.3f}) s | "
              f"**{pct(j['total'], h['total'])}** ({pct(j['cpu'], h['cpu'])}) | "
              f"{pj['wall']:.3f} ({pj['cpu']:.3f}) s | {ph['wall']:.3f} ({ph['cpu']:.3f}) s | "
              f"**{pct(pj['wall'], ph['wall'])}** ({pct(pj['cpu'], ph['cpu'])}) | "
              f"{pj['maxrss_mb']:.0f} / **{ph['maxrss_mb']:.0f} MB** | {ph['bytes'] / 1e6:.2f} MB | "
              f"**{r['browser_s']:.2f} s** |")
    print("\nIn process, CPU seconds, best of the rounds: scan / render (JSON) vs scan with profile / render (HTML)")
    for label, r in rows.items():
        j, h = r["inproc"]["json"], r["inproc"]["html"]
        added = (h["scan_cpu"] - j["scan_cpu"]) + (h["render_cpu"] - j["render_cpu"])
        print(f"- {label}: {j['scan_cpu']:.3f} / {j['render_cpu']:.4f} vs {h['scan_cpu']:.3f} / {h['render_cpu']:.4f}: "
              f"the report adds {added * 1000:.0f} ms = {added / (j['scan_cpu'] + j['render_cpu']) * 100:+.1f} %")
    print(f"\n(JSON: {out_json})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
