"""Model config → the layer and variable names a Keras user knows.

Two jobs, both pure functions over the JSON config (never evaluated):

* :func:`v3_object_map` replays Keras 3's save walk (``saving_lib._save_state``) over
  ``config.json`` to tell which HDF5 object path (``layers/functional/layers/dense_1``)
  holds which layer (``head_func/sub_dense``), and :func:`var_names` gives the order of
  ``vars/0, vars/1, …`` for a built-in layer class and its config flags.
* :func:`layer_tree` lists every layer of a model config by structural path, which the
  legacy reader uses to place weight names like ``sub_dense/kernel:0`` inside a nested
  model, and the rules use for epsilon and initializers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

# --- names -----------------------------------------------------------------------

CONTAINER_CLASSES = {"Functional", "Sequential", "Model"}
RNN_CELLS = {
    "LSTM": ("LSTMCell", "lstm_cell"),
    "GRU": ("GRUCell", "gru_cell"),
    "SimpleRNN": ("SimpleRNNCell", "simple_rnn_cell"),
    "ConvLSTM1D": ("ConvLSTMCell", "conv_lstm_cell"),
    "ConvLSTM2D": ("ConvLSTMCell", "conv_lstm_cell"),
    "ConvLSTM3D": ("ConvLSTMCell", "conv_lstm_cell"),
}
MHA_SUBLAYERS = {
    "query_dense": "query",
    "key_dense": "key",
    "value_dense": "value",
    "output_dense": "attention_output",
    "gate_dense": "gate",
}
BN_CLASSES = {"BatchNormalization", "SyncBatchNormalization"}


@functools.lru_cache(maxsize=1024)
def snake(name: str) -> str:
    """Keras' ``to_snake_case`` (class name → path element; memoised: a model repeats a
    few class names hundreds of times)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def class_from_snake(element: str) -> str | None:
    """The built-in class whose snake name is ``element`` minus a ``_N`` counter."""
    base = re.sub(r"_\d+$", "", element)
    return _SNAKE_TO_CLASS.get(base)


_KNOWN_CLASSES = [
    "Dense", "EinsumDense", "Embedding", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "RMSNormalization", "UnitNormalization", "Normalization", "PReLU",
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Bidirectional",
    "TimeDistributed", "MultiHeadAttention", "GroupedQueryAttention", "Functional",
    "Sequential", "LSTMCell", "GRUCell", "SimpleRNNCell",
]
_SNAKE_TO_CLASS = {snake(c): c for c in _KNOWN_CLASSES}


def class_from_path(obj_path: str) -> str | None:
    """Best guess of the class stored at a v3 object path, from its elements alone."""
    elems = obj_path.split("/") if obj_path else []
    if not elems:
        return None
    last = elems[-1]
    if last == "cell" and len(elems) > 1:
        parent = class_from_snake(elems[-2]) or ("LSTM" if elems[-2] in ("forward_layer", "backward_layer") else None)
        return RNN_CELLS.get(parent or "", (None,))[0]
    if last in MHA_SUBLAYERS:
        return "EinsumDense"
    return class_from_snake(last)


def var_name_options(class_name: str | None, tf_keras: bool = False) -> list[list[str]]:
    """Every variable order a class can have under its boolean flags, most likely first."""
    flags = ["use_bias", "center", "scale"]
    seen: list[list[str]] = []
    for mask in range(1 << len(flags)):
        cfg = {f: not (mask >> i) & 1 for i, f in enumerate(flags)}
        names = var_names(class_name, cfg, tf_keras)
        if names is not None and names not in seen:
            seen.append(names)
    # an ambiguous count (BN with center or scale off) is no option at all
    counts = [len(n) for n in seen]
    return [n for n in seen if counts.count(len(n)) == 1]


def scope_end(scopes: list[str], name: str) -> int | None:
    """The index in ``scopes`` (the name scopes of a tf-keras variable's name, split at
    ``/``) of the last component of layer ``name``'s own scope: ``name`` itself, else as
    TensorFlow made it unique (``dense_1`` for ``dense``); None when it is not there.

    A tf-keras layer name may hold ``/`` (MobileNetV3's ``Conv/BatchNorm``, DenseNet's
    ``conv1/bn``): its scope is then that many components, the last one made unique. That
    case is one string search over the joined scopes, linear in their length whatever a
    file's names hold.
    """
    if "/" not in name:  # the common case, kept quick (once per variable)
        if name in scopes:
            return scopes.index(name)
        pat = re.compile(re.escape(name) + r"_\d+")
        return next((i for i, c in enumerate(scopes) if pat.fullmatch(c)), None)
    joined = "/" + "/".join(scopes) + "/"
    pos = joined.find("/" + name + "/")
    if pos < 0:
        head, _, last = name.rpartition("/")
        m = re.search("/" + re.escape(head) + "/" + re.escape(last) + r"_\d+/", joined)
        if m is None:
            return None
        pos = m.start()
    return joined.count("/", 0, pos + 1) - 1 + name.count("/")


