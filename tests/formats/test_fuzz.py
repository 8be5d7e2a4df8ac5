"""Fuzzing with real fixture bytes: a deterministic slice in CI (``benchmarks/fuzz.py`` runs long).

1. A fixed corpus (``hostile.mutated_corpus``): every seed layout truncated at ~25
   offsets, with its signature broken, and structurally mutated (bit flips, overwritten
   runs, deleted/duplicated slices, 8-byte fields set huge), for inspect, scan and fix.
   Truncated and wrong-magic files must be refused (exit 2, one line); mutated files may
   still be valid (a flipped weight byte) and must then be read without a crash.
2. Hypothesis (``derandomize=True``, no example database) mutating the same seeds.

All inputs run in a worker under the CLI's memory cap (``hostile.WORKER_MEMORY``, 768 MiB)
with a per-input deadline; each input's own peak RSS must stay below ``hostile.RSS_BOUND``
(1 GiB), the input must be byte-identical afterwards and no file may be left next to it.
"""

from __future__ import annotations

import collections
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hostile as H

COMMANDS = ("inspect", "scan", "fix")
#: Inputs the hypothesis slice runs (per command that exists).
HYPOTHESIS_EXAMPLES = 60


@pytest.fixture(scope="module")
def worker():
    with H.Worker() as w:
        yield w


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return H.mutated_corpus(tmp_path_factory.mktemp("fuzz"), flips_per_seed=8)


def _run(worker, command, path):
    return worker.run(worker.argv(command, path), digest=path)


@pytest.mark.parametrize("command", COMMANDS)
def test_fixed_corpus(worker, corpus, command):
    """Every broken copy of every seed: refused cleanly, or read without a crash."""
    assert command in worker.commands, f"`ckptscan {command}` is not registered"
    assert len(corpus) >= 120
    # the TensorFlow seed (tfbundle reader): its .index and its data shard, each mutated
    labels = [label for label, _ in corpus]
    assert any(lb.startswith("tf_ckpt:ckpt.index:magic") for lb in labels)
    assert any(lb.startswith("tf_ckpt:ckpt.data-00000-of-00001:mut") for lb in labels)
    failures, tally = [], collections.Counter()
    for label, path in corpus:
        res = _run(worker, command, path)
        siblings = tuple(p for p in path.parent.iterdir())
        try:
            if ":trunc" in label or ":magic" in label:
                reason = H.check_error(res, path, siblings, summary=H.summary_prefix(command))
                tally[reason.split(" (")[0][:60]] += 1
            else:
                H.check_sane(res, path, may_write=command == "fix")
                tally[f"exit {res['rc']}"] += 1
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
    assert not failures, f"{len(failures)} of {len(corpus)} failed:\n" + "\n".join(failures[:20])
    assert res["maxrss"] < 1 << 30, f"worker peaked at {res['maxrss'] >> 20} MiB"
    assert sum(tally.values()) == len(corpus)


def _mutations():
    edit = st.tuples(st.floats(0, 1, allow_nan=False), st.integers(0, 255))
    return st.fixed_dictionaries({
        "seed": st.sampled_from(sorted(H.seed_files())),
        "edits": st.lists(edit, min_size=0, max_size=8),
        "cut": st.one_of(st.none(), st.floats(0, 1, allow_nan=False)),
        "splice": st.one_of(st.none(), st.tuples(st.floats(0, 1, allow_nan=False), st.integers(1, 1024))),
        "shard": st.booleans(),
    })


def apply_mutation(src, dest_dir, m) -> tuple:
    """Write the mutated copy of seed ``src``; returns (main path, mutated file)."""
    main = H.copy_seed(src, dest_dir)
    target = main
    if H.has_shards(main) and m["shard"]:  # a sharded set's shard, a TensorFlow data shard
        target = dest_dir / H.shard_files(src)[0].name
    data = bytearray(target.read_bytes())
    for pos, byte in m["edits"]:
        data[min(int(pos * len(data)), len(data) - 1)] = byte
    if m["splice"] is not None:
        at, n = m["splice"]
        i = int(at * len(data))
        del data[i : i + n]
    if m["cut"] is not None:
        data = data[: int(m["cut"] * len(data))]
    target.write_bytes(bytes(data))
    return main, target


@pytest.mark.parametrize("command", COMMANDS)
def test_hypothesis_mutations(worker, tmp_path_factory, command):
    """Hypothesis-chosen byte edits, splices and cuts of real fixtures (deterministic)."""
    assert command in worker.commands, f"`ckptscan {command}` is not registered"
    seeds = H.seed_files()
    root = tmp_path_factory.mktemp(f"hyp-{command}")
    counter = iter(range(10**9))
    seen = collections.Counter()

    @settings(max_examples=HYPOTHESIS_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(m=_mutations())
    def check(m):
        d = root / f"case{next(counter)}"
        main, target = apply_mutation(seeds[m["seed"]], d, m)
        res = _run(worker, command, main)
        seen[res["rc"]] += 1
        H.check_sane(res, main, may_write=command == "fix")
        if m["cut"] is not None and m["cut"] < 0.98 and target.stat().st_size > 0:
            assert res["rc"] == 2, f"a file cut to {m['cut']:.0%} was not refused: {res['stderr'][:300]}"
        shutil.rmtree(d)

    check()
    assert sum(seen.values()) >= HYPOTHESIS_EXAMPLES
