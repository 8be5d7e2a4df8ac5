"""Long fuzz run: mutate real fixture bytes and run every ckptscan command on each input.

    python benchmarks/fuzz.py --minutes 10 [--seed 1] [--commands inspect,scan,fix]
                              [--json fuzz-result.json] [--keep-crashes DIR]

Mutations (``tests/hostile.py``): structural (bit flips, overwritten runs, deleted and
duplicated slices, 8-byte fields set huge), stacked 1–4 at a time, plus a truncation at a
random offset in a third of the inputs; sharded sets mutate the index or a shard.
Each input runs in a worker under the CLI's memory cap (768 MiB, ``--max-memory``'s
mechanism) with a per-input deadline and must keep its own peak RSS below 1 GiB.

An input *passes* when the command exits 0, 1 or 2 with no traceback, no ``internal
error``, no HDF5 diagnostic, no out-of-memory; an exit 2 prints exactly one
``ckptscan: error:`` line; the input is byte-identical afterwards (``fix`` may change a
file it fully parsed) and no file is left beside it; truncated inputs exit 2.
The distinct reasons are tallied, safetensors ``fuzz.py``-style. Exit status 1 if any
input failed; failing inputs are copied to ``--keep-crashes``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hostile as H  # noqa: E402


def _norm(reason: str) -> str:
    """A reason with numbers and paths blurred, for tallying kinds of errors."""
    reason = re.sub(r"/[\w./-]*", "<path>", reason)
    reason = re.sub(r"\d+", "N", reason)
    return reason[:110]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--max-inputs", type=int, default=0, help="stop after this many inputs (0: no limit)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--commands", default="inspect,scan,fix")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--keep-crashes", default="fuzz-crashes")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    seeds = H.seed_files()
    if not seeds:
        print("no fixtures found (fixtures/k3)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ckptscan-fuzz-"))
    deadline = time.monotonic() + args.minutes * 60
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    failures: list[dict] = []
    peak = 0
    n = 0
    worker = H.Worker()
    commands = [c for c in args.commands.split(",") if c in worker.commands]
    try:
        while time.monotonic() < deadline and (not args.max_inputs or n < args.max_inputs):
            key = rng.choice(sorted(seeds))
            src = seeds[key]
            d = work / f"in{n}"
            main_path = H.copy_seed(src, d)
            target = main_path
            if H.has_shards(main_path) and rng.random() < 0.6:
                target = d / rng.choice(H.shard_files(src)).name
            data = target.read_bytes()
            for _ in range(rng.randint(1, 4)):
                data = H.mutate_struct(data, rng) or data
            truncated = rng.random() < 0.33 and len(data) > 2
            if truncated:
                data = data[: rng.randrange(1, len(data) - 1)]
            target.write_bytes(data)
            command = commands[n % len(commands)]
            n += 1
            try:
                res = worker.run(worker.argv(command, main_path), digest=main_path)
            except H.WorkerDied as exc:
                failures.append({"input": n, "seed": key, "command": command, "problem": str(exc)[:2000]})
                _keep(d, args.keep_crashes, n)
                worker = H.Worker()
                continue
            peak = max(peak, res["maxrss"])
            counts[(command, res["rc"])] += 1
            try:
                if truncated and target == main_path:
                    reason = H.check_error(res, main_path, tuple(d.iterdir()), summary=H.summary_prefix(command))
                else:
                    H.check_sane(res, main_path, may_write=command == "fix")
                    reason = next((ln.split(": ", 3)[-1] for ln in res["stderr"].splitlines()
                                   if ln.startswith("ckptscan: error:")), f"exit {res['rc']}")
                reasons[_norm(reason)] += 1
            except AssertionError as exc:
                failures.append({"input": n, "seed": key, "command": command, "problem": str(exc)[:2000]})
                _keep(d, args.keep_crashes, n)
            shutil.rmtree(d, ignore_errors=True)
            if n % 500 == 0:
                print(f"{n} inputs, {len(failures)} failures", file=sys.stderr, flush=True)
    finally:
        worker.close()
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        "inputs": n,
        "seed": args.seed,
        "minutes": args.minutes,
        "seeds": {k: str(v.relative_to(H.ROOT)) if v.is_relative_to(H.ROOT) else str(v) for k, v in seeds.items()},
        "by_command_exit": {f"{c} exit {rc}": k for (c, rc), k in sorted(counts.items())},
        "failures": len(failures),
        "peak_rss_mib": peak >> 20,
        "distinct_reasons": len(reasons),
        "reasons": dict(reasons.most_common()),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "reasons"}, indent=2))
    print("top reasons:")
    for r, k in reasons.most_common(25):
        print(f"  {k:6d}  {r}")
    for f in failures[:10]:
        print(f"FAILED input {f['input']} ({f['seed']}, {f['command']}): {f['problem'][:600]}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(summary, failure_details=failures), indent=2) + "\n")
    return 1 if failures else 0


def _keep(folder: Path, dest: str, n: int) -> None:
    out = Path(dest) / f"input{n}"
    shutil.copytree(folder, out, dirs_exist_ok=True)


if __name__ == "__main__":
    sys.exit(main())