def layer_name(cfg: dict) -> str:
    """The user's name of a layer entry in a config ``layers`` list."""
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    name = inner.get("name", cfg.get("name"))
    return str(name) if name is not None else ""


def _flag(cfg: dict, key: str, default: bool = True) -> bool:
    value = cfg.get(key, default)
    return bool(value) if value is not None else default


def quantization_mode(cfg: dict) -> str | None:
    """``int8``/``int4``/… when the layer's dtype policy is a quantized one."""
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config") or {}
        if isinstance(inner, dict) and inner.get("mode"):
            return str(inner["mode"])
        if "Quantized" in str(dtype.get("class_name", "")) or "Int4" in str(dtype.get("class_name", "")):
            return "int8"
    elif isinstance(dtype, str):
        m = re.match(r"^(int8|int4|float8)_from_", dtype)
        if m:
            return m.group(1)
    return None


def _int4_blocks(mode: str) -> bool:
    """True for int4 quantized in blocks along the input (Keras 3.13+: the policy's mode
    is ``int4/<block size>``), which adds a zero point and ``g_idx`` to the scale;
    ``int4`` and ``int4/-1`` are per channel."""
    base, _, block = mode.partition("/")
    return base == "int4" and block not in ("", "-1", "None")


def policy_name(cfg: dict) -> str | None:
    """The dtype policy name of a layer config (``mixed_float16``, ``float32``…)."""
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config") or {}
        if isinstance(inner, dict):
            return inner.get("name") or inner.get("source_name")
        return None
    return dtype if isinstance(dtype, str) else None


#: Placeholder in :func:`var_names` for a variable created without a name. Keras 3 names
#: those ``variable``, ``variable_1``, … from a per-process counter (``auto_name``), so a
#: fresh ``load_model`` numbers them in model build order; readers do the same.
AUTO_NAME = "\0variable"

#: Layers shipped inside ``keras.applications`` (not exported as ``keras.layers``)
#: and the names of their variables.
APPLICATION_LAYERS = {
    "LayerScale": [AUTO_NAME],  # keras.applications.convnext: add_weight() without a name
}
#: Where tf-keras 2.x names a built-in layer's variables otherwise than Keras 3 (its
#: ``.keras`` and ``.weights.h5`` store them in the same ``vars/<i>`` order): the
#: depthwise convolutions keep ``depthwise_kernel`` (Keras 3 renamed it ``kernel``), and
#: ConvNeXt's ``LayerScale`` names its variable ``gamma``.
TF_KERAS_LAYERS = {
    "DepthwiseConv1D": ["depthwise_kernel", "bias"],
    "DepthwiseConv2D": ["depthwise_kernel", "bias"],
    "LayerScale": ["gamma"],
}


def auto_names(count: int, start: int = 0) -> list[str]:
    """Keras' auto names for ``count`` unnamed variables after ``start`` earlier ones."""
    return ["variable" if i == 0 else f"variable_{i}" for i in range(start, start + count)]


