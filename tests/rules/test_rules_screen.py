"""The scan engine's shortcuts never hide a finding.

* :func:`ckptscan.rules.quiet_layers` (one vectorised screen over all BN layers): a
  layer it calls quiet gets no finding from any rule of ``SCREENED_BN``;
* ``NONFINITE_ONLY`` tensor rules report nothing on a tensor without NaN/±Inf.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ckptscan.formats.base import Variable
from ckptscan.rules import (
    NONFINITE_ONLY, SCREENED_BN, BNContext, BNLayer, Scope, TensorContext, Thresholds, get_rule, quiet_layers,
)
from ckptscan.stats import array_counts, array_stats

EDGES = [0.0, -0.0, 1.0, -1.0, 1e-36, 1e-30, 99.0, 100.0, 100.00001, 101.0, 1e4, 65504.0, 65505.0, 65520.0,
         1e6, 1e12, 1e13, 3e38, -1e-3, -1e-7, np.nan, np.inf, -np.inf]
ELEM = st.one_of(st.floats(0.25, 4.0, width=32), st.floats(-3.0, 3.0, width=32), st.sampled_from(EDGES),
                 st.floats(width=32, allow_nan=True, allow_infinity=True))
VAR_ELEM = st.one_of(st.floats(0.25, 4.0, width=32), st.floats(0.25, 4.0, width=32), st.sampled_from(EDGES),
                     st.floats(0, 1e9, width=32))


def _layer(vals: dict, eps: float, path: str) -> BNLayer:
    return BNLayer(path, "BatchNormalization", vals, {k: array_counts(v, k == "moving_variance") for k, v in vals.items()},
                   {k: "float32" for k in vals}, eps, True)


@st.composite
def layers(draw):
    n = draw(st.integers(1, 24))
    out = []
    for i in range(draw(st.integers(1, 4))):
        vec = lambda el: draw(hnp.arrays(np.float32, n, elements=el))  # noqa: E731
        vals = {"gamma": vec(ELEM), "beta": vec(ELEM), "moving_mean": vec(ELEM), "moving_variance": vec(VAR_ELEM)}
        eps = draw(st.sampled_from([1e-3, 1e-5, 0.0, 1e-40, 1.001e-5]))
        out.append(_layer(vals, eps, f"net/bn{i}"))
    return out


THRESHOLDS = st.one_of(st.just(Thresholds()), st.builds(
    Thresholds,
    bn_outlier_decades=st.sampled_from([0.5, 1.0, 3.0]),
    bn_outlier_mads=st.sampled_from([0.0, 2.0, 6.0]),
    bn_min_channels=st.sampled_from([1, 2, 4]),
    param_outlier_factor=st.sampled_from([1.0, 1e4]),
    param_outlier_floor=st.sampled_from([0.0, 1e-2]),
    param_outlier_abs=st.sampled_from([1.0, 100.0, 100.000005]),
    folded_extreme=st.sampled_from([10.0, 1e5, 1e12]),
    dead_variance=st.sampled_from([0.0, 1e-30, 1e-3]),
))


def _hits(layer, th):
    return [(r.id, h) for r in (get_rule(i) for i in sorted(SCREENED_BN)) for h in r.check(BNContext(layer, th))]


@settings(max_examples=400, deadline=None)
@given(ls=layers(), th=THRESHOLDS)
def test_quiet_layers_have_no_findings(ls, th):
    for layer, quiet in zip(ls, quiet_layers(ls, th)):
        if quiet:
            assert _hits(layer, th) == []


def test_screen_covers_every_bn_layer_rule_but_says_so():
    from ckptscan.rules import ALL_RULES

    bn = {r.id for r in ALL_RULES if r.scope == Scope.BN_LAYER}
    assert SCREENED_BN <= bn


def _healthy(n, rng):
    return {
        "gamma": rng.uniform(0.5, 1.5, n).astype(np.float32),
        "beta": rng.normal(0, 0.1, n).astype(np.float32),
        "moving_mean": rng.normal(0, 1, n).astype(np.float32),
        "moving_variance": np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)).astype(np.float32),
    }


def test_healthy_layers_are_quiet_and_each_fault_is_loud():
    rng = np.random.default_rng(0)
    th = Thresholds()
    ls = [_layer(_healthy(n, rng), 1e-3, f"bn{n}") for n in (1, 3, 64, 256, 2048)]
    assert quiet_layers(ls, th) == [True] * len(ls)
    faults = [("moving_variance", np.nan), ("moving_variance", -1.0), ("moving_variance", 1e5),
              ("moving_variance", 1e4), ("gamma", np.inf), ("beta", 5e3), ("moving_mean", 1e6),
              ("moving_variance", 0.0)]
    for name, value in faults:
        vals = _healthy(64, rng)
        vals[name][7] = value
        layer = _layer(vals, 0.0 if value == 0.0 else 1e-3, "bad")
        assert quiet_layers([ls[2], layer, ls[3]], th) == [True, False, True], (name, value)
        assert _hits(layer, th), (name, value)  # each of these is a real finding


def test_layers_without_the_four_vectors_are_never_quiet():
    rng = np.random.default_rng(1)
    vals = _healthy(16, rng)
    del vals["gamma"]
    assert quiet_layers([_layer(vals, 1e-3, "x")], Thresholds()) == [False]
    vals = {k: v.astype(np.float64) for k, v in _healthy(16, rng).items()}
    assert quiet_layers([_layer(vals, 1e-3, "y")], Thresholds()) == [False]


@settings(max_examples=200, deadline=None)
@given(
    arr=hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64]), st.integers(1, 50),
                   elements={"allow_nan": False, "allow_infinity": False}),
    kind=st.sampled_from(["weight", "optimizer", "metric"]),
    dtype=st.sampled_from(["float16", "float32", "bfloat16"]),
    in_bn=st.booleans(),
    full=st.booleans(),
)
def test_nonfinite_only_rules_are_silent_on_finite_tensors(arr, kind, dtype, in_bn, full):
    v = Variable("dense", "kernel", "dense", "Dense", arr.shape, dtype, "/dense/kernel", "x.h5", kind=kind)
    stats = array_stats(arr) if full else array_counts(arr)
    for rid in sorted(NONFINITE_ONLY):
        assert get_rule(rid).scope == Scope.TENSOR
        assert list(get_rule(rid).check(TensorContext(v, stats, in_bn, Thresholds()))) == []


def _defaultish(n):
    return {"gamma": np.ones(n, np.float32), "beta": np.zeros(n, np.float32),
            "moving_mean": np.zeros(n, np.float32), "moving_variance": np.ones(n, np.float32)}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.dictionaries(
    st.sampled_from(["gamma", "beta", "moving_mean", "moving_variance"]),
    st.sampled_from(["nan", "moved", "neg0", "empty", "2d", "missing"]), max_size=3)), min_size=1, max_size=6))
def test_bn007_flags_at_once_equal_one_layer_at_a_time(specs):
    # BN007 decides "initial statistics" and "trained gamma/beta" for every layer at once
    from ckptscan.rules.batchnorm import _has_trained_affine, _is_default_stats, _stats_flags

    out = []
    for i, (n, edits) in enumerate(specs):
        vals = _defaultish(n)
        for k, how in edits.items():
            v = vals[k].copy()
            if how == "nan" and n:
                v[n // 2] = np.nan
            elif how == "moved" and n:
                v[-1] += 0.5
            elif how == "neg0" and n:
                v[0] = -0.0 if k in ("beta", "moving_mean") else v[0]
            elif how == "empty":
                v = v[:0]
            elif how == "2d":
                v = v.reshape(1, -1)
            vals[k] = v
            if how == "missing":
                del vals[k]
        out.append(BNLayer(f"bn{i}", "BatchNormalization", vals, {}, {k: "float32" for k in vals}, 1e-3, True))
    assert _stats_flags(out) == ([_is_default_stats(ly) for ly in out], [_has_trained_affine(ly) for ly in out])
