"""``ckptscan.runtime.executor.run_many``: in process, local process pool, real dask.distributed cluster."""

from __future__ import annotations

import json
import os
import time

import pytest

from ckptscan.runtime.executor import ExecutorError, run_many
from ckptscan.history import nonfinite_health
from ckptscan.render.jsonl import file_result_from_dict, file_result_to_dict, render_jsonl
from ckptscan.report import FileResult, Finding, Severity

from conftest import fixture_path, need_module


# module-level, so worker processes can unpickle them
def square_or_fail(x):
    if x == 3:
        raise ValueError("three is not allowed\nsecond line")
    return x * x


def slow_first(x):
    if x == 0:
        time.sleep(1.5)
    return x


def die_on_two(x):
    if x == 2:
        os._exit(9)  # a hard crash: the worker process disappears
    return x + 100


def pid_of(_x):
    time.sleep(0.2)
    return os.getpid()


def screen_threads_env(_x):
    return os.environ.get("CKPTSCAN_SCREEN_THREADS")


def _summary(outcomes):
    return sorted((o.index, o.item, o.value, o.error) for o in outcomes)


EXPECTED = [(i, i, None if i == 3 else i * i, "ValueError: three is not allowed" if i == 3 else None) for i in range(8)]


def test_in_process_failure_is_a_result():
    outs = list(run_many(square_or_fail, range(8)))
    assert [o.index for o in outs] == list(range(8))
    assert _summary(outs) == EXPECTED
    bad = outs[3]
    assert not bad.ok and "square_or_fail" in bad.traceback


def test_process_pool_same_results_and_two_workers():
    outs = list(run_many(square_or_fail, range(8), jobs=2))
    assert _summary(outs) == EXPECTED
    pids = {o.value for o in run_many(pid_of, range(6), jobs=2)}
    assert len(pids) == 2 and os.getpid() not in pids


def test_pool_workers_read_shards_on_one_thread_when_the_pool_fills_the_cpus(monkeypatch):
    from ckptscan.runtime import executor

    monkeypatch.delenv("CKPTSCAN_SCREEN_THREADS", raising=False)
    for cpus, want in ((2, "1"), (3, "1"), (4, "2"), (16, "2")):
        monkeypatch.setattr(executor, "cpus", lambda cpus=cpus: cpus)
        assert {o.value for o in run_many(screen_threads_env, range(4), jobs=2)} == {want}, cpus
    # a user's own setting is kept
    monkeypatch.setenv("CKPTSCAN_SCREEN_THREADS", "2")
    monkeypatch.setattr(executor, "cpus", lambda: 2)
    assert {o.value for o in run_many(screen_threads_env, range(4), jobs=2)} == {"2"}


def test_results_stream_as_they_finish_or_in_order():
    unordered = [o.item for o in run_many(slow_first, range(6), jobs=2)]
    assert unordered[-1] == 0 and sorted(unordered) == list(range(6))
    ordered = [o.item for o in run_many(slow_first, range(6), jobs=2, ordered=True)]
    assert ordered == list(range(6))


def test_streaming_first_result_before_last_item_is_done():
    it = run_many(slow_first, range(4), jobs=2)
    first = next(it)
    t_first = time.monotonic()
    rest = [o.item for o in it]
    # the first record was handed over while item 0 (1.5 s) was still running
    assert first.item != 0 and time.monotonic() - t_first > 0.7
    assert sorted([first.item] + rest) == list(range(4))


def test_worker_crash_fails_only_its_item():
    outs = sorted(run_many(die_on_two, range(6), jobs=2), key=lambda o: o.index)
    assert [o.value for o in outs] == [100, 101, None, 103, 104, 105]
    assert outs[2].error.startswith("WorkerDied: worker process died")


def test_unknown_executor_is_refused():
    with pytest.raises(ExecutorError, match="unknown executor"):
        list(run_many(square_or_fail, [1], executor="ray://x"))


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = need_module("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=40,
    )
    try:
        yield cluster
    finally:
        cluster.close()