def var_names(class_name: str | None, cfg: dict | None, tf_keras: bool = False) -> list[str] | None:
    """Keras 3 order of ``vars/<i>`` for a built-in class and its config, or None; with
    ``tf_keras``, the names tf-keras 2.x gives the same variables (:data:`TF_KERAS_LAYERS`).

    May contain :data:`AUTO_NAME` placeholders (see there).
    """
    cfg = cfg or {}
    c = class_name
    if tf_keras and c in TF_KERAS_LAYERS:
        names = TF_KERAS_LAYERS[c]
        return names if names[-1] != "bias" or _flag(cfg, "use_bias") else names[:-1]
    if c in APPLICATION_LAYERS:
        return list(APPLICATION_LAYERS[c])
    if c in BN_CLASSES:
        out = (["gamma"] if _flag(cfg, "scale") else []) + (["beta"] if _flag(cfg, "center") else [])
        out += ["moving_mean", "moving_variance"]
        if _flag(cfg, "renorm", False):
            out += ["moving_stddev", "renorm_mean", "renorm_stddev"]
        return out
    if c in ("Dense", "EinsumDense"):
        has_bias = _flag(cfg, "use_bias") if c == "Dense" else bool(cfg.get("bias_axes"))
        mode = quantization_mode(cfg)
        if mode is None:
            return ["kernel"] + (["bias"] if has_bias else [])
        if mode == "int8":
            return ["kernel"] + (["bias"] if has_bias else []) + ["kernel_scale"]
        if mode.split("/")[0] == "int4":
            return ["kernel"] + (["bias"] if has_bias else []) + ["kernel_scale"] + (
                ["kernel_zero", "g_idx"] if _int4_blocks(mode) else [])
        if mode == "float8":
            return ["kernel"] + (["bias"] if has_bias else []) + [
                "inputs_scale", "inputs_amax_history", "kernel_scale", "kernel_amax_history",
                "outputs_grad_scale", "outputs_grad_amax_history",
            ]
        return None
    if c == "Embedding":
        mode = quantization_mode(cfg)
        if mode is None:
            return ["embeddings"]
        if mode == "int8" or mode.split("/")[0] == "int4":
            return ["embeddings", "embeddings_scale"] + (["embeddings_zero", "g_idx"] if _int4_blocks(mode) else [])
        return None
    if c in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
             "DepthwiseConv1D", "DepthwiseConv2D"):
        return ["kernel"] + (["bias"] if _flag(cfg, "use_bias") else [])
    if c in ("SeparableConv1D", "SeparableConv2D"):
        return ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if _flag(cfg, "use_bias") else [])
    if c == "LayerNormalization":
        rms = _flag(cfg, "rms_scaling", False)
        out = ["gamma"] if (_flag(cfg, "scale") or rms) else []
        return out + (["beta"] if (_flag(cfg, "center") and not rms) else [])
    if c == "GroupNormalization":
        return (["gamma"] if _flag(cfg, "scale") else []) + (["beta"] if _flag(cfg, "center") else [])
    if c == "RMSNormalization":
        return ["scale"]
    if c == "PReLU":
        return ["alpha"]
    if c == "Attention":
        return (["scale"] if _flag(cfg, "use_scale", False) else []) + (
            ["concat_score_weight"] if cfg.get("score_mode") == "concat" else [])
    if c == "AdditiveAttention":
        return ["scale"] if _flag(cfg, "use_scale") else []
    if c == "Normalization":
        return ["mean", "variance", "count"]
    if c in ("LSTMCell", "GRUCell", "SimpleRNNCell", "ConvLSTMCell"):
        return ["kernel", "recurrent_kernel"] + (["bias"] if _flag(cfg, "use_bias") else [])
    if c in CONTAINER_CLASSES or c in ("InputLayer", "Bidirectional", "TimeDistributed", "LSTM", "GRU",
                                       "SimpleRNN", "MultiHeadAttention", "Dropout", "ReLU", "Activation",
                                       "Add", "Concatenate", "Flatten", "Reshape", "GlobalAveragePooling2D",
                                       "GlobalAveragePooling1D", "MaxPooling2D", "AveragePooling2D",
                                       "ZeroPadding2D", "Multiply", "Softmax"):
        return []
    return None


def guess_var_names(shapes: list[tuple[int, ...]]) -> list[str] | None:
    """Shape heuristics for an unknown layer (formats.md §4.4); None if no guess."""
    n = len(shapes)
    if n in (2, 3, 4) and all(len(s) == 1 for s in shapes) and len({s for s in shapes}) == 1:
        head = {4: ["gamma", "beta"], 3: ["gamma_or_beta"], 2: []}[n]
        return head + ["moving_mean", "moving_variance"]
    return None


# --- Keras 3 save walk ----------------------------------------------------------------


@dataclass
class ObjInfo:
    """What the config says lives at one HDF5 object path."""

    path: list[str]
    """Structural layer path elements."""
    class_name: str
    config: dict = field(default_factory=dict)
    alias_of: list[str] | None = None
    """For a shared layer met again: the path of its first traversal (where Keras 3
    stores it; legacy files store a second copy here)."""


def top_config(doc: dict) -> dict:
    """Normalise a ``config.json`` / ``model_config`` document to ``{class_name, config}``."""
    if "class_name" in doc and "config" in doc:
        return doc
    return {"class_name": "Functional", "config": doc}


