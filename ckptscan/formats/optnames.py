"""Names for the optimizer state of Keras 3 files (``optimizer/vars/14`` → ``adam/bn_b_gamma_momentum``).

Keras 3 saves ``optimizer.variables`` as ``optimizer/vars/0…N`` with no names. The order
is fixed by the optimizer class, so it is rebuilt from ``config.json``'s
``compile_config`` and the model's trainable variables (in the file's layer order):

* every optimizer starts with ``iteration`` and ``learning_rate`` (no ``learning_rate``
  variable when it is a schedule);
* then its slots, created per trainable variable by ``add_optimizer_variables``: the
  names of one call interleaved per variable (Adam: ``momentum``, ``velocity`` of the
  first variable, then of the second …), one call after the other (RMSprop:
  every ``velocity``, then every ``momentum``, then every ``average_gradient``);
* a slot's Keras path is ``<optimizer name>/<variable path with / as _>_<slot>``, the
  variable path being the leaf layer's name and the variable's (``bn_b/gamma``);
* ``LossScaleOptimizer`` adds ``step_counter`` and ``dynamic_scale``, then lists the
  inner optimizer's variables (also saved alone under ``optimizer/inner_optimizer``).

Adafactor's two factors of one variable share one Keras path; the second is named
``<path>#2`` so every name in the file stays unique. A name is given only when the
count and every shape match what the config predicts;
otherwise the variables keep their ``vars/N`` names. Each named variable also carries
:attr:`~ckptscan.formats.base.Variable.about`: ``bn_b/gamma (Adam momentum)``.
"""

from __future__ import annotations

import dataclasses
import re

from ..naming import CONTAINER_CLASSES

__all__ = ["SLOTS", "name_optimizer_variables", "optimizer_layout"]

_VARS = re.compile(r"^vars/(\d+)$")

#: Optimizer class → function(config) → list of ``add_optimizer_variables`` calls.
SLOTS = {
    "SGD": lambda c: [["momentum"]] if _num(c.get("momentum", 0.0)) != 0 else [],
    "Adam": lambda c: [["momentum", "velocity"]] + ([["velocity_hat"]] if c.get("amsgrad") else []),
    "AdamW": lambda c: [["momentum", "velocity"]] + ([["velocity_hat"]] if c.get("amsgrad") else []),
    "Adamax": lambda c: [["momentum", "norm"]],
    "Nadam": lambda c: [["momentum", "velocity"]],
    "RMSprop": lambda c: [["velocity"]] + ([["momentum"]] if _num(c.get("momentum", 0.0)) > 0 else [])
    + ([["average_gradient"]] if c.get("centered") else []),
    "Adagrad": lambda c: [["accumulator"]],
    "Adadelta": lambda c: [["accumulated_grad", "accumulated_delta_var"]],
    "Lion": lambda c: [["momentum"]],
    "Ftrl": lambda c: [["accumulator", "linear"]],
    "Lamb": lambda c: [["momentum", "velocity"]],
}
_NON_TRAINABLE = {"moving_mean", "moving_variance"}
_NORMALIZATION = {"mean", "variance", "count"}


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return 0.0


def _spec(doc) -> tuple[str, str, dict] | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return None
    cls = str(doc.get("class_name", ""))
    cfg = doc["config"]
    name = cfg.get("name") if isinstance(cfg.get("name"), str) else None
    if not name:
        return None
    return cls, name, cfg


