"""Model graph from the config: topological order, nested models, reached heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptscan.graph import build_graph

DATA = Path(__file__).resolve().parents[1] / "data"


def _keras3_nested_config() -> dict:
    import keras

    inp = keras.Input((8, 8, 3), name="img")
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    bb = keras.Model(inp, x, name="backbone")
    i2 = keras.Input((8, 8, 3), name="in")
    y = bb(i2)
    y = keras.layers.BatchNormalization(name="post_bn")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    seq = keras.Sequential([keras.layers.Dense(3, name="s1"), keras.layers.Dense(2, name="s2")], name="seqhead")
    a = keras.layers.Dense(2, name="head_a")(y)
    b = seq(y)
    side = keras.layers.Dense(1, name="side")(keras.layers.Flatten(name="flat")(i2))
    m = keras.Model(i2, [a, b, side], name="outer")
    return json.loads(json.dumps(keras.saving.serialize_keras_object(m)))


@pytest.fixture(params=["keras3", "tf-keras"])
def nested(request):
    if request.param == "keras3":
        return build_graph(_keras3_nested_config())
    return build_graph(json.loads((DATA / "tfkeras_nested_config.json").read_text()))


def test_nested_models_are_expanded_in_topological_order(nested):
    g = nested
    assert list(g.heads) == ["head_a", "seqhead", "side"]
    for a, b in [("in", "backbone/c1"), ("backbone/c1", "backbone/bn1"), ("backbone/bn1", "post_bn"),
                 ("post_bn", "gap"), ("gap", "seqhead/s1"), ("seqhead/s1", "seqhead/s2"), ("gap", "head_a")]:
        assert g.position(a) < g.position(b), (a, b)
    assert "backbone" not in g.order  # the container itself is replaced by its layers


def test_reached_heads(nested):
    g = nested
    assert g.reached_heads("backbone/bn1") == ["head_a", "seqhead"]
    assert g.reached_heads("post_bn") == ["head_a", "seqhead"]
    assert g.reached_heads("seqhead/s2") == ["seqhead"]
    assert g.reached_heads("side") == ["side"]
    assert g.reached_heads("in") == ["head_a", "seqhead", "side"]


def test_sub_layer_paths_map_to_their_layer(nested):
    assert nested.node_for("backbone/bn1") == "backbone/bn1"
    assert nested.node_for("head_a/some_sublayer") == "head_a"
    assert nested.node_for("unknown_layer") is None
    assert nested.position("unknown_layer") is None


def test_sequential_is_a_chain():
    import keras

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1"),
                          keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(1, name="out")])
    g = build_graph(json.loads(json.dumps(keras.saving.serialize_keras_object(m))))
    assert g.order == ("d1", "bn", "out")
    assert g.reached_heads("bn") == ["out"]


def test_dict_outputs_name_the_heads():
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x"}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "d", "config": {"name": "d"}, "inbound_nodes": [[["x", 0, 0, {}]]]},
        {"class_name": "Dense", "name": "e", "config": {"name": "e"}, "inbound_nodes": [[["x", 0, 0, {}]]]},
    ], "input_layers": ["x", 0, 0], "output_layers": {"score": ["d", 0, 0], "box": ["e", 0, 0]}}}
    g = build_graph(cfg)
    assert list(g.heads) == ["score", "box"]
    assert g.reached_heads("e") == ["box"]


def test_no_container_no_graph():
    assert build_graph(None) is None
    assert build_graph({"class_name": "MyModel", "config": {}}) is None


def test_cycles_in_hostile_config_do_not_hang():
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "Dense", "name": "a", "config": {"name": "a"}, "inbound_nodes": [[["b", 0, 0, {}]]]},
        {"class_name": "Dense", "name": "b", "config": {"name": "b"}, "inbound_nodes": [[["a", 0, 0, {}]]]},
    ], "input_layers": [], "output_layers": [["b", 0, 0]]}}
    g = build_graph(cfg)
    assert set(g.order) == {"a", "b"}
    assert g.reached_heads("a") == ["b"]