def is_container_class(class_name: str | None, cfg: dict | None) -> bool:
    """True for a nested model (Functional/Sequential/Model with a ``layers`` list)."""
    return isinstance(cfg, dict) and isinstance(cfg.get("layers"), list) and (
        class_name in CONTAINER_CLASSES or "layers" in cfg
    )


def _is_container(entry: dict) -> bool:
    cfg = entry.get("config")
    return isinstance(cfg, dict) and isinstance(cfg.get("layers"), list) and (
        entry.get("class_name") in CONTAINER_CLASSES or "layers" in cfg
    )


def _is_bare_op(entry: dict) -> bool:
    return str(entry.get("module") or "").startswith(("keras.src.ops", "keras.ops"))


def v3_object_map(doc: dict, tf_keras: bool = False) -> dict[str, ObjInfo]:
    """Map HDF5 object paths (no leading ``/``, no ``/vars``) to layers, per Keras 3
    (or, with ``tf_keras``, per tf-keras 2.x, which wrote the same store layout)."""
    out: dict[str, ObjInfo] = {}
    top = top_config(doc)
    if _is_container(top):
        _walk_container(top, "", [], out, depth=0, shared={})
    if tf_keras:
        _tf_keras_paths(out)
    return out


def written_by_tf_keras(doc: dict | None, keras_version: str | None = None) -> bool:
    """True for a tf-keras 2.x save: ``metadata.json`` says 2.x, or the config's model, or
    a ``Functional``/``Sequential``/``Model`` nested in it, comes from a tf-keras module
    (:data:`_TF_KERAS_MODULES`). A tf-keras ``Sequential`` says only ``keras``, as Keras
    3's does, hence the nested ones (a bare ``.weights.h5`` has no ``metadata.json``)."""
    if keras_version:
        return str(keras_version).split(".")[0] in ("1", "2")
    stack: list = [doc]
    budget = 100_000  # config nodes looked at, at most
    while stack and budget > 0:
        node = stack.pop()
        budget -= 1
        if isinstance(node, dict):
            module = node.get("module")
            if ((node is doc or node.get("class_name") in CONTAINER_CLASSES) and isinstance(module, str)
                    and module.startswith(_TF_KERAS_MODULES)):
                return True
            stack.extend(v for k, v in node.items() if k in ("config", "layers"))
        elif isinstance(node, list):
            stack.extend(node)
    return False


#: Modules of tf-keras' models (``tf_keras.src.engine.functional``; the Keras 2 bundled
#: with TensorFlow wrote ``keras.src.engine.…`` or ``keras.engine.…``).
_TF_KERAS_MODULES = ("tf_keras", "keras.src.engine.", "keras.engine.")


def _tf_keras_paths(out: dict[str, ObjInfo]) -> None:
    """tf-keras names a TimeDistributed's inner variables after the wrapper alone
    (``time_distributed/kernel:0``): drop the inner layer's element from the paths."""
    for obj in sorted(out, key=lambda k: k.count("/")):
        head, sep, _ = obj.rpartition("/layer")
        if not sep or obj[len(head) + len(sep):][:1] not in ("", "/"):
            continue
        parent = out.get(head)
        if parent is None or parent.class_name != "TimeDistributed":
            continue
        info = out[obj]
        n = len(parent.path)
        if len(info.path) > n and info.path[:n] == parent.path:
            info.path = parent.path + info.path[n + 1 :]


def _shared_key(entry: dict) -> tuple | None:
    """Identity of a layer that may appear twice in a config (a shared layer).

    Keras 3 ``.keras`` configs mark objects serialized more than once with the same
    ``shared_object_id``. Legacy ``model_config`` (no ``module`` keys) has no marker:
    a second entry with the same name, class and config is the same layer there, so
    its key is (class, name) and :func:`_first_use` also compares the configs.
    """
    if entry.get("shared_object_id") is not None:
        return ("id", entry["shared_object_id"])
    if "module" in entry:
        return None
    cfg = entry.get("config")
    if not isinstance(cfg, dict) or not cfg.get("name"):
        return None
    return ("cfg", entry.get("class_name"), str(cfg["name"]))


def _first_use(key: tuple, entry: dict, shared: dict) -> list[str] | None:
    """Structural path of the first appearance of ``entry``'s layer, if it appeared before."""
    for path, cfg in shared.get(key, ()):
        if key[0] == "id" or cfg == entry.get("config"):
            return path
    return None