def optimizer_layout(doc: dict, trainable: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, str, tuple | None]] | None:
    """``[(Keras path, description, shape or None), …]`` of ``optimizer.variables``.

    ``doc`` is ``compile_config["optimizer"]``; ``trainable`` the model's trainable
    variables as ``(keras path, shape)`` in order. None for an optimizer (or an option
    such as EMA or gradient accumulation) whose layout is not known.
    """
    spec = _spec(doc)
    if spec is None:
        return None
    cls, name, cfg = spec
    if cfg.get("use_ema") or cfg.get("gradient_accumulation_steps"):
        return None
    out: list[tuple[str, str, tuple | None]] = [(f"{name}/iteration", f"{cls} iteration counter", ())]
    if not isinstance(cfg.get("learning_rate"), dict):  # a schedule is not a variable
        out.append((f"{name}/learning_rate", f"{cls} learning rate", ()))
    if cls == "LossScaleOptimizer":
        inner = optimizer_layout(cfg.get("inner_optimizer"), trainable)
        if inner is None:
            return None
        return out + [(f"{name}/step_counter", "loss scale step counter", ()),
                      (f"{name}/dynamic_scale", "dynamic loss scale", ())] + inner
    if cls == "Adafactor":
        for path, shape in trainable:
            leaf = path.rsplit("/", 1)[-1]
            if len(shape) < 2:
                out += [(leaf, f"{path} (Adafactor placeholder)", ()), (leaf, f"{path} (Adafactor placeholder)", ())]
            else:
                out += [(f"{name}/{leaf}", f"{path} (Adafactor row factor)", tuple(shape[:-1])),
                        (f"{name}/{leaf}", f"{path} (Adafactor column factor)", tuple(shape[:-2]) + (shape[-1],))]
            out.append((f"{name}/{path.replace('/', '_')}_velocity", f"{path} (Adafactor velocity)", tuple(shape)))
        return out
    calls = SLOTS.get(cls)
    if calls is None:
        return None
    for slots in calls(cfg):
        for path, shape in trainable:
            for slot in slots:
                out.append((f"{name}/{path.replace('/', '_')}_{slot}", f"{path} ({cls} {slot.replace('_', ' ')})",
                            tuple(shape)))
    if cls == "Nadam":
        out.append(("variable", "Nadam momentum-schedule product (u_product)", ()))
    return out


def _trainable(variables, layers) -> list[tuple[str, tuple[int, ...]]]:
    """The model's trainable variables, ``(Keras path, shape)``, in the file's order."""
    out = []
    for v in variables:
        if v.kind != "weight" or not v.is_float:
            continue
        parts = v.layer_path.split("/")
        frozen = False
        keep = []
        for k in range(1, len(parts) + 1):
            info = layers.get("/".join(parts[:k]))
            cfg = info.config if info is not None and isinstance(info.config, dict) else {}
            if cfg.get("trainable") is False:
                frozen = True
            if info is not None and info.class_name in CONTAINER_CLASSES and k < len(parts):
                continue  # Keras paths start at the layer, not at its enclosing models
            keep.append(parts[k - 1])
        cls = v.layer_class or ""
        if frozen or (v.name in _NON_TRAINABLE and "Normalization" in cls) or (
                cls == "Normalization" and v.name in _NORMALIZATION):
            continue
        out.append(("/".join(keep + [v.name]), tuple(v.shape)))
    return out


def name_optimizer_variables(variables: list, model_config: dict | None, layers: dict) -> list:
    """``variables`` with the Keras 3 optimizer ones named (see the module docstring)."""
    compile_cfg = model_config.get("compile_config") if isinstance(model_config, dict) else None
    doc = compile_cfg.get("optimizer") if isinstance(compile_cfg, dict) else None
    if not isinstance(doc, dict):
        return variables
    groups: dict[str, list[tuple[int, int]]] = {}
    for pos, v in enumerate(variables):
        m = _VARS.match(v.name)
        if v.kind == "optimizer" and m:
            groups.setdefault(v.layer_path, []).append((int(m.group(1)), pos))
    if not groups:
        return variables
    trainable = _trainable(variables, layers)
    out = list(variables)
    for owner, members in groups.items():
        if owner == "optimizer":
            layout = optimizer_layout(doc, trainable)
        elif owner == "optimizer/inner_optimizer" and doc.get("class_name") == "LossScaleOptimizer":
            layout = optimizer_layout((doc.get("config") or {}).get("inner_optimizer"), trainable)
        else:
            layout = None
        members.sort()
        if layout is None or len(layout) != len(members) or [i for i, _ in members] != list(range(len(members))):
            continue
        if any(shape is not None and tuple(variables[pos].shape) != shape for (_, pos), (_, _, shape) in zip(members, layout)):
            continue
        seen: dict[str, int] = {}
        for (_, pos), (kpath, about, _) in zip(members, layout):
            seen[kpath] = seen.get(kpath, 0) + 1
            # Keras itself gives Adafactor's two factors of a variable one path: #2 keeps ours unique
            name = kpath if seen[kpath] == 1 else f"{kpath}#{seen[kpath]}"
            out[pos] = dataclasses.replace(variables[pos], name=name, about=about, naming="known")
    return out
