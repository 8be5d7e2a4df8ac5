"""Load and fault benchmark of ``ckptscan serve`` (figures in docs/benchmarks.md, "serve").

    python benchmarks/serve.py [--clients 32] [--requests 25] [--workers 2] [--leak 2000]
                               [--resnet FILE.keras] [--legacy-h5 FILE.h5 --tf-python PY] [--json OUT]

One real server (``python -m ckptscan serve`` on a loopback port, uvicorn), then:

1. **load**: ``clients`` threads x ``requests`` each, one file per request, keep-alive
   connections, over a mix of clean (``seed.keras``), broken (``seed_broken.keras``) and
   hostile files (a truncated ``.keras``, random bytes, a zip whose member lies about its
   size). Every answer must be 200 with the expected verdict for its file; throughput,
   p50/p99 latency, peak RSS of the server process and of its workers;
2. **fault**: while 8 clients keep scanning clean files, a request that holds a worker
   (a FIFO) has that worker SIGKILLed mid-scan: that request must answer 500 with the
   reason, every other request 200, and the server must keep serving;
3. **memory**: ``leak`` more requests; the server's RSS after the first 10 % and at the end;
4. **warm latency** (``--resnet``): ``POST /v1/scan`` of the ResNet101V2 file (best of N,
   warm server) against the in-process raw floor (``benchmarks/floor.py``) and in-process
   ``ckptscan.scan``, in the same run; with ``--tf-python`` also the seed's TensorFlow method
   (``benchmarks/seed_method.py``, on a tf-keras conversion of ``--legacy-h5``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
K3 = ROOT / "fixtures" / "k3"
sys.path.insert(0, str(HERE))
TOKEN = "bench-token"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def make_inputs(folder: Path) -> dict[str, str]:
    """``{file: expected verdict}`` in ``folder`` (the server's only allowed prefix)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(K3 / "seed.keras", folder / "clean.keras")
    shutil.copy(K3 / "seed_broken.keras", folder / "broken.keras")
    data = (K3 / "seed.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) * 6 // 10])
    (folder / "garbage.keras").write_bytes(random.Random(0).randbytes(64 << 10))
    with zipfile.ZipFile(K3 / "seed.keras") as z, zipfile.ZipFile(folder / "liar.keras", "w") as out:
        for info in z.infolist():
            out.writestr(info, z.read(info.filename))
    raw = bytearray((folder / "liar.keras").read_bytes())  # the central directory's sizes lie
    i = raw.rfind(b"PK\x01\x02")
    raw[i + 24:i + 28] = (0x7FFFFFFF).to_bytes(4, "little")
    (folder / "liar.keras").write_bytes(bytes(raw))
    return {str(folder / "clean.keras"): "pass", str(folder / "broken.keras"): "fail",
            str(folder / "truncated.keras"): "unreadable", str(folder / "garbage.keras"): "unreadable",
            str(folder / "liar.keras"): "unreadable"}


class Server:
    def __init__(self, allow: str, workers: int, queue: int):
        self.port = _free_port()
        env = {**os.environ, "CKPTSCAN_TOKEN": TOKEN}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "ckptscan", "serve", "--port", str(self.port), "--allow", allow,
                                      "--workers", str(workers), "--queue", str(queue), "--timeout", "60"],
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("server did not start: " + self.proc.stderr.read().decode(errors="replace"))
        kids = _children(self.proc.pid)  # the supervisor's child is the server
        self.server_pid = kids[0] if kids else self.proc.pid
        self.peak = {"server_kb": 0, "workers_kb": 0}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak["server_kb"] = max(self.peak["server_kb"], _rss_kb(self.server_pid))
            workers = [p for p in _tree(self.server_pid) if p != self.server_pid]
            self.peak["workers_kb"] = max([self.peak["workers_kb"]] + [_rss_kb(p) for p in workers])
            time.sleep(0.05)

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def get(self, path: str) -> tuple[int, bytes]:
        c = self.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def close(self) -> int:
        self._stop.set()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def post_scan(conn: http.client.HTTPConnection, uris: list[str]) -> tuple[int, dict, float]:
    body = json.dumps({"uris": uris}).encode()
    t0 = time.perf_counter()
    conn.request("POST", "/v1/scan", body=body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t0
    return r.status, json.loads(data), dt


def verdict(doc: dict) -> str:
    f = doc["files"][0]
    if f["status"] == "error":
        return "unreadable"
    return "fail" if f["counts"]["error"] else "pass"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def load(srv: Server, files: dict[str, str], clients: int, per_client: int) -> dict:
    names = list(files)
    lat: list[float] = []
    bad: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        c = srv.conn()
        for i in range(per_client):
            f = names[(k + i) % len(names)]
            try:
                status, doc, dt = post_scan(c, [f])
            except (OSError, http.client.HTTPException) as exc:
                c.close()
                c = srv.conn()
                with lock:
                    bad.append(f"{f}: {exc}")
                continue
            with lock:
                lat.append(dt)
                if status != 200 or verdict(doc) != files[f]:
                    bad.append(f"{f}: HTTP {status} {verdict(doc) if status == 200 else doc}")
        c.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    n = clients * per_client
    return {"requests": n, "failed": len(bad), "failures": bad[:5], "seconds": wall, "rps": n / wall,
            "p50_ms": _pct(lat, 0.5) * 1e3, "p99_ms": _pct(lat, 0.99) * 1e3, "max_ms": max(lat) * 1e3}


def fault(srv: Server, folder: Path, clean: str) -> dict:
    fifo = folder / "held.keras"
    if not fifo.exists():
        os.mkfifo(fifo)
    side = {"ok": 0, "bad": 0}
    stop = threading.Event()

    def background() -> None:
        c = srv.conn()
        while not stop.is_set():
            status, doc, _ = post_scan(c, [clean])
            side["ok" if status == 200 and verdict(doc) == "pass" else "bad"] += 1
        c.close()

    bg = [threading.Thread(target=background) for _ in range(8)]
    for t in bg:
        t.start()
    held: dict = {}

    def victim() -> None:
        c = srv.conn()
        held["status"], held["doc"], held["seconds"] = post_scan(c, [str(fifo)])
        c.close()

    v = threading.Thread(target=victim)
    v.start()
    deadline = time.monotonic() + 30
    fd = None
    while fd is None and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.01)
    pid = None
    while pid is None and time.monotonic() < deadline:
        for p in _tree(srv.server_pid):
            try:
                if any(os.readlink(f"/proc/{p}/fd/{x}") == str(fifo) for x in os.listdir(f"/proc/{p}/fd")):
                    pid = p
            except OSError:
                pass
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    v.join(60)
    os.close(fd)
    time.sleep(1.0)
    stop.set()
    for t in bg:
        t.join()
    after = srv.get("/healthz")[0]
    c = srv.conn()
    status, doc, _ = post_scan(c, [clean])
    c.close()
    return {"killed_pid": pid, "victim_status": held.get("status"), "victim_error": held.get("doc", {}).get("error"),
            "others_ok": side["ok"], "others_failed": side["bad"], "healthz_after": after,
            "scan_after": status == 200 and verdict(doc) == "pass"}


def leak(srv: Server, files: dict[str, str], total: int) -> dict:
    names = list(files)
    marks = {}
    per = 8
    count = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        c = srv.conn()
        while True:
            with lock:
                if count[0] >= total:
                    break
                count[0] += 1
                i = count[0]
            post_scan(c, [names[i % len(names)]])
            if i == total // 10:
                marks["early_kb"] = _rss_kb(srv.server_pid)
        c.close()

    ts = [threading.Thread(target=client, args=(k,)) for k in range(per)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    marks["end_kb"] = _rss_kb(srv.server_pid)
    marks["requests"] = total
    return marks


def warm_latency(srv: Server, resnet: str, repeat: int, legacy: str | None, tf_python: str | None) -> dict:
    import run as bench

    c = srv.conn()
    post_scan(c, [resnet])  # warm-up
    walls = []
    for _ in range(repeat):
        status, doc, dt = post_scan(c, [resnet])
        assert status == 200 and doc["files"][0]["status"] == "scanned", doc
        walls.append(dt)
    c.close()
    out = {"serve_s": min(walls), "serve_walls": walls, "bytes": doc["files"][0]["bytes_scanned"]}
    floor = bench.inproc("floor", [resnet], repeat)
    scan = bench.inproc("scan", [resnet], repeat)
    out.update(floor_s=floor["wall"], inproc_scan_s=scan["wall"], serve_over_floor=out["serve_s"] / floor["wall"])
    if tf_python and legacy:
        res: dict = {}
        bench.bench_seed(tf_python, legacy, Path(tempfile.mkdtemp(prefix="ckptscan-seed-")), max(1, repeat // 3), res)
        seed = res.get("seed", {})
        if "error" in seed:
            out["seed_error"] = seed["error"][-300:]
        else:
            out.update(seed_process_s=seed["process_wall"], seed_load_check_s=seed["load_s"] + seed["check_s"],
                       seed_over_serve=seed["process_wall"] / out["serve_s"],
                       seed_load_check_over_serve=(seed["load_s"] + seed["check_s"]) / out["serve_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--leak", type=int, default=2000)
    ap.add_argument("--resnet")
    ap.add_argument("--legacy-h5")
    ap.add_argument("--tf-python")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ckptscan-serve-bench-"))
    folder = tmp / "allowed"
    files = make_inputs(folder)
    allow = f"file://{folder}/"
    extra = [p for p in (args.resnet, args.legacy_h5) if p]
    for p in extra:  # the warm-latency inputs live elsewhere: hard-link them in (a symbolic link
        try:         # out of the allowed folder is refused by the server, as it should be)
            os.link(os.path.abspath(p), folder / os.path.basename(p))
        except OSError:
            shutil.copy(p, folder / os.path.basename(p))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_average": os.getloadavg(),
                     "cpus": os.cpu_count(), "workers": args.workers}
    srv = Server(allow, args.workers, queue=max(64, args.clients * 2))
    try:
        results["load"] = load(srv, files, args.clients, args.requests)
        results["load"]["peak_server_rss_mb"] = srv.peak["server_kb"] / 1024
        results["load"]["peak_worker_rss_mb"] = srv.peak["workers_kb"] / 1024
        print(json.dumps({"load": results["load"]}), file=sys.stderr)
        results["fault"] = fault(srv, folder, str(folder / "clean.keras"))
        print(json.dumps({"fault": results["fault"]}), file=sys.stderr)
        if args.leak:
            results["memory"] = leak(srv, files, args.leak)
            print(json.dumps({"memory": results["memory"]}), file=sys.stderr)
        if args.resnet:
            results["warm"] = warm_latency(srv, str(folder / os.path.basename(args.resnet)), args.repeat,
                                           args.legacy_h5, args.tf_python)
            print(json.dumps({"warm": {k: v for k, v in results["warm"].items() if k != "serve_walls"}}), file=sys.stderr)
    finally:
        results["exit_code"] = srv.close()
        results["peak_server_rss_mb"] = srv.peak["server_kb"] / 1024
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        results["load_average_end"] = os.getloadavg()
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0 if results["load"]["failed"] == 0 and results["fault"]["others_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