def _walk_container(entry: dict, prefix: str, struct: list[str], out: dict, depth: int, shared: dict) -> None:
    if depth > 50:
        return
    items = [it for it in entry["config"]["layers"] if isinstance(it, dict)]
    if entry.get("class_name") == "Sequential":
        items = [it for it in items if it.get("class_name") != "InputLayer"]
    used: dict[str, int] = {}
    for it in items:
        if _is_bare_op(it):
            continue
        base = snake(str(it.get("class_name", "layer")))
        n = used.get(base, 0)
        used[base] = n + 1
        slot = base if n == 0 else f"{base}_{n}"
        path = struct + [layer_name(it)]
        key = _shared_key(it)
        first = _first_use(key, it, shared) if key is not None else None
        if first is not None:
            # a shared layer met again: Keras 3 skips it (its counter slot is used up);
            # legacy files hold a second copy of its weights here
            _place(it, f"{prefix}layers/{slot}", path, out, depth, {}, alias_of=first)
            continue
        if key is not None:
            shared.setdefault(key, []).append((path, it.get("config")))
        _place(it, f"{prefix}layers/{slot}", path, out, depth, shared)


def _place(entry: dict, obj: str, struct: list[str], out: dict, depth: int, shared: dict | None = None,
           alias_of: list[str] | None = None) -> None:
    shared = {} if shared is None else shared
    cls = str(entry.get("class_name", ""))
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    out.setdefault(obj, ObjInfo(struct, cls, cfg, alias_of))
    if alias_of is not None:
        # sub-objects of a shared layer (cells, halves, projections) are aliases too
        sub: dict[str, ObjInfo] = {}
        _place(entry, obj, alias_of, sub, depth)
        for sub_obj, info in sub.items():
            if sub_obj != obj:
                out.setdefault(sub_obj, ObjInfo(struct + info.path[len(alias_of):], info.class_name, info.config, info.path))
        return
    if _is_container(entry):
        _walk_container(entry, obj + "/", struct, out, depth + 1, shared)
    elif cls in RNN_CELLS:
        cell_cls, cell_name = RNN_CELLS[cls]
        out.setdefault(obj + "/cell", ObjInfo(struct + [cell_name], cell_cls, cfg))
    elif cls == "RNN" and isinstance(cfg.get("cell"), dict):
        _place(cfg["cell"], obj + "/cell", struct + [layer_name(cfg["cell"])], out, depth + 1)
    elif cls == "Bidirectional" and isinstance(cfg.get("layer"), dict):
        fwd = cfg["layer"]
        # Keras 3 stores the renamed copy (``forward_lstm``); tf-keras the user's layer
        # (``lstm``), whose copy it names ``forward_`` + name
        fname = layer_name(fwd)
        fname = fname if fname.startswith("forward_") else "forward_" + fname
        _place(fwd, obj + "/forward_layer", struct + [fname], out, depth + 1)
        bwd = cfg.get("backward_layer")
        if isinstance(bwd, dict):
            _place(bwd, obj + "/backward_layer", struct + [layer_name(bwd)], out, depth + 1)
        else:
            bname = "backward_" + fname[len("forward_"):] if fname.startswith("forward_") else "backward_" + fname
            _place(fwd, obj + "/backward_layer", struct + [bname], out, depth + 1)
    elif cls == "TimeDistributed" and isinstance(cfg.get("layer"), dict):
        inner = cfg["layer"]
        _place(inner, obj + "/layer", struct + [layer_name(inner)], out, depth + 1)
    elif cls in ("MultiHeadAttention", "GroupedQueryAttention"):
        sub = dict(cfg)
        sub["bias_axes"] = "x" if _flag(cfg, "use_bias") else None
        for attr, name in MHA_SUBLAYERS.items():
            out.setdefault(f"{obj}/{attr}", ObjInfo(struct + [name], "EinsumDense", sub))
            # tf-keras v3 stores walk the private attributes (``_query_dense``)
            out.setdefault(f"{obj}/_{attr}", ObjInfo(struct + [name], "EinsumDense", sub))


# --- whole-model layer tree --------------------------------------------------------


def layer_tree(doc: dict) -> dict[str, ObjInfo]:
    """Every layer of a model config keyed by structural path (``a/b/c``).

    Includes sub-objects that own weights (RNN cells, Bidirectional halves, MHA
    projections), so every variable's ``layer_path`` can be looked up.
    """
    return {"/".join(info.path): info for info in v3_object_map(doc).values()}


def top_level_layers(doc: dict) -> dict[str, ObjInfo]:
    """Top-level layers of the model config by name."""
    return {info.path[0]: info for info in v3_object_map(doc).values() if len(info.path) == 1}
