"""Bytes fetched by ``inspect`` and ``scan`` of a large ``.keras`` over remote URIs.

Starts the servers of the remote tests on 127.0.0.1 (tests/servers.py): Debian's nginx
(``http://``), moto's S3 server (``s3://``), gcp-storage-emulator (``gs://``), Azurite
(``az://``) and the minimal Hub endpoint (``hf://``), whichever are installed; then runs
the CLI (``python -m ckptscan inspect|scan URI``, a fresh process each time) with
``CKPTSCAN_REMOTE_STATS=1`` and records, per server and command: bytes fetched (the
client's count), bytes sent (the server's count, where the server reports one: nginx's
access log ``$body_bytes_sent``, the Hub endpoint's own count), the fraction of the file,
requests and wall time, next to the same command on the local file.

    flock /work/notes/bench.lock python benchmarks/remote.py            # ResNet101V2 .keras, ~180 MB
    python benchmarks/remote.py --quick --out /tmp/r                    # tiny input, for the tests

The input is ``benchmarks/out/inputs/resnet/resnet.keras`` (built by benchmarks/inputs.py
with Keras 3 if missing) or ``--input``. Writes ``remote.json`` and ``remote.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

STATS = re.compile(r"ckptscan: remote: (\S+): fetched (\d+) of (\d+) bytes \([\d.]+%\) in (\d+) requests")
ALL = ("nginx", "s3", "gcs", "az", "hf")


def run_cli(args: list[str], env: dict[str, str]) -> dict:
    """One CLI run: wall time, exit code, and the summed remote stats it printed."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "ckptscan", *args], capture_output=True, text=True, env=env,
                       timeout=1800, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 1):
        raise RuntimeError(f"ckptscan {' '.join(args)} exited {p.returncode}: {p.stderr[-2000:]}")
    fetched = requests = 0
    for m in STATS.finditer(p.stderr):
        fetched += int(m[2])
        requests += int(m[4])
    return {"wall": wall, "code": p.returncode, "fetched": fetched, "requests": requests}


class Server:
    """A started server: ``uri`` of the input on it, ``env`` for the CLI, ``sent()`` the server's byte count."""

    name = ""
    uri = ""
    env: dict[str, str] = {}

    def sent(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def start_nginx(path: Path, tmp: Path) -> Server:
    from servers import Nginx

    root = tmp / "www"
    root.mkdir()
    (root / path.name).symlink_to(path.resolve())
    ng = Nginx(root, tmp / "nginx")
    s = Server()
    s.name, s.uri, s.env = "nginx (http://)", f"{ng.url}/{path.name}", {}
    s.sent = lambda: ng.settled()[0]  # type: ignore[method-assign]
    s.close = ng.close  # type: ignore[method-assign]
    return s


def start_s3(path: Path, tmp: Path) -> Server:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=env["AWS_ENDPOINT_URL_S3"], skip_instance_cache=True)
    fs.mkdir("bench")
    fs.put_file(str(path), f"bench/{path.name}")
    s = Server()
    s.name, s.uri, s.env = "moto (s3://)", f"s3://bench/{path.name}", env
    s.close = srv.stop  # type: ignore[method-assign]
    return s


def _subprocess_put(env: dict[str, str], src: Path, dest: str, mkdir: str | None = None) -> None:
    """Upload through fsspec in a child process that sees only ``env`` (gcsfs reads it at import)."""
    code = ("import fsspec, sys\nfs, p = fsspec.core.url_to_fs(sys.argv[2])\n"
            "if sys.argv[3]: fs.mkdir(sys.argv[3])\nfs.put_file(sys.argv[1], p)\n")
    subprocess.run([sys.executable, "-c", code, str(src), dest, mkdir or ""], env=env, check=True, timeout=900,
                   stdin=subprocess.DEVNULL)


def start_gcs(path: Path, tmp: Path) -> Server:
    from servers import GcsEmulator

    g = GcsEmulator(bucket="bench")
    env = {**os.environ, **g.env}
    _subprocess_put(env, path, f"gs://bench/{path.name}")
    s = Server()
    s.name, s.uri, s.env = "gcp-storage-emulator (gs://)", f"gs://bench/{path.name}", g.env
    s.close = g.close  # type: ignore[method-assign]
    return s


def start_az(path: Path, tmp: Path) -> Server:
    from servers import Azurite

    a = Azurite(tmp / "azurite")
    env = {**os.environ, **a.env}
    _subprocess_put(env, path, f"az://bench/{path.name}", mkdir="bench")
    s = Server()
    s.name, s.uri, s.env = "Azurite (az://)", f"az://bench/{path.name}", a.env
    s.close = a.close  # type: ignore[method-assign]
    return s


def start_hf(path: Path, tmp: Path) -> Server:
    from servers import HfHub

    root = tmp / "hubrepo"
    root.mkdir()
    (root / path.name).symlink_to(path.resolve())
    h = HfHub(root, repo="bench/model")
    s = Server()
    s.name, s.uri = "Hub endpoint (hf://)", f"hf://bench/model/{path.name}"
    s.env = {**h.env, "HF_HOME": str(tmp / "hfhome")}

    def sent() -> int:
        time.sleep(0.05)  # the handler counts after writing
        return h.bytes_sent()

    s.sent = sent  # type: ignore[method-assign]
    s.close = h.close  # type: ignore[method-assign]
    return s


