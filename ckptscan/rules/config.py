"""Config hazards: reported from the JSON config, never evaluated."""

from __future__ import annotations

from typing import Iterator

from ..naming import layer_name, top_config
from ..report import Severity
from .base import Hit, ModelContext, Scope, rule

BUILTIN_PACKAGES = {"keras", "tf_keras", "tensorflow"}
MAX_DEPTH = 50


def walk_layers(model_config: dict | None) -> Iterator[tuple[str, dict]]:
    """(structural path, layer entry) for every layer entry of a config, nested ones too."""
    if not isinstance(model_config, dict):
        return
    top = top_config(model_config)
    yield from _walk(top, "", 0, top=True)


def _walk(entry: dict, path: str, depth: int, top: bool = False) -> Iterator[tuple[str, dict]]:
    if depth > MAX_DEPTH or not isinstance(entry, dict):
        return
    if not top:
        yield path, entry
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    if isinstance(cfg.get("layers"), list):
        for it in cfg["layers"]:
            if isinstance(it, dict):
                name = layer_name(it) or "?"
                yield from _walk(it, f"{path}/{name}" if path else name, depth + 1)
    for key in ("layer", "backward_layer", "cell"):
        sub = cfg.get(key)
        if isinstance(sub, dict) and "class_name" in sub:
            name = layer_name(sub) or key
            yield from _walk(sub, f"{path}/{name}" if path else name, depth + 1)


def _custom_origin(entry: dict) -> str | None:
    """Why an entry is a custom object (``module my_pkg.layers``), or None for built-ins."""
    module = entry.get("module")
    registered = entry.get("registered_name")
    cls = str(entry.get("class_name", ""))
    if isinstance(module, str) and module and module.split(".")[0] not in BUILTIN_PACKAGES:
        return f"module {module}"
    if isinstance(registered, str) and registered and ">" in registered:
        return f"registered as {registered}"
    if ">" in cls:
        return f"registered as {cls}"
    return None


@rule(
    "CFG001",
    "lambda-layer",
    Severity.INFO,
    Scope.MODEL,
    "{path}: Lambda layer: its Python code is stored in the config and runs when the model is "
    "loaded with safe_mode=False (not evaluated by ckptscan)",
    "Replace the Lambda with a registered custom layer or built-in ops; load untrusted files "
    "with safe_mode=True.",
    category="config",
)
def lambda_layer(ctx: ModelContext) -> Iterator[Hit]:
    """The model config contains a ``Lambda`` layer.

    ## What it does
    Lists every ``Lambda`` layer in the config (nested models included). ckptscan only
    reads the JSON; the stored function is never deserialised or run.

    ## Why is this bad?
    A Lambda layer stores Python bytecode (or source) in the config. Loading the model
    with ``safe_mode=False`` executes it: from an untrusted file that is arbitrary code.
    It is also not portable across Python versions.

    ## Example
    ``preprocess: Lambda layer: its Python code is stored in the config …``

    ## Fix
    Use built-in layers or a registered custom layer class; keep ``safe_mode=True``.

    ## Known problems
    Informational; weights are scanned as usual.
    """
    for path, entry in walk_layers(ctx.model_config):
        if entry.get("class_name") == "Lambda":
            yield Hit(path, "", {"path": path})


@rule(
    "CFG002",
    "custom-object",
    Severity.INFO,
    Scope.MODEL,
    "{path}: custom class {cls} ({origin}): loading needs that code (not evaluated by ckptscan)",
    "Make sure the defining package is trusted and installed where the model is loaded.",
    category="config",
)
def custom_object(ctx: ModelContext) -> Iterator[Hit]:
    """A layer in the config comes from a custom (non-Keras) module.

    ## What it does
    Reports layer entries whose ``module`` is outside Keras (``keras``, ``tf_keras``,
    ``tensorflow``) or whose ``registered_name`` / class name has the ``package>Name``
    form of a registered custom object.

    ## Why is this bad?
    Loading the model imports and runs that module's code: the file is only as
    trustworthy as the package, and it cannot be loaded where the package is missing.
    ckptscan names the variables of such layers by position or heuristics.

    ## Example
    ``backbone/attn: custom class MyAttention (module my_project.layers): loading needs that code``

    ## Fix
    Install the defining package from a trusted source; prefer built-in layers.

    ## Known problems
    Legacy (tf-keras ``.h5``) configs carry no module name, so an unregistered custom
    class there is only recognised by the ``package>Name`` form.
    """
    for path, entry in walk_layers(ctx.model_config):
        origin = _custom_origin(entry)
        if origin:
            yield Hit(path, "", {"path": path, "cls": str(entry.get("class_name", "?")), "origin": origin})