def test_dask_cluster_same_output_as_local(dask_cluster):
    addr = dask_cluster.scheduler_address  # tcp://127.0.0.1:PORT
    uri = "dask://" + addr.split("://", 1)[1]
    remote = list(run_many(square_or_fail, range(8), executor=uri))
    assert _summary(remote) == EXPECTED
    # the work really ran in the cluster's worker processes
    pids = {o.value for o in run_many(pid_of, range(6), executor=uri)}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_dask_checkpoint_health_identical_to_local(dask_cluster):
    manifest = json.loads(fixture_path("diverge", "manifest.json").read_text())
    files = [str(fixture_path("diverge", e["file"])) for e in manifest["epochs"]]
    uri = "dask://" + dask_cluster.scheduler_address.split("://", 1)[1]
    local = [o.value.to_dict() for o in run_many(nonfinite_health, files, ordered=True)]
    remote = [o.value.to_dict() for o in run_many(nonfinite_health, files, executor=uri, ordered=True)]
    assert remote == local
    assert [h["status"] for h in local].count("bad") >= 1


def test_dask_missing_scheduler_is_an_error(monkeypatch):
    need_module("distributed")
    monkeypatch.setenv("CKPTSCAN_DASK_TIMEOUT", "2s")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match="cannot reach the dask scheduler"):
        list(run_many(square_or_fail, [1], executor=f"dask://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 30


# --- JSON Lines -------------------------------------------------------------------------
def _result():
    f = Finding("NF001", "nonfinite-weights", Severity.ERROR, "stem_bn/moving_mean: 3 NaN", "a.keras",
                "stem_bn", "moving_mean", (0, 4, 7), 3, details={"max": float("inf"), "n": 3})
    return FileResult("a.keras", "scanned", format="keras-zip", keras_version="3.15.1", findings=(f,),
                      variables_scanned=12, bytes_scanned=4096)


def _file_schema():
    import importlib.resources

    schema = json.loads(importlib.resources.files("ckptscan").joinpath("schema/report.schema.json").read_text())
    return {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": "#/$defs/file"}


def test_render_jsonl_one_valid_line_and_round_trip():
    import jsonschema

    line = render_jsonl(_result())
    assert line.endswith("\n") and "\n" not in line[:-1]
    doc = json.loads(line)
    assert doc.pop("schema_version") == 1 and doc["path"] == "a.keras"
    jsonschema.validate(doc, _file_schema())  # a line is one `files` element of the JSON report
    assert doc["findings"][0]["severity"] == "error" and doc["findings"][0]["indices"] == [0, 4, 7]
    assert doc["findings"][0]["details"]["max"] is None  # non-finite numbers are null, as in --format json
    assert doc["counts"] == {"error": 1, "warning": 0, "info": 0}
    back = file_result_from_dict(json.loads(json.dumps(file_result_to_dict(_result()))))
    assert back == _result()
    assert back.findings[0].severity is Severity.ERROR
    assert back.findings[0].details["max"] == "inf"


def test_render_jsonl_error_result():
    import jsonschema

    doc = json.loads(render_jsonl(FileResult("x.h5", "error", reason="not a Keras weight archive")))
    assert (doc["status"], doc["reason"], doc["findings"]) == ("error", "not a Keras weight archive", [])
    doc.pop("schema_version")
    jsonschema.validate(doc, _file_schema())


def test_long_runs_batch_items_without_losing_or_repeating_any():
    from ckptscan.runtime import executor

    n = executor.POOL_RAMP + 5 * executor.POOL_BATCH + 3  # past the ramp, with a ragged last batch
    outs = list(run_many(square_or_fail, range(n), jobs=2, ordered=True))
    assert [o.index for o in outs] == list(range(n))
    assert [o.item for o in outs] == list(range(n))
    unordered = sorted(o.index for o in run_many(square_or_fail, range(n), jobs=2))
    assert unordered == list(range(n))