STARTERS = {"nginx": start_nginx, "s3": start_s3, "gcs": start_gcs, "az": start_az, "hf": start_hf}


def available(name: str) -> str | None:
    """None when the server can run here, else why not."""
    import importlib.util

    from servers import azurite_binary, nginx_binary

    need = {"nginx": [], "s3": ["moto", "s3fs"], "gcs": ["gcsfs", "gcp_storage_emulator"], "az": ["adlfs"],
            "hf": ["huggingface_hub"]}[name]
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if name == "nginx" and nginx_binary() is None:
        missing.append("nginx")
    if name == "az" and azurite_binary() is None:
        missing.append("azurite")
    return ", ".join(missing) or None


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "GOOGLE_", "HF_", "FSSPEC_",
                                                                      "STORAGE_EMULATOR", "GCSFS_"))}
    env.update(extra)
    env["CKPTSCAN_REMOTE_STATS"] = "1"
    return env


def measure(target: str, env: dict[str, str], size: int, repeat: int, sent=None) -> dict:
    rows = {}
    for cmd in ("inspect", "scan"):
        runs = []
        for _ in range(repeat):
            before = sent() if sent else None
            r = run_cli([cmd, target] if cmd == "inspect" else [cmd, "--format", "json", target], env)
            if sent:
                r["sent"] = sent() - before
            runs.append(r)
        best = min(runs, key=lambda r: r["wall"])
        row = {"wall_s": round(statistics.median(r["wall"] for r in runs), 3), "wall_min_s": round(best["wall"], 3),
               "fetched": best["fetched"], "requests": best["requests"], "fraction": round(best["fetched"] / size, 4),
               "code": best["code"]}
        if sent:
            row["sent"] = best["sent"]
            row["sent_fraction"] = round(best["sent"] / size, 4)
        rows[cmd] = row
    return rows


def table(res: dict) -> str:
    size = res["size"]
    lines = [f"Input: `{res['input']}`, {size:,} bytes ({size / 1e6:.1f} MB); {res['repeat']} run(s) each, "
             f"median wall time of a fresh `python -m ckptscan` process (includes ~1 s of interpreter and import start-up).",
             "",
             "| server | command | bytes fetched (client) | bytes sent (server) | of the file | requests | wall s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in res["servers"].items():
        if "skipped" in row:
            lines.append(f"| {name} | — | skipped: {row['skipped']} | | | | |")
            continue
        for cmd in ("inspect", "scan"):
            r = row[cmd]
            sent = f"{r['sent']:,}" if "sent" in r else "—"
            frac = f"{100 * r['fraction']:.2f} %" if r["fraction"] < 0.5 else f"{r['fraction']:.3f} ×"
            lines.append(f"| {name} | `{cmd}` | {r['fetched']:,} | {sent} | {frac} | {r['requests']} | {r['wall_s']:.2f} |")
    for cmd in ("inspect", "scan"):
        lines.append(f"| local file | `{cmd}` | — | — | — | — | {res['local'][cmd]['wall_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "remote")
    ap.add_argument("--input", type=Path, help="a .keras to measure (default: the ResNet101V2 of benchmarks/inputs.py)")
    ap.add_argument("--quick", action="store_true", help="tiny input, one run each (for the tests)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--servers", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--require", action="store_true", help="fail when a listed server is not installed")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    repeat = 1 if a.quick else a.repeat
    with tempfile.TemporaryDirectory(prefix="ckptscan-remote-bench-") as tmpd:
        tmp = Path(tmpd)
        if a.input:
            path = a.input
        else:
            from inputs import build_resnet

            base = (tmp / "inputs") if a.quick else (ROOT / "benchmarks" / "out" / "inputs")
            path = Path(build_resnet(base / "resnet", a.quick)[".keras"])
        size = path.stat().st_size
        res = {"input": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name, "size": size,
               "repeat": repeat, "quick": a.quick, "python": platform.python_version(), "servers": {}}
        local_env = clean_env({})
        res["local"] = measure(str(path), local_env, size, repeat)
        for name in [s.strip() for s in a.servers.split(",") if s.strip()]:
            why = available(name)
            if why:
                if a.require:
                    raise SystemExit(f"benchmarks/remote.py: {name}: missing {why}")
                res["servers"][name] = {"skipped": f"missing {why}"}
                print(f"{name}: skipped (missing {why})", file=sys.stderr)
                continue
            d = tmp / name
            d.mkdir()
            srv = STARTERS[name](path, d)
            try:
                row = measure(srv.uri, clean_env(srv.env), size, repeat, srv.sent if srv.sent() is not None else None)
                row["uri"] = srv.uri
                res["servers"][srv.name] = row
                print(f"{srv.name}: inspect {row['inspect']['fraction']:.2%}, scan {row['scan']['fraction']:.3f}x",
                      file=sys.stderr)
            finally:
                srv.close()
        shutil.rmtree(tmp / "inputs", ignore_errors=True)
    (a.out / "remote.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "remote.md").write_text(table(res))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
