"""``GET /metrics``: Prometheus text exposition format 0.0.4, written by hand.

Why not ``prometheus_client``: five metric families, one process, no labels beyond a
handful of fixed values. The text format is a stable, documented line format
(``# HELP``, ``# TYPE``, ``name{label="v"} value``; histograms as cumulative ``_bucket``
lines with ``le``, then ``_sum`` and ``_count``), and writing it takes fewer lines than
wiring the client's registry, with one less dependency for ``ckptscan[server]``.
``tests/test_serve.py`` parses the output with the rules of the format.
"""

from __future__ import annotations

import threading
from collections import Counter

#: Upper bounds (seconds) of the ``ckptscan_scan_seconds`` histogram buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters and the scan-time histogram of one server process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        """(route, status code) -> requests answered."""
        self.scans: Counter = Counter()
        """verdict (pass, fail, unreadable, skipped) -> files."""
        self.bytes_read = 0
        self.cache_hits = 0
        self.buckets = [0] * len(BUCKETS)
        self.seconds_sum = 0.0
        self.seconds_count = 0

    def request(self, route: str, status: int) -> None:
        """Count one answered request."""
        with self._lock:
            self.requests[(route, str(status))] += 1

    def scan(self, verdict: str, seconds: float, nbytes: int, cached: bool = False) -> None:
        """Count one file's verdict; its time in the histogram unless it was never read (cache, refused)."""
        with self._lock:
            self.scans[verdict] += 1
            self.cache_hits += int(cached)
            if not seconds and not nbytes:
                return
            self.bytes_read += int(nbytes)
            self.seconds_sum += seconds
            self.seconds_count += 1
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    self.buckets[i] += 1

    def render(self, queue_depth: int, in_flight: int, workers_busy: int, worker_deaths: int) -> str:
        """The exposition text."""
        with self._lock:
            out = ["# HELP ckptscan_requests_total HTTP requests answered, by route and status code.",
                   "# TYPE ckptscan_requests_total counter"]
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'ckptscan_requests_total{{route="{_esc(route)}",status="{status}"}} {n}')
            out += ["# HELP ckptscan_scans_total Files scanned, by verdict (pass, fail, unreadable, skipped).",
                    "# TYPE ckptscan_scans_total counter"]
            for v in ("pass", "fail", "unreadable", "skipped"):
                out.append(f'ckptscan_scans_total{{verdict="{v}"}} {self.scans.get(v, 0)}')
            out += ["# HELP ckptscan_bytes_read_total Tensor bytes read by scans.",
                    "# TYPE ckptscan_bytes_read_total counter", f"ckptscan_bytes_read_total {self.bytes_read}",
                    "# HELP ckptscan_cache_hits_total Files answered from the verdict cache (object checksum), not read.",
                    "# TYPE ckptscan_cache_hits_total counter", f"ckptscan_cache_hits_total {self.cache_hits}",
                    "# HELP ckptscan_queue_depth Files waiting for a worker.",
                    "# TYPE ckptscan_queue_depth gauge", f"ckptscan_queue_depth {queue_depth}",
                    "# HELP ckptscan_requests_in_flight Scan requests admitted and not yet answered.",
                    "# TYPE ckptscan_requests_in_flight gauge", f"ckptscan_requests_in_flight {in_flight}",
                    "# HELP ckptscan_workers_busy Worker processes scanning a file now.",
                    "# TYPE ckptscan_workers_busy gauge", f"ckptscan_workers_busy {workers_busy}",
                    "# HELP ckptscan_worker_deaths_total Worker processes that died under a file.",
                    "# TYPE ckptscan_worker_deaths_total counter", f"ckptscan_worker_deaths_total {worker_deaths}",
                    "# HELP ckptscan_scan_seconds Wall-clock seconds per scanned file.",
                    "# TYPE ckptscan_scan_seconds histogram"]
            for b, n in zip(BUCKETS, self.buckets):
                out.append(f'ckptscan_scan_seconds_bucket{{le="{b:g}"}} {n}')
            out.append(f'ckptscan_scan_seconds_bucket{{le="+Inf"}} {self.seconds_count}')
            out.append(f"ckptscan_scan_seconds_sum {self.seconds_sum:.6f}")
            out.append(f"ckptscan_scan_seconds_count {self.seconds_count}")
        return "\n".join(out) + "\n"


__all__ = ["BUCKETS", "Metrics"]
