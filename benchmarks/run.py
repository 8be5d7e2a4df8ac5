"""Run the ckptscan benchmarks (on demand; never part of the unit tests).

    python benchmarks/run.py --out benchmarks/out [--quick] [--repeat N]
                             [--tf-python /path/to/python-with-tensorflow]

1. Builds the inputs at run time into ``OUT/inputs`` (``benchmarks/inputs.py``, under
   Keras 3 + JAX; reused when present): ResNet101V2 as ``.keras``, ``.weights.h5``
   and legacy ``.h5``; a 2 GB model with a 1 GiB embedding; 1,000 small ``.keras``.
2. For every case, in the same run and on page-cached files (one untimed warm-up):
   - ``floor``: one Python process that reads every dataset (h5py) and reduces it
     with ``np.isfinite`` (``benchmarks/floor.py``), nothing else;
   - ``ckptscan.scan`` in process, and the ``ckptscan scan`` command as a process;
   - the reader alone (``iter_blocks`` + ``np.isfinite``), to separate reading from
     statistics and rules;
   - the seed's method (TensorFlow: ``load_model`` + ``check_numerics`` on every
     weight) when ``--tf-python`` points at a Python with TensorFlow and tf-keras.
3. Peak RSS (``ru_maxrss`` of the child, via ``wait4``) of ``ckptscan scan`` and of
   the floor on the 2 GB files; ``ckptscan --version`` start-up; ``--jobs 2`` vs
   ``--jobs 1`` on the 1,000 files (when ``scan`` has ``--jobs``).

Writes ``OUT/results.json`` and ``OUT/results.md`` (the tables quoted in
``docs/benchmarks.md``). Times are the minimum over ``--repeat`` runs (wall clock
and CPU = user + system); GB/s is tensor bytes / wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def _env() -> dict:
    """The children's environment: what a user's shell gives, whatever this one sets.

    ``PYTHONSAFEPATH``: ``python -m ckptscan`` imports the installed package, never a
    checkout that happens to be the working directory. No ``PYTHONDONTWRITEBYTECODE``:
    the warm-up run caches bytecode, as ``pip install`` does for a real install
    (without it every start of an editable install compiles ckptscan again, ~40 ms).
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONSAFEPATH"] = "1"
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_child(cmd: list[str], env: dict | None = None, stdout=subprocess.PIPE) -> dict:
    """Run ``cmd``; its wall time, CPU time and peak RSS (wait4 rusage of that child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env or _env())
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": cmd, "rc": proc.returncode, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024, "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")[-2000:],
    }


def best_of(cmd: list[str], repeat: int, ok_codes=(0, 1)) -> dict:
    """Warm up once, then the best (minimum) wall and CPU time over ``repeat`` runs."""
    warm = run_child(cmd)
    if warm["rc"] not in ok_codes:
        raise SystemExit(f"command failed ({warm['rc']}): {' '.join(cmd)}\n{warm['stderr']}")
    runs = [run_child(cmd) for _ in range(repeat)]
    return {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
            "walls": [r["wall"] for r in runs], "maxrss_mb": max(r["maxrss_mb"] for r in runs), "rc": runs[-1]["rc"]}


def inproc(mode: str, paths: list[str], repeat: int) -> dict:
    res = run_child([PY, str(HERE / "_inproc.py"), mode, str(repeat), *paths])
    if res["rc"] != 0:
        raise SystemExit(f"_inproc {mode} failed:\n{res['stderr']}")
    doc = json.loads(res["stdout"].strip().splitlines()[-1])
    return {"wall": min(doc["wall"]), "cpu": min(doc["cpu"]), "walls": doc["wall"], "bytes": doc["bytes"],
            "check": doc["check"], "maxrss_mb": res["maxrss_mb"]}


def scan_cmd(paths: list[str], *extra: str) -> list[str]:
    return [PY, "-m", "ckptscan", "scan", *paths, "--format", "json", "--output", os.devnull,
            "--fail-on", "never", *extra]


def has_jobs() -> bool:
    out = run_child([PY, "-m", "ckptscan", "scan", "--help"])
    return "--jobs" in out["stdout"]


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import h5py
        import numpy

        info.update(numpy=numpy.__version__, h5py=h5py.__version__, hdf5=h5py.version.hdf5_version)
    except ImportError:  # pragma: no cover
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "L2 cache", "L3 cache"):
                info[key.strip()] = val.strip()
    except OSError:  # pragma: no cover
        pass
    try:
        with open("/proc/meminfo") as fh:
            info["MemTotal"] = fh.readline().split(":")[1].strip()
    except OSError:  # pragma: no cover
        pass
    info["load_average_at_start"] = os.getloadavg()
    return info


def _gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def bench_files(label: str, paths: list[str], repeat: int, results: dict, rss: bool = False) -> None:
    print(f"[{label}] floor / reader / scan ...", file=sys.stderr)
    load_before = os.getloadavg()
    floor = inproc("floor", paths, repeat)
    blocks = inproc("blocks", paths, repeat)
    scan = inproc("scan", paths, repeat)
    parts = {m: inproc(m, paths, repeat) for m in ("open", "read", "counts", "stats")}
    floor_proc = best_of([PY, str(HERE / "floor.py"), *paths], repeat)
    cli = best_of(scan_cmd(paths), repeat)
    nbytes = floor["bytes"]
    row = {
        "files": len(paths), "bytes": nbytes,
        "floor": floor, "reader": blocks, "scan": scan, "floor_process": floor_proc, "scan_process": cli,
        "breakdown": parts, "load_average": {"before": load_before, "after": os.getloadavg()},
        "ratio_wall": scan["wall"] / floor["wall"], "ratio_cpu": scan["cpu"] / floor["cpu"],
        "ratio_process_wall": cli["wall"] / floor_proc["wall"], "ratio_process_cpu": cli["cpu"] / floor_proc["cpu"],
        "gbps": {k: _gbps(nbytes, v["wall"]) for k, v in
                 {"floor": floor, "reader": blocks, "scan": scan, "floor_process": floor_proc, "scan_process": cli,
                  "read_only": parts["read"], "counts_only": parts["counts"], "stats_only": parts["stats"]}.items()},
    }
    if rss:
        row["peak_rss_mb"] = {"scan_process": cli["maxrss_mb"], "floor_process": floor_proc["maxrss_mb"]}
    results["cases"][label] = row


def bench_seed(tf_python: str, src_h5: str, out: Path, repeat: int, results: dict) -> str | None:
    """Convert the Keras 3 legacy .h5 for tf-keras once, then time the seed's method."""
    conv = out / "tf_resnet.h5"
    if not conv.exists():
        r = run_child([tf_python, str(HERE / "seed_method.py"), "convert", src_h5, str(conv)])
        if r["rc"] != 0:
            results["seed"] = {"error": r["stderr"][-500:]}
            return None
    runs = []
    for _ in range(repeat):
        r = run_child([tf_python, str(HERE / "seed_method.py"), "check", str(conv), "--json"])
        if r["rc"] != 0:
            results["seed"] = {"error": r["stderr"][-500:]}
            return None
        doc = json.loads(r["stdout"].strip().splitlines()[-1])
        doc["process_wall"], doc["process_cpu"], doc["maxrss_mb"] = r["wall"], r["cpu"], r["maxrss_mb"]
        runs.append(doc)
    best = min(runs, key=lambda d: d["process_wall"])
    best["runs"] = [d["process_wall"] for d in runs]
    results["seed"] = best
    return str(conv)


