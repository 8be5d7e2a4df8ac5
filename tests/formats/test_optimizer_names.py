"""Keras 3 optimizer variables named as Keras names them (issue 13, item 7).

For every optimizer Keras ships: build a small model (a nested Functional, a
BatchNormalization), train one step, save a ``.keras``; ckptscan's names for
``optimizer/vars/N`` must equal ``[v.path for v in model.optimizer.variables]``. Then a
NaN put in a slot of ``bn_b/gamma`` (by Keras, ``assign``) must be reported by OPT001
with the variable and the slot exactly as Keras names them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from ckptscan.formats import open_checkpoint
from ckptscan.bulk import scan

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.slow

OPTIMIZERS = {
    "SGD": lambda k: k.optimizers.SGD(momentum=0.9),
    "SGD-plain": lambda k: k.optimizers.SGD(),
    "Adam": lambda k: k.optimizers.Adam(),
    "Adam-amsgrad": lambda k: k.optimizers.Adam(amsgrad=True),
    "AdamW": lambda k: k.optimizers.AdamW(),
    "Adamax": lambda k: k.optimizers.Adamax(),
    "Nadam": lambda k: k.optimizers.Nadam(),
    "RMSprop": lambda k: k.optimizers.RMSprop(),
    "RMSprop-momentum-centered": lambda k: k.optimizers.RMSprop(momentum=0.5, centered=True),
    "Adagrad": lambda k: k.optimizers.Adagrad(),
    "Adadelta": lambda k: k.optimizers.Adadelta(),
    "Adafactor": lambda k: k.optimizers.Adafactor(),
    "Lion": lambda k: k.optimizers.Lion(),
    "Ftrl": lambda k: k.optimizers.Ftrl(),
    "LossScaleOptimizer-Adam": lambda k: k.optimizers.LossScaleOptimizer(k.optimizers.Adam()),
    "LossScaleOptimizer-RMSprop": lambda k: k.optimizers.LossScaleOptimizer(k.optimizers.RMSprop(momentum=0.9)),
}


def _model():
    from keras import layers

    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, layers.Dense(2, name="idense")(inner_in), name="inner")
    inp = keras.Input((4,), name="x")
    x = layers.Dense(3, name="d1")(inp)
    x = layers.BatchNormalization(name="bn_b")(x)
    x = inner(x)
    return keras.Model(inp, layers.Dense(1, name="head")(x), name="m")


def _trained(make):
    keras.utils.set_random_seed(7)
    model = _model()
    model.compile(optimizer=make(keras), loss="mse")
    model.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), batch_size=8, epochs=1, verbose=0)
    return model


def _ours(path) -> list[str]:
    with open_checkpoint(path) as ck:
        return [re.sub(r"#\d+$", "", v.name) for v in ck.variables if v.kind == "optimizer" and v.layer_path == "optimizer"]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_variables_named_like_keras(tmp_path, name):
    model = _trained(OPTIMIZERS[name])
    theirs = [v.path for v in model.optimizer.variables]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    assert _ours(path) == theirs
    # a NaN in a slot of bn_b/gamma: OPT001 names the variable and the slot as Keras does
    owner = model.optimizer.inner_optimizer if hasattr(model.optimizer, "inner_optimizer") else model.optimizer
    cls = type(owner).__name__
    slot_var = next((v for v in model.optimizer.variables if "bn_b_gamma_" in v.path), None)
    if slot_var is None:  # plain SGD keeps no slot: its learning rate is the float state left
        slot_var = next(v for v in model.optimizer.variables if v.path.endswith("/learning_rate"))
        want, n = f"{cls} learning rate [optimizer/{slot_var.path}]", 1
    else:
        slot = slot_var.path.split("bn_b_gamma_", 1)[1].replace("_", " ")
        want, n = f"bn_b/gamma ({cls} {slot}) [optimizer/{slot_var.path}]", 3
    slot_var.assign(np.full(tuple(slot_var.shape), np.nan, "float32"))
    model.save(path)
    hits = [f for f in scan(path).findings if f.rule_id == "OPT001"]
    assert hits, "no OPT001"
    assert hits[0].message.startswith(f"{want}: optimizer state holds {n} non-finite values of {n}"), hits[0].message
    assert hits[0].variable == slot_var.path


def test_inspect_shows_what_a_slot_is(tmp_path):
    from conftest import run_cli

    model = _trained(OPTIMIZERS["Adam"])
    path = tmp_path / "adam.keras"
    model.save(path)
    out = run_cli("inspect", "--include-optimizer", path)
    name = model.optimizer.name  # "adam", or "adam_3" when this process made others before
    assert f"{name}/bn_b_gamma_momentum (optimizer) = bn_b/gamma (Adam momentum)" in out.stdout
    assert f"{name}/iteration (optimizer) = Adam iteration counter" in out.stdout
