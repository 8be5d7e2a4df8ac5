"""Every rule on small arrays: exact channels, calibration, registry and docs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptscan.formats.base import Variable
from ckptscan.report import Severity
from ckptscan.rules import ALL_RULES, BNContext, BNLayer, ModelContext, TensorContext, Thresholds, get_rule, select_rules
from ckptscan.rules.docs import SECTIONS, pages
from ckptscan.stats import array_stats

ROOT = Path(__file__).resolve().parents[2]
TH = Thresholds()


# --- helpers --------------------------------------------------------------------------


def bn_layer(var, mean=None, gamma=None, beta=None, eps=1e-3, path="net/bn", dtype="float32"):
    var = np.asarray(var, np.float32)
    n = var.size
    vals = {
        "gamma": np.asarray(gamma if gamma is not None else np.ones(n), np.float32),
        "beta": np.asarray(beta if beta is not None else np.zeros(n), np.float32),
        "moving_mean": np.asarray(mean if mean is not None else np.zeros(n), np.float32),
        "moving_variance": var,
    }
    return BNLayer(path, "BatchNormalization", vals, {k: array_stats(v) for k, v in vals.items()},
                   {k: dtype for k in vals}, eps, True)


def run_bn(rule_id, layer, th=TH):
    return list(get_rule(rule_id).check(BNContext(layer, th)))


def var(shape, dtype="float32", kind="weight", name="kernel", layer="dense", cls="Dense"):
    return Variable(layer, name, layer.split("/")[0], cls, tuple(shape), dtype, f"/{layer}/{name}", "x.h5", kind=kind)


def run_tensor(rule_id, v, values, in_bn=False):
    stats = array_stats(np.asarray(values).reshape(v.shape))
    return list(get_rule(rule_id).check(TensorContext(v, stats, in_bn, TH)))


def healthy(n=64, seed=0, center=1.0):
    """Trained-layer variances: a 2-4x spread around the median."""
    rng = np.random.default_rng(seed)
    return (center * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))).astype(np.float32)


# --- NUM001 / F16001 / OPT001 ---------------------------------------------------------------


def test_NUM001_names_flat_indices_and_counts():
    v = var((4, 8))
    x = np.ones((4, 8), np.float32)
    x.flat[[3, 17]] = [np.nan, -np.inf]
    (hit,) = run_tensor("NUM001", v, x)
    assert (hit.layer_path, hit.variable, hit.indices, hit.count) == ("dense", "kernel", (3, 17), 2)
    assert get_rule("NUM001").format(hit) == (
        "dense/kernel: 2 of 32 values non-finite (1 NaN, 1 -Inf) at flat indices [3, 17]")


def test_NUM001_leaves_bn_vectors_and_optimizer_to_their_rules():
    x = np.array([np.nan, 1.0], np.float32)
    assert run_tensor("NUM001", var((2,), name="moving_mean", layer="bn", cls="BatchNormalization"), x, in_bn=True) == []
    assert run_tensor("NUM001", var((2,), kind="optimizer"), x) == []
    assert run_tensor("NUM001", var((2,)), np.ones(2, np.float32)) == []


def test_F16001_float16_inf_only():
    v = var((5,), dtype="float16", name="bias")
    x = np.array([1, np.inf, 2, np.nan, -np.inf], np.float16)
    (hit,) = run_tensor("F16001", v, x)
    assert hit.indices == (1, 4) and hit.count == 2
    assert "stored as float16 and holds 1 +Inf, 1 -Inf" in get_rule("F16001").format(hit)
    assert run_tensor("F16001", var((5,), dtype="float32", name="bias"), x.astype(np.float32)) == []


def test_OPT001_optimizer_only_and_warning():
    v = var((3,), kind="optimizer", name="dense_kernel_velocity", layer="optimizer")
    (hit,) = run_tensor("OPT001", v, np.array([np.nan, 0, np.nan], np.float32))
    assert hit.indices == (0, 2)
    assert get_rule("OPT001").severity == Severity.WARNING and get_rule("OPT001").category == "optimizer"
    assert run_tensor("OPT001", var((3,)), np.array([np.nan, 0, 0], np.float32)) == []


# --- BN001 / BN004 ------------------------------------------------------------------------


def test_BN001_nan_inf_negative_channels():
    v = healthy(16)
    v[[1, 4, 9]] = [np.nan, np.inf, -0.5]
    (hit,) = run_bn("BN001", bn_layer(v))
    assert (hit.variable, hit.indices, hit.count) == ("moving_variance", (1, 4, 9), 3)
    assert get_rule("BN001").format(hit) == (
        "net/bn/moving_variance: 1 NaN, 1 +Inf, 1 negative in channels [1, 4, 9] of 16")


def test_BN004_one_finding_per_vector():
    n = 8
    mean = np.zeros(n, np.float32)
    mean[2] = np.nan
    gamma = np.ones(n, np.float32)
    gamma[[0, 7]] = np.inf
    hits = run_bn("BN004", bn_layer(healthy(n), mean=mean, gamma=gamma))
    assert [(h.variable, h.indices) for h in hits] == [("gamma", (0, 7)), ("moving_mean", (2,))]
    assert [h.details["inference_only"] for h in hits] == [False, True]


# --- BN002: calibration ------------------------------------------------------------------------


def test_BN002_flags_high_channels_1e4_to_1e6():
    v = healthy(32, seed=1)
    v[[3, 11, 20]] *= [1e4, 1e5, 1e6]
    (hit,) = run_bn("BN002", bn_layer(v))
    assert hit.indices == (3, 11, 20) and hit.variable == "moving_variance"


@pytest.mark.parametrize("n", [4, 8, 16, 64, 512])
def test_BN002_healthy_spread_is_quiet(n):
    for seed in range(20):
        assert run_bn("BN002", bn_layer(healthy(n, seed))) == []


def test_BN002_dead_channels_are_never_outliers():
    v = healthy(32, seed=2)
    v[[0, 5, 6]] = 1e-36
    v[[7, 8]] = 0.0
    assert run_bn("BN002", bn_layer(v)) == []
    # half the channels decaying towards 0 at many scales: still no false outlier
    v = healthy(32, seed=3)
    v[:16] = np.logspace(-30, -2, 16)
    assert run_bn("BN002", bn_layer(v)) == []


def test_BN002_raw_input_stem_layer_with_1e7_variance_is_quiet():
    v = healthy(16, seed=4, center=5e6)
    assert run_bn("BN002", bn_layer(v)) == []
    assert [h.indices for h in run_bn("BN003", bn_layer(v))] == [tuple(range(16))]


def test_BN002_1000x_is_the_floor():
    v = np.ones(16, np.float32)
    v[5] = 900.0
    assert run_bn("BN002", bn_layer(v)) == []
    v[5] = 2e3
    assert [h.indices for h in run_bn("BN002", bn_layer(v))] == [(5,)]


def test_BN002_thresholds_are_settable():
    v = np.ones(16, np.float32)
    v[5] = 2e3
    assert run_bn("BN002", bn_layer(v), Thresholds(bn_outlier_decades=4.0)) == []


# --- BN003 / BN005 ---------------------------------------------------------------------------


def test_BN003_only_above_65504():
    v = np.full(4, 65504.0, np.float32)
    assert run_bn("BN003", bn_layer(v)) == []
    v[2] = 70000.0
    (hit,) = run_bn("BN003", bn_layer(v))
    assert hit.indices == (2,) and get_rule("BN003").severity == Severity.WARNING


def test_BN005_extreme_parameter_channel():
    gamma = np.linspace(0.5, 1.5, 16).astype(np.float32)
    gamma[6] = 3e5
    (hit,) = run_bn("BN005", bn_layer(healthy(16), gamma=gamma))
    assert (hit.variable, hit.indices) == ("gamma", (6,))


def test_BN005_raw_input_means_are_quiet():
    # a stem BN after raw counts: means in the thousands, variances ~1e6
    mean = np.linspace(-2200, 2200, 16).astype(np.float32)
    assert run_bn("BN005", bn_layer(healthy(16, center=3e6), mean=mean)) == []


# --- BN006 / BN008: the folded transform ----------------------------------------------------------


def test_BN006_zero_epsilon_zero_variance_folds_to_inf():
    v = healthy(8)
    v[3] = 0.0
    (hit,) = run_bn("BN006", bn_layer(v, eps=0.0))
    assert (hit.variable, hit.indices, hit.details["folded"]) == ("moving_variance", (3,), "scale")
    assert "non-finite" in get_rule("BN006").format(hit)
    assert run_bn("BN006", bn_layer(v, eps=1e-3)) == []


def test_BN006_skips_channels_other_rules_report():
    v = healthy(8)
    v[3] = np.nan
    assert run_bn("BN006", bn_layer(v)) == []


def test_BN008_offset_overflows_float16_only():
    mean = np.zeros(8, np.float32)
    mean[2] = 1e8  # offset = -mean * gamma / sqrt(var + eps) ~ -1e8: fine in float32 and bfloat16
    hits = run_bn("BN008", bn_layer(healthy(8), mean=mean))
    assert [(h.variable, h.details["dtype"], h.indices) for h in hits] == [("moving_mean", "float16", (2,))]
    assert run_bn("BN006", bn_layer(healthy(8), mean=mean)) == []


def test_BN006_extreme_offset_in_float32():
    mean = np.zeros(8, np.float32)
    mean[1] = 3e36
    hits = run_bn("BN006", bn_layer(np.full(8, 1e-6, np.float32), mean=mean))
    assert [(h.variable, h.indices) for h in hits] == [("moving_mean", (1,))]


# --- BN007 / CFG -------------------------------------------------------------------------


def _model(layers, config=None):
    return ModelContext(layers, config, {}, TH)


def test_BN007_never_updated_in_trained_model():
    fresh = bn_layer(np.ones(4), path="head/bn")
    trained = bn_layer(healthy(4), mean=np.full(4, 0.3), path="body/bn")
    hits = list(get_rule("BN007").check(_model([trained, fresh])))
    assert [h.layer_path for h in hits] == ["head/bn"]
    # an untrained model (everything at its initial values) is not reported
    assert list(get_rule("BN007").check(_model([bn_layer(np.ones(4)), bn_layer(np.ones(4), path="b2")]))) == []
    # one edited layer among many untouched ones does not make the model "trained"
    many = [bn_layer(np.ones(4), path=f"b{i}") for i in range(5)] + [trained]
    assert list(get_rule("BN007").check(_model(many))) == []
    # the layer's own trained gamma is evidence enough
    own = bn_layer(np.ones(4), gamma=[1.1, 0.9, 1.0, 1.0])
    assert [h.args["evidence"] for h in get_rule("BN007").check(_model([own]))] == ["gamma/beta are trained"]


CONFIG = {"class_name": "Functional", "config": {"name": "m", "layers": [
    {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "x"}, "inbound_nodes": []},
    {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "pre", "function": {"bytecode": "..."}}},
    {"module": "my_project.layers", "class_name": "Gate", "registered_name": "my_project>Gate",
     "config": {"name": "gate"}},
    {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"name": "inner", "layers": [
        {"class_name": "Lambda", "config": {"name": "deep_lambda"}},
        {"class_name": "Custom>Thing", "config": {"name": "thing"}},
    ]}},
]}}


def test_CFG001_lambda_layers_nested_too():
    hits = list(get_rule("CFG001").check(_model([], CONFIG)))
    assert [h.layer_path for h in hits] == ["pre", "inner/deep_lambda"]


def test_CFG002_custom_modules():
    hits = list(get_rule("CFG002").check(_model([], CONFIG)))
    assert [(h.layer_path, h.args["origin"]) for h in hits] == [
        ("gate", "module my_project.layers"), ("inner/thing", "registered as Custom>Thing")]
    assert get_rule("CFG002").severity == Severity.INFO


def test_INT001_one_finding_per_tensor_that_failed_its_checksum():
    bad = var((3, 4), layer="net/conv")
    ctx = ModelContext([], None, {}, Thresholds(), [(bad, "stored bytes do not match the checksum in the index")])
    hits = list(get_rule("INT001").check(ctx))
    assert [(h.layer_path, h.variable, h.count) for h in hits] == [("net/conv", "kernel", 12)]
    assert "net/conv/kernel" in get_rule("INT001").format(hits[0])
    assert list(get_rule("INT001").check(ModelContext([], None, {}, Thresholds()))) == []


# --- registry ----------------------------------------------------------------------------------


def test_every_rule_has_id_name_doc_and_a_test_here():
    source = Path(__file__).read_text()
    ids = [r.id for r in ALL_RULES]
    assert len(ids) == len(set(ids))
    for r in ALL_RULES:
        assert re.fullmatch(r"[A-Z][A-Z0-9]*\d{3}", r.id), r.id
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", r.name), r.name
        assert r.fix_hint and r.message and r.summary
        for section in SECTIONS:
            assert f"## {section}" in r.doc, (r.id, section)
        assert re.search(rf"def test_{r.id}_", source), f"no test for {r.id}"


def test_select_and_ignore_by_prefix():
    ids = lambda rs: [r.id for r in rs]  # noqa: E731
    assert ids(select_rules(["BN00"], ["BN003"])) == ["BN001", "BN002", "BN004", "BN005", "BN006", "BN007", "BN008"]
    assert ids(select_rules(["NUM", "bn-variance-outlier"])) == ["BN002", "NUM001"]
    assert "BN003" in ids(select_rules(["BN003"], ["BN"]))  # the more specific code wins
    assert ids(select_rules(None, ["ALL"])) == []
    with pytest.raises(ValueError, match="unknown rule code 'XYZ'"):
        select_rules(["XYZ"])


def test_docs_rules_are_up_to_date():
    folder = ROOT / "docs" / "rules"
    for name, text in pages().items():
        assert (folder / name).read_text(encoding="utf-8") == text, (
            f"docs/rules/{name} is stale: run {sys.executable} -m ckptscan.rules.docs docs/rules")


def test_thresholds_from_settings_mapping():
    th = Thresholds.from_mapping({"bn-outlier-decades": 4, "bn_min_channels": 6})
    assert th.bn_outlier_decades == 4.0 and th.bn_min_channels == 6
    with pytest.raises(ValueError, match="unknown threshold 'nope'"):
        Thresholds.from_mapping({"nope": 1})


def test_where_collapses_consecutive_runs_and_says_when_truncated():
    from ckptscan.rules.base import where

    assert where(range(32), 32, True) == "channels [0–31]"
    assert where([2, 3], 2, True) == "channels [2, 3]"
    assert where([1, 4, 5, 6, 9], 5, True) == "channels [1, 4–6, 9]"
    assert where([7], 1, False) == "flat index [7]"
    # only the first indices are kept by the statistics: say so
    assert where(range(64), 256, True) == "channels [0–63, …] (first 64 of 256)"
    assert where([0, 2, 4, 6, 8, 10, 12, 14, 16, 18], 10, False) == (
        "flat indices [0, 2, 4, 6, 8, 10, 12, 14, …] (first 8 of 10)")


def test_JRN001_pending_journal_or_temporaries(tmp_path):
    from ckptscan import journal
    from ckptscan.rules import FileContext

    f = tmp_path / "m.keras"
    f.write_bytes(b"abcdefgh")
    r = get_rule("JRN001")
    assert list(r.check(FileContext(str(f)))) == []
    with journal.acquire_lock(str(f)):
        jp = journal.write_journal(str(f), [journal.Region(str(f), 2, b"cd", b"XY")])
    (hit,) = r.check(FileContext(str(f)))
    assert r.format(hit) == (f"{f}: a ckptscan fix was interrupted while writing this checkpoint and left its "
                             f"journal {jp}; it may hold half-written values until it is recovered")
    journal.recover(str(f))
    assert list(r.check(FileContext(str(f)))) == []
    open(journal.temp_path(str(f)), "wb").close()  # a fixed-name temporary of a dead run
    (hit,) = r.check(FileContext(str(f)))
    assert "left temporary files next to it" in r.format(hit)