def render(results: dict) -> str:
    lines = ["| case | files | MB | floor s (CPU) | reader s (CPU) | scan s (CPU) | scan/floor wall (CPU) | "
             "floor proc s | `ckptscan scan` proc s | proc ratio wall (CPU) | scan GB/s | floor GB/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in results["cases"].items():
        lines.append(
            f"| {label} | {r['files']} | {r['bytes'] / 1e6:.0f} | {r['floor']['wall']:.3f} ({r['floor']['cpu']:.3f}) | "
            f"{r['reader']['wall']:.3f} ({r['reader']['cpu']:.3f}) | {r['scan']['wall']:.3f} ({r['scan']['cpu']:.3f}) | "
            f"{r['ratio_wall']:.2f}× ({r['ratio_cpu']:.2f}×) | {r['floor_process']['wall']:.3f} | "
            f"{r['scan_process']['wall']:.3f} | {r['ratio_process_wall']:.2f}× ({r['ratio_process_cpu']:.2f}×) | "
            f"{r['gbps']['scan']:.2f} | {r['gbps']['floor']:.2f} |"
        )
    out = [f"Run {results.get('started', '?')} → {results.get('finished', '?')}; load average (1 min) at start "
           f"{results['machine'].get('load_average_at_start', ['?'])[0]}, at end "
           f"{(results.get('load_average_at_end') or ['?'])[0]}.", "\n".join(lines)]
    bl = ["| case | open_checkpoint s (CPU) | read only s (CPU) | read GB/s | read + counts s (CPU) | counts GB/s "
          "| read + full stats s (CPU) | full stats GB/s | load avg before → after |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, r in results["cases"].items():
        b = r.get("breakdown")
        if b:
            la = r.get("load_average", {})
            load = f"{la['before'][0]:.1f} → {la['after'][0]:.1f}" if la else "—"
            counts = (f"{b['counts']['wall']:.3f} ({b['counts']['cpu']:.3f}) | {r['gbps']['counts_only']:.1f}"
                      if "counts" in b else "— | —")
            bl.append(f"| {label} | {b['open']['wall']:.3f} ({b['open']['cpu']:.3f}) | {b['read']['wall']:.3f} "
                      f"({b['read']['cpu']:.3f}) | {r['gbps']['read_only']:.1f} | {counts} | {b['stats']['wall']:.3f} "
                      f"({b['stats']['cpu']:.3f}) | {r['gbps']['stats_only']:.1f} | {load} |")
    out.append("\n".join(bl))
    rss = {k: v["peak_rss_mb"] for k, v in results["cases"].items() if "peak_rss_mb" in v}
    if rss:
        out.append("\n".join(["| peak RSS (MB) | `ckptscan scan` | floor |", "|---|---:|---:|"]
                             + [f"| {k} | {v['scan_process']:.0f} | {v['floor_process']:.0f} |" for k, v in rss.items()]))
    seed = results.get("seed")
    if seed and "error" not in seed:
        out.append(
            f"Seed's method on `{seed['file']}` ({seed['bytes'] / 1e6:.0f} MB, {seed['weights']} weights): process "
            f"{seed['process_wall']:.2f} s wall (import TF {seed['import_s']:.2f} s, load_model {seed['load_s']:.2f} s, "
            f"check_numerics {seed['check_s']:.2f} s); `ckptscan scan` on the same file {seed['scan_process_wall']:.3f} s "
            f"→ **{seed['speedup_process']:.0f}×** faster (in process: load+check {seed['load_s'] + seed['check_s']:.2f} s vs "
            f"scan {seed['scan_inproc_wall']:.3f} s → {seed['speedup_inproc']:.0f}×)."
        )
        floor_row = results["cases"].get("resnet101v2 (tf-keras .h5)", {}).get("floor_process")
        if floor_row:
            out.append(
                f"Bound: the floor *process* on the same file takes {floor_row['wall']:.3f} s wall "
                f"({floor_row['cpu']:.3f} s CPU), only {seed['process_wall'] / floor_row['wall']:.1f}× faster than the "
                f"seed's process ({seed['process_cpu'] / floor_row['cpu']:.1f}× in CPU): a per-process speed-up of 30× "
                f"needs a process {seed['process_wall'] / 30:.3f} s long, below what the floor reaches."
            )
    elif seed:
        out.append(f"Seed's method: not run ({seed['error'].strip().splitlines()[-1] if seed['error'].strip() else 'error'}).")
    v = results.get("version")
    if v:
        out.append(f"`python -m ckptscan --version`: {v['python_m']['wall']:.3f} s wall ({v['python_m']['cpu']:.3f} s CPU); "
                   f"`ckptscan --version` (console script): {v['script']['wall']:.3f} s wall ({v['script']['cpu']:.3f} s CPU); "
                   f"`python -c pass`: {v['bare']['wall']:.3f} s.")
    j = results.get("jobs")
    if j:
        if "note" in j:
            out.append(f"--jobs: {j['note']}")
        else:
            out.append(f"{j['files']} files: `--jobs 1` {j['jobs1']['wall']:.2f} s, `--jobs 2` {j['jobs2']['wall']:.2f} s "
                       f"→ {j['speedup']:.2f}× ({j['via']}).")
    return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ckptscan benchmarks")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--quick", action="store_true", help="tiny inputs, one repeat (for tests)")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--tf-python", default=os.environ.get("CKPTSCAN_TF_PYTHON"),
                    help="a Python with tensorflow + tf_keras for the seed's method")
    ap.add_argument("--skip", action="append", default=[], choices=["resnet", "big", "many", "seed", "version", "jobs"])
    ap.add_argument("--resnet-ext", action="append", choices=[".keras", ".weights.h5", ".h5"],
                    help="only these ResNet101V2 formats (default: all three)")
    args = ap.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 5)
    out: Path = args.out
    inputs = out / "inputs"
    out.mkdir(parents=True, exist_ok=True)
    build = [PY, str(HERE / "inputs.py"), "--out", str(inputs)] + (["--quick"] if args.quick else [])
    for case in ("resnet", "big", "many"):
        if case not in args.skip:
            build += ["--only", case]
    r = run_child(build)
    if r["rc"] != 0:
        raise SystemExit(f"building inputs failed:\n{r['stderr']}")
    manifest = json.loads((inputs / "manifest.json").read_text())
    if bool(manifest.get("quick")) != args.quick:
        raise SystemExit(f"{inputs} holds {'quick' if manifest.get('quick') else 'full'} inputs; use another --out")
    results: dict = {"machine": machine(), "quick": args.quick, "repeat": repeat, "cases": {}}
    results["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())

    if "resnet" not in args.skip:
        for ext in args.resnet_ext or (".keras", ".weights.h5", ".h5"):
            bench_files(f"resnet101v2{ext}", [manifest["resnet"][ext]], repeat, results)
    if "seed" not in args.skip and args.tf_python and not args.quick and "resnet" not in args.skip:
        conv = bench_seed(args.tf_python, manifest["resnet"][".h5"], inputs / "resnet", min(repeat, 3), results)
        if conv:
            bench_files("resnet101v2 (tf-keras .h5)", [conv], repeat, results)
            seed = results["seed"]
            row = results["cases"]["resnet101v2 (tf-keras .h5)"]
            seed.update(file="tf_resnet.h5", scan_process_wall=row["scan_process"]["wall"],
                        scan_inproc_wall=row["scan"]["wall"],
                        speedup_process=seed["process_wall"] / row["scan_process"]["wall"],
                        speedup_inproc=(seed["load_s"] + seed["check_s"]) / row["scan"]["wall"])
    elif "seed" not in args.skip and not args.quick:
        results["seed"] = {"error": "no --tf-python given (TensorFlow is not a ckptscan dependency)"}
    if "big" not in args.skip:
        big_repeat = max(1, min(repeat, 2))
        for ext in (".keras", ".weights.h5"):
            bench_files(f"2 GB{ext}", [manifest["big"][ext]], big_repeat, results, rss=True)
    if "many" not in args.skip:
        files = manifest["many"]["files"]
        bench_files(f"{len(files)} small .keras", files, 1, results)
        if "jobs" not in args.skip:
            if has_jobs():
                j1 = best_of(scan_cmd([manifest["many"]["dir"]], "--jobs", "1"), max(1, min(repeat, 2)))
                j2 = best_of(scan_cmd([manifest["many"]["dir"]], "--jobs", "2"), max(1, min(repeat, 2)))
                results["jobs"] = {"files": len(files), "jobs1": j1, "jobs2": j2, "speedup": j1["wall"] / j2["wall"],
                                   "via": "`ckptscan scan DIR --jobs N`, process wall"}
            else:
                results["jobs"] = {"note": "`ckptscan scan` has no --jobs option in this build; not measured"}
    if "version" not in args.skip:
        n = max(repeat, 5)
        script = shutil.which("ckptscan", path=str(Path(PY).parent)) or "ckptscan"
        results["version"] = {
            "python_m": best_of([PY, "-m", "ckptscan", "--version"], n),
            "script": best_of([script, "--version"], n),
            "bare": best_of([PY, "-c", "pass"], n),
        }
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results["load_average_at_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    md = render(results)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
