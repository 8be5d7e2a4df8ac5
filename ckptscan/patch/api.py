"""One file: find targets, choose strategies, patch, verify (:func:`fix_file`, :func:`apply`);
the request every path of a ``fix`` shares (:class:`FixRequest`, :func:`build_request`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from .. import journal
from ..errors import CkptscanError, PatchRefusedError
from .model import FileFix, PatchPlan
from .rawio import decode, read_raw
from .strategies import (
    Options,
    Strategy,
    Target,
    Verify,
    choose,
    is_bn_stat,
    make_change,
)
from .targets import find_targets
from .writer import apply_plan, check_writable, prepare, record


@dataclass(frozen=True)
class FixRequest:
    """Everything ``fix`` needs for one file (picklable for ``--jobs``)."""

    options: Options = Options()
    ref: str | None = None
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    layer: str | None = None
    include_optimizer: bool = False
    dry_run: bool = False
    output: str | None = None
    backup: str | None = None
    """None: no backup; ``""``: ``<file>.bak``; else that path."""
    verify: str = "full"
    config: str | None = None
    lock_timeout: float = journal.LOCK_TIMEOUT
    timeout: float | None = None
    """Seconds allowed for reading and planning one file (``--timeout``); None: no limit.
    The limit never covers a write: it ends before the first byte is written."""


def _open(path: str, config: str | None):
    from ..formats import open_checkpoint

    return open_checkpoint(path, config=config)


def _unit(path: str) -> str:
    """The name ``path``'s fix locks and journals under (a TensorFlow checkpoint: its ``.index``)."""
    from ..formats import journal_unit

    return journal.unit_path(journal_unit(path))


def _locked_open(path: str, req: FixRequest, want_lock: bool):
    """Take the lock (when writing, or recovering), recover, open. Returns (lock, ckpt, note)."""
    lock = None
    note = None
    unit = _unit(path)
    if want_lock or journal.needs_recovery(unit):
        lock = journal.acquire_lock(unit, req.lock_timeout)
    try:
        if lock is not None:
            note = journal.recover_locked(unit)
        ckpt = _open(path, req.config)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock, ckpt, note


def fix_file(path: str, req: FixRequest = FixRequest()) -> FileFix:
    """Repair one checkpoint; never raises for a problem with the file (see ``status``)."""
    path = journal.unit_path(path)
    try:
        return _fix_file(path, req)
    except PatchRefusedError as exc:
        return FileFix(path, "refused", reason=exc.reason)
    except CkptscanError as exc:
        return FileFix(path, "failed", reason=exc.reason)
    except OSError as exc:
        return FileFix(path, "failed", reason=f"{exc.strerror or exc}")
    except MemoryError:  # past --max-memory outside a reader (the readers map their own)
        from ..runtime.memory import memory_exhausted, memory_reason

        memory_exhausted()
        return FileFix(path, "failed", reason=memory_reason())


def _fix_file(path: str, req: FixRequest) -> FileFix:
    from ..runtime.timeout import file_scope

    if not os.path.exists(path) and not os.path.exists(_unit(path)):  # a TF prefix names ckpt.index
        return FileFix(path, "failed", reason="no such file or directory")
    writing = not req.dry_run
    if writing and req.output is None and os.path.isfile(path) and not path.endswith(".json"):
        check_writable(path, [path])  # refuse before creating anything
    lock = None
    unit = _unit(path)  # one lock and journal per checkpoint, whichever name it was given
    if writing or journal.needs_recovery(unit):
        lock = journal.acquire_lock(unit, req.lock_timeout)
    ckpt = ref = None
    try:
        note = journal.recover_locked(unit) if lock is not None else None  # a write: not under the timeout
        notes = [note] if note else []
        # reading and planning run under --timeout (a file that sends libhdf5 into a loop
        # is stopped here, exit 2); the writes below never do
        with file_scope(req.timeout, path):
            ckpt = _open(path, req.config)
            if req.ref is not None:
                ref = _open(req.ref, None)
            targets = find_targets(ckpt, req.select, req.ignore, req.layer, req.include_optimizer)
            if not targets:
                from .explain import nothing_to_fix

                reason = nothing_to_fix(ckpt, req.select, req.ignore, req.layer, req.include_optimizer)
                return FileFix(path, "unchanged", reason=reason, format=ckpt.format, notes=tuple(notes))
            changes, unfixed = [], []
            for t in targets:
                # only a BN vector's values choose its strategy; any other tensor is not read here
                var = t.variable
                refusal = ckpt.patch_refusal(var)  # e.g. a partitioned TensorFlow variable
                if refusal is not None:
                    unfixed.append(f"{var.path}: {refusal}")
                    continue
                values = decode(read_raw(ckpt, var), var).astype(np.float64) if is_bn_stat(var) else None
                strat = choose(t, req.options, values, ref is not None)
                if strat is None:
                    unfixed.append(f"{t.variable.path}: no automatic repair for a non-BN tensor; "
                                   "use --value V or --from REF")
                    continue
                changes.append(make_change(ckpt, t, strat, req.options, ref))
            for c in changes:
                _check_healthy(path, c)
            plan = PatchPlan(path, tuple(changes))
            if req.dry_run:
                prepared = [prepare(ckpt, c) for c in plan.changes]
                return FileFix(path, "planned", format=ckpt.format,
                               changes=tuple(record(p) for p in prepared if p.changed.size),
                               unfixed=tuple(unfixed), notes=tuple(notes))
            if not changes:
                return FileFix(path, "unfixed", reason="no target has a repair", format=ckpt.format,
                               unfixed=tuple(unfixed), notes=tuple(notes))
            if not getattr(ckpt, "direct_io", True):
                raise PatchRefusedError(path, "not a local file; cannot patch in place")
        result = apply_plan(ckpt, plan, reopen=lambda p: _open(p, req.config), output=req.output,
                            backup=req.backup, verify=req.verify)
        if Verify(req.verify).rehashes_all and result.status == "fixed":
            left = _still_bad(result.output or path, req, [t for t in targets])
            unfixed += left
        status = result.status if not unfixed else "unfixed"
        return replace(result, status=status, unfixed=tuple(unfixed), notes=tuple(notes) + result.notes)
    finally:
        if ckpt is not None:
            ckpt.close()
        if ref is not None:
            ref.close()
        if lock is not None:
            lock.release()


def _check_healthy(path: str, change) -> None:
    new = np.asarray(change.new_values, dtype=np.float64)
    var = change.variable
    if not np.isfinite(new).all():
        raise PatchRefusedError(path, f"{var.path}: the {change.strategy} strategy would write non-finite values")
    if var.name == "moving_variance" and (new < 0).any():
        raise PatchRefusedError(path, f"{var.path}: the {change.strategy} strategy would write a negative variance")


def _still_bad(path: str, req: FixRequest, targets: list[Target]) -> list[str]:
    """Re-check the targeted elements in the written file."""
    from .targets import bad_elements

    left = []
    with _open(path, req.config) as ckpt:
        for t in targets:
            try:
                var = ckpt.find(t.variable.path)
            except KeyError:
                continue
            idx = bad_elements(ckpt, var)
            remaining = set(int(i) for i in idx) & set(t.indices)
            if remaining:
                left.append(f"{var.path}: {len(remaining)} targeted value(s) still bad")
    return left


def apply(plan: PatchPlan, *, output: str | None = None, backup: str | None = None, verify: str = "full",
          config: str | None = None, lock_timeout: float = journal.LOCK_TIMEOUT,
          force_rewrite: bool = False) -> FileFix:
    """Apply an explicit plan (changes name variables by :attr:`Variable.path`).

    Takes the lock, recovers an interrupted run, re-resolves each variable in the
    current file, writes, verifies. Raises :class:`CkptscanError` on refusal.
    """
    path = journal.unit_path(plan.file)
    if output is None and os.path.isfile(path) and not path.endswith(".json"):
        check_writable(path, [path])
    req = FixRequest(config=config, lock_timeout=lock_timeout)
    lock, ckpt, _ = _locked_open(path, req, True)
    try:
        changes = []
        for c in plan.changes:
            try:
                var = ckpt.find(c.variable.path)
            except KeyError:
                raise PatchRefusedError(path, f"{c.variable.path}: no such variable") from None
            changes.append(replace(c, variable=var))
        return apply_plan(ckpt, PatchPlan(path, tuple(changes)), reopen=lambda p: _open(p, config),
                          output=output, backup=backup, verify=verify, force_rewrite=force_rewrite)
    finally:
        ckpt.close()
        lock.release()


# --- many files -----------------------------------------------------------------------

def build_request(*, strategy: str | Strategy = "auto", rule_strategies: dict | None = None, ref: str | None = None,
                  value: float | None = None, clamp_min: float = 0.0, clamp_max: float | None = None,
                  whole_tensor: bool = False, select=(), ignore=(), layer: str | None = None,
                  include_optimizer: bool = False, dry_run: bool = False, output: str | None = None,
                  backup: bool | str = False, verify: str = "full", config: str | None = None,
                  lock_timeout: float = journal.LOCK_TIMEOUT, timeout: float | None = None) -> FixRequest:
    """The :class:`FixRequest` of :func:`fix`'s keyword arguments (validated: ValueError)."""
    strat = Strategy.of(strategy)
    if ref is not None and strat is Strategy.AUTO:
        strat = Strategy.FROM
    opts = Options(strategy=strat, per_rule={k: Strategy.of(v) for k, v in (rule_strategies or {}).items()},
                   value=value, clamp_min=clamp_min, clamp_max=clamp_max, whole_tensor=whole_tensor)
    verify = Verify.of(verify).value
    bk = None if backup is False or backup is None else ("" if backup is True else os.fspath(backup))
    return FixRequest(options=opts, ref=None if ref is None else os.fspath(ref), select=tuple(select),
                      ignore=tuple(ignore), layer=layer, include_optimizer=include_optimizer, dry_run=dry_run,
                      output=None if output is None else os.fspath(output), backup=bk, verify=verify,
                      config=config, lock_timeout=lock_timeout, timeout=timeout)
