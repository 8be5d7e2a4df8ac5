"""Malformed-input kit shared by the hostile/fuzz tests and ``benchmarks/fuzz.py``.

* :func:`seed_files` — the real fixtures every mutation starts from.
* :func:`truncations`, :func:`bit_flips`, :func:`wrong_magic` — deterministic mutations.
* :class:`Worker` — one long-lived ``ckptscan`` process under the CLI's own memory cap
  (:func:`ckptscan.runtime.memory.apply_memory_cap`, :data:`WORKER_MEMORY`) that runs CLI commands
  in-process (``ckptscan.cli.main``) and reports, per input: exit code, stdout, stderr
  (Python-level *and* file-descriptor level, so an HDF5 diagnostic printed by C code would
  show), wall time, the peak RSS of that input alone (``peak_rss``; Linux resets the
  high-water mark per input through ``/proc/self/clear_refs``), the worker's own peak over
  its life so far (``maxrss``), and the file's sha256 before and after. A hang past the
  per-input deadline kills the worker and fails.
* :func:`check_result` — the contract every hostile input must meet.

Run as ``python tests/hostile.py --worker`` it is the worker itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("HOSTILE_FIXTURES", ROOT / "fixtures"))

#: Memory cap of the worker (``--max-memory``, the CLI's mechanism); far above what a
#: healthy small file needs (< 250 MiB), far below what an unbounded allocation (a shape
#: bomb read, libhdf5's allocation loop on tests/data/hdf5_alloc_bomb.weights.h5) would take.
WORKER_MEMORY = 768 << 20
#: Every input's peak RSS must stay below this (the cap plus its cleanup reserve, 1 GiB).
RSS_BOUND = 1 << 30
#: The reason of a file that hits the worker's cap inside libhdf5.
BOMB_REASON = "memory limit of 768 MiB exceeded while reading (--max-memory)"
#: Committed fuzzer finds on which libhdf5 allocates without end (see tests/data/README.md).
ALLOC_BOMBS = (ROOT / "tests" / "data" / "hdf5_alloc_bomb.weights.h5", ROOT / "tests" / "data" / "hdf5_btree_loop.keras")
#: Levels of the deepest group chains built (libhdf5's recursive H5Lvisit overflowed the
#: C stack at ~10,000).
DEEP_LEVELS = 12_000
#: Wall-clock limit per input (the CLI's own ``--timeout`` is set below it).
INPUT_DEADLINE = 30.0  # > CLI_TIMEOUT + watchdog.HARD_GRACE: a hard stop is seen as such
CLI_TIMEOUT = 15

LINE = re.compile(r"^ckptscan: error: (?P<file>.+?): (?P<reason>.+)$")


# --- seeds ---------------------------------------------------------------------------

def seed_files() -> dict[str, Path]:
    """Real fixtures of every layout (name → path); sharded sets as their index."""
    want = {
        "keras": FIXTURES / "k3" / "seed.keras",
        "weights_h5": FIXTURES / "k3" / "seed.weights.h5",
        "legacy_h5": FIXTURES / "k3" / "seed_legacy.h5",
        "sharded": FIXTURES / "k3" / "seed_sharded.weights.json",
        "bf16_keras": FIXTURES / "k3" / "bf16.keras",
        # a TensorFlow-format checkpoint (tf-keras save_weights: object graph, float16): its
        # .index and data shard are mutated apart (the tfbundle reader, issue 14)
        "tf_ckpt": FIXTURES / "tfckpt" / "mixed16_sw" / "ckpt.index",
    }
    tf2 = FIXTURES / "tf2"
    for suffix, key in ((".keras", "tf2_keras"), (".h5", "tf2_h5")):
        found = sorted(p for p in tf2.glob(f"*{suffix}") if p.is_file())
        found.sort(key=lambda p: p.stat().st_size)
        assert found, f"no committed fixture fixtures/tf2/*{suffix}"
        want[key] = found[0]
    missing = sorted(str(v) for v in want.values() if not v.exists())
    assert not missing, f"committed fixtures missing (renamed or deleted?): {missing}"
    return want


def has_shards(path: Path) -> bool:
    """True for a seed read with companion files: a sharded index (``.weights.json``) or a
    TensorFlow ``.index`` (its data shards)."""
    return path.name.endswith((".weights.json", ".index"))


def shard_files(index: Path) -> list[Path]:
    """The shard files named by a sharded index, or the data shards of a TensorFlow ``.index``."""
    if index.name.endswith(".index"):
        prefix = index.name[: -len(".index")]
        return sorted(p for p in index.parent.glob(glob_escape(prefix) + ".data-*") if p.is_file())
    doc = json.loads(index.read_text())
    names: list[str] = []
    for v in doc["weight_map"].values():
        for n in [v] if isinstance(v, str) else v:
            if n not in names:
                names.append(n)
    return [index.parent / n for n in names]


def glob_escape(name: str) -> str:
    """``name`` with glob characters escaped."""
    import glob

    return glob.escape(name)


def copy_seed(seed: Path, dest_dir: Path, name: str | None = None) -> Path:
    """Copy a seed (and its shards) into ``dest_dir``; returns the new main path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if has_shards(seed):
        for shard in shard_files(seed):
            shutil.copyfile(shard, dest_dir / shard.name)
    out = dest_dir / (name or seed.name)
    shutil.copyfile(seed, out)
    return out


# --- mutations -------------------------------------------------------------------------

def truncation_offsets(size: int) -> list[int]:
    """Offsets that cut every region of a file: headers, middle, the very end."""
    fixed = [1, 4, 8, 64, 511, 512, 1024, 4096]
    frac = [int(size * f) for f in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)]
    tail = [size - 1, size - 22, size - 100, size - 1000]
    return sorted({o for o in fixed + frac + tail if 0 < o < size})


def flip_bits(data: bytes, rng: random.Random, flips: int) -> bytes:
    """``data`` with ``flips`` random bits inverted."""
    buf = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def mutate_struct(data: bytes, rng: random.Random) -> bytes:
    """A random structural mutation: flips, overwrite a run, cut/duplicate a slice."""
    buf = bytearray(data)
    op = rng.randrange(5)
    if op == 0:
        return flip_bits(data, rng, rng.choice([1, 2, 4, 16, 64]))
    if op == 1:  # overwrite a run with a constant (0x00 / 0xff) or random bytes
        i, n = rng.randrange(len(buf)), rng.choice([1, 4, 8, 64])
        fill = rng.choice([b"\x00", b"\xff", None])
        chunk = bytes(rng.randrange(256) for _ in range(n)) if fill is None else fill * n
        buf[i : i + n] = chunk[: len(buf) - i]
        return bytes(buf)
    if op == 2:  # delete a slice (shifts every later offset)
        i = rng.randrange(len(buf))
        del buf[i : i + rng.choice([1, 8, 512])]
        return bytes(buf)
    if op == 3:  # duplicate a slice
        i = rng.randrange(len(buf))
        buf[i:i] = buf[i : i + rng.choice([1, 8, 512])]
        return bytes(buf)
    # an 8-byte field set to a huge value (sizes, addresses, lengths)
    i = rng.randrange(max(1, len(buf) - 8))
    buf[i : i + 8] = rng.choice([b"\xff" * 8, (1 << 40).to_bytes(8, "little"), (2**63 - 1).to_bytes(8, "little")])
    return bytes(buf)


def wrong_magic(data: bytes, name: str = "") -> list[bytes]:
    """The file with its signature damaged in two ways (a TensorFlow ``.index`` ends with
    its magic; a TensorFlow data shard has none: no variant)."""
    if name.endswith(".index"):
        return [data[:-8] + b"\x00" * 8, data[:-2] + b"X" + data[-1:]]
    if re.search(r"\.data-\d{5}-of-\d{5}$", name):
        return []
    return [b"\x00" * 8 + data[8:], data[:1] + b"X" + data[2:]]


def mutated_corpus(tmp: Path, flips_per_seed: int = 12, seed: int = 1234) -> list[tuple[str, Path]]:
    """A deterministic set of broken copies of every seed: ``(label, path)``.

    For a sharded set, the index and one shard are each mutated (the other files copied);
    for a TensorFlow checkpoint, the ``.index`` and its data shard.
    """
    rng = random.Random(seed)
    out: list[tuple[str, Path]] = []
    for key, src in seed_files().items():
        targets = [src]
        if has_shards(src):
            shards = shard_files(src)
            targets.append(shards[1] if len(shards) > 1 else shards[0])
        for target in targets:
            data = target.read_bytes()
            variants: list[tuple[str, bytes]] = []
            variants += [(f"trunc{o}", data[:o]) for o in truncation_offsets(len(data))]
            variants += [(f"magic{i}", d) for i, d in enumerate(wrong_magic(data, target.name))]
            variants += [(f"mut{i}", mutate_struct(data, rng)) for i in range(flips_per_seed)]
            for label, blob in variants:
                d = tmp / f"{key}-{target.name}-{label}"
                main = copy_seed(src, d)
                (d / target.name).write_bytes(blob)
                out.append((f"{key}:{target.name}:{label}", main))
    return out


# --- crafted hostile files -----------------------------------------------------------------

class Case:
    """One hand-made hostile file and the exact reason ckptscan must give.

    ``reason`` None means the file is odd but legitimate: any command may read it
    (exit 0/1) and must not crash.
    """

    def __init__(self, name: str, path: Path, reason: str | None, files: tuple = ()):
        self.name, self.path, self.reason, self.files = name, Path(path), reason, files

    def __repr__(self) -> str:
        return f"Case({self.name})"


def rezip(src: Path, dst: Path, replace: dict | None = None, drop: tuple = (), add: dict | None = None,
          compress: dict | None = None) -> Path:
    """Rewrite a .keras zip: replace/drop/add members, choose per-member compression."""
    import zipfile

    replace, add, compress = replace or {}, add or {}, compress or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = replace.get(info.filename, zin.read(info.filename))
            zout.writestr(info.filename, data, compress_type=compress.get(info.filename, zipfile.ZIP_STORED))
        for name, data in add.items():
            zout.writestr(name, data, compress_type=compress.get(name, zipfile.ZIP_STORED))
    return dst


def first_v3_dataset(h5) -> str:
    """Path of the first ``…/vars/<i>`` dataset of a Keras 3 weights file."""
    import h5py

    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and re.search(r"/vars/\d+$", "/" + name) and not name.startswith("optimizer"):
            found.append("/" + name)
            return True
        return None

    h5.visititems(visit)
    return found[0]


def first_legacy_dataset(h5) -> str:
    """Path of the first weight dataset listed in a legacy file's ``weight_names``."""
    group = h5["model_weights"] if "model_weights" in h5 else h5
    for lname in group.attrs["layer_names"]:
        lname = lname.decode() if isinstance(lname, bytes) else lname
        names = group[lname].attrs.get("weight_names", [])
        if len(names):
            wn = names[0].decode() if isinstance(names[0], bytes) else names[0]
            return f"{group.name.rstrip('/')}/{lname}/{wn}"
    raise AssertionError("no weight in legacy file")


def _regroup(f, path: str):
    """Re-create group ``path`` as a new-style object (dense attribute storage allowed)."""
    old = f[path]
    tmp_name = path.rstrip("/") + "__new"
    new = f.create_group(tmp_name)
    for key in list(old.keys()):
        f.move(f"{path}/{key}", f"{tmp_name}/{key}")
    for k, v in old.attrs.items():
        new.attrs[k] = v
    del f[path]
    f.move(tmp_name, path)
    return f[path]


def _edit_h5(src: Path, dst: Path, edit) -> Path:
    """Copy an HDF5 file and apply ``edit(h5py.File, dataset_path)`` to the copy."""
    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+", libver="latest") as f:
        ds = first_legacy_dataset(f) if "layer_names" in f.attrs or "model_weights" in f else first_v3_dataset(f)
        edit(f, ds)
    return dst


def _keras_with_h5(seed_keras: Path, dst: Path, edit) -> Path:
    """A .keras whose model.weights.h5 was edited by ``edit(f, ds)``."""
    import zipfile

    raw = dst.with_suffix(".inner.h5")
    with zipfile.ZipFile(seed_keras) as z:
        raw.write_bytes(z.read("model.weights.h5"))
    tmp = dst.with_suffix(".edited.h5")
    _edit_h5(raw, tmp, edit)
    rezip(seed_keras, dst, replace={"model.weights.h5": tmp.read_bytes()})
    raw.unlink()
    tmp.unlink()
    return dst


def _replace(f, ds: str, make) -> None:
    """Delete dataset ``ds`` and put ``make(f, ds)`` in its place."""
    del f[ds]
    make(f, ds)


def _patch_zip_sizes(path: Path, member: str, file_size: int) -> None:
    """Overwrite a member's declared uncompressed size in the local and central headers."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    i = 0
    while True:
        i = data.find(b"PK\x03\x04", i)
        if i < 0:
            break
        n, e = struct.unpack("<HH", data[i + 26 : i + 30])
        if bytes(data[i + 30 : i + 30 + n]) == name:
            data[i + 22 : i + 26] = struct.pack("<I", file_size)
        i += 4
    i = 0
    while True:
        i = data.find(b"PK\x01\x02", i)
        if i < 0:
            break
        n = struct.unpack("<H", data[i + 28 : i + 30])[0]
        if bytes(data[i + 46 : i + 46 + n]) == name:
            data[i + 24 : i + 28] = struct.pack("<I", file_size)
        i += 4
    path.write_bytes(bytes(data))


def lambda_payload(marker: Path) -> str:
    """Base64 of a marshalled function that creates ``marker`` (how Keras stores lambdas)."""
    import base64
    import marshal

    src = f"def payload(x):\n    open({str(marker)!r}, 'w').write('executed')\n    return x\n"
    ns: dict = {}
    exec(compile(src, "<payload>", "exec"), ns)  # noqa: S102 - builds the hostile payload
    return base64.b64encode(marshal.dumps(ns["payload"].__code__)).decode()


def lambda_keras(seed_keras: Path, dst: Path, marker: Path) -> Path:
    """A copy of ``seed_keras`` whose config also holds a Lambda layer carrying the payload."""
    import zipfile

    with zipfile.ZipFile(seed_keras) as z:
        cfg = json.loads(z.read("config.json"))
    code = lambda_payload(marker)
    lam = {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "name": "evil_lambda",
        "config": {"name": "evil_lambda", "trainable": True, "dtype": "float32",
                   "function": {"class_name": "__lambda__", "config": {"code": code, "defaults": None, "closure": None}},
                   "arguments": {}},
        "build_config": {"input_shape": [None, 4]},
        "inbound_nodes": [],
    }
    cfg.setdefault("config", {}).setdefault("layers", []).append(lam)
    return rezip(seed_keras, dst, replace={"config.json": json.dumps(cfg).encode()})


def crafted_cases(tmp: Path) -> list[Case]:
    """Every hand-made hostile file, built from the real fixtures into ``tmp``."""
    import h5py
    import numpy as np
    import zipfile

    seeds = seed_files()
    keras_seed, v3_seed, legacy_seed = seeds["keras"], seeds["weights_h5"], seeds["legacy_h5"]
    tmp.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def case(name, reason, build, suffix=".weights.h5"):
        p = tmp / f"{name}{suffix}"
        out = build(p)
        cases.append(Case(name, out if isinstance(out, Path) else p, reason))

    # --- not an archive / wrong layout
    case("empty", "empty file", lambda p: p.write_bytes(b""), ".keras")
    case("random_bytes", "not a Keras weight archive (neither zip, HDF5 nor a sharded index)",
         lambda p: p.write_bytes(random.Random(0).randbytes(4096)), ".keras")
    case("wrong_magic_h5", "not a Keras weight archive (neither zip, HDF5 nor a sharded index)",
         lambda p: p.write_bytes(b"\x89HDX" + v3_seed.read_bytes()[4:]))
    case("wrong_magic_zip", "not a Keras weight archive (neither zip, HDF5 nor a sharded index)",
         lambda p: p.write_bytes(b"PX" + keras_seed.read_bytes()[2:]), ".keras")

    def non_keras(p):
        with h5py.File(p, "w") as f:
            f["data"] = np.arange(10)
    case("hdf5_not_keras",
         "HDF5 file, but not a Keras weight archive (no layer_names, model_weights or vars)", non_keras)

    def no_vars(p):
        with h5py.File(p, "w") as f:
            f.create_group("layers/dense")
    case("hdf5_no_vars", "HDF5 file holds no Keras variables (no 'vars' groups)", no_vars)

    # --- .keras zips
    case("keras_without_weights", "zip archive without model.weights.h5",
         lambda p: rezip(keras_seed, p, drop=("model.weights.h5",)), ".keras")
    case("keras_without_config", "zip archive without config.json",
         lambda p: rezip(keras_seed, p, drop=("config.json",)), ".keras")
    case("keras_npz_weights", "weights are pickled model.weights.npz; not analysed (never unpickled)",
         lambda p: rezip(keras_seed, p, drop=("model.weights.h5",), add={"model.weights.npz": b"PK\x05\x06" + b"\0" * 18}),
         ".keras")

    def compressed_truncated(p):
        with zipfile.ZipFile(keras_seed) as z:
            inner = z.read("model.weights.h5")
        rezip(keras_seed, p, replace={"model.weights.h5": inner[: len(inner) // 2]},
              compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
    case("keras_compressed_truncated_h5", "truncated HDF5 file (data ends before the structures it declares)",
         compressed_truncated, ".keras")
    case("keras_traversal_member", "zip member name '../../etc/passwd' points outside the archive (path traversal)",
         lambda p: rezip(keras_seed, p, add={"../../etc/passwd": b"root:x:0:0"}), ".keras")
    case("keras_absolute_member", "zip member name '/tmp/ckptscan-evil' points outside the archive (path traversal)",
         lambda p: rezip(keras_seed, p, add={"/tmp/ckptscan-evil": b"x"}), ".keras")

    def duplicate(p):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rezip(keras_seed, p, add={"config.json": b"{}"})
    case("keras_duplicate_config", "zip archive has 2 members named config.json (ambiguous)", duplicate, ".keras")

    def bomb_declared(p):
        rezip(keras_seed, p, compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
        _patch_zip_sizes(p, "model.weights.h5", 0xFFFFFFF0)
    with zipfile.ZipFile(keras_seed) as z:
        csize = None
    tmpz = tmp / "_probe.keras"
    rezip(keras_seed, tmpz, compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
    with zipfile.ZipFile(tmpz) as z:
        csize = z.getinfo("model.weights.h5").compress_size
    tmpz.unlink()
    case("keras_zip_bomb_declared",
         f"zip member model.weights.h5 expands to {0xFFFFFFF0} bytes from {csize} (zip bomb)", bomb_declared, ".keras")

    def bomb_real(p):  # declares its true small size but inflates past it: zipfile stops, CRC fails
        big = b"\0" * (64 << 20)
        rezip(keras_seed, p, replace={"model.weights.h5": big}, compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
        _patch_zip_sizes(p, "model.weights.h5", 4096)
    case("keras_zip_bomb_lying_size", "corrupt zip archive (Bad CRC-32 for file 'model.weights.h5')", bomb_real, ".keras")

    def stored_oversize(p):
        rezip(keras_seed, p)
        _patch_zip_sizes(p, "model.weights.h5", 0x7FFFFFFF)
    case("keras_stored_member_oversize", None, stored_oversize, ".keras")  # reason filled in below

    def config_json_huge(p):
        rezip(keras_seed, p)
        _patch_zip_sizes(p, "config.json", 0xFFFFFFF0)
    case("keras_config_declared_huge", f"zip member config.json declares {0xFFFFFFF0} bytes (too large)",
         config_json_huge, ".keras")
    case("keras_config_invalid", "invalid JSON (Expecting property name enclosed in double quotes, line 1 column 2)",
         lambda p: rezip(keras_seed, p, replace={"config.json": b"{"}), ".keras")
    case("keras_config_not_object", "config.json is not a JSON object",
         lambda p: rezip(keras_seed, p, replace={"config.json": b"[1, 2]"}), ".keras")
    case("keras_config_deep_recursion", "structure nested too deeply",
         lambda p: rezip(keras_seed, p, replace={"config.json": b"[" * 200000 + b"]" * 200000}), ".keras")
    case("keras_config_deep", "config.json is nested more than 200 levels deep",
         lambda p: rezip(keras_seed, p, replace={"config.json": b'{"a":' * 500 + b"1" + b"}" * 500}), ".keras")
    case("keras_config_huge", "zip member config.json declares 67108866 bytes (too large)",
         lambda p: rezip(keras_seed, p, replace={"config.json": b" " * (64 << 20) + b"{}"},
                         compress={"config.json": zipfile.ZIP_DEFLATED}), ".keras")

    # --- HDF5 links and storage pointing outside the file (v3, inside .keras, legacy)
    other = tmp / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.ones(4, dtype="float32")

    def soft(f, ds):
        _replace(f, ds, lambda f, ds: f.__setitem__(ds, h5py.SoftLink("/" + ds.strip("/").split("/")[0])))

    def external_link(f, ds):
        _replace(f, ds, lambda f, ds: f.__setitem__(ds, h5py.ExternalLink("/etc/passwd", "/x")))

    def external_storage(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, shape=(64,), dtype="float32",
                                                        external=[("/etc/passwd", 0, 256)]))

    def virtual(f, ds):
        def make(f, ds):
            layout = h5py.VirtualLayout(shape=(4,), dtype="float32")
            layout[:] = h5py.VirtualSource(str(other), "x", shape=(4,))
            f.create_virtual_dataset(ds, layout)
        _replace(f, ds, make)

    def virtual_passwd(f, ds):
        def make(f, ds):
            layout = h5py.VirtualLayout(shape=(4,), dtype="float32")
            layout[:] = h5py.VirtualSource("/etc/passwd", "x", shape=(4,))
            f.create_virtual_dataset(ds, layout)
        _replace(f, ds, make)

    def shape_bomb_chunked(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, shape=(10**6, 10**6), dtype="float32", chunks=(1024, 1024)))

    def shape_bomb_gzip(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, shape=(10**6, 10**6), dtype="float32", chunks=(1024, 1024),
                                                        compression="gzip"))

    def shape_bomb_contiguous(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, shape=(10**6, 10**6), dtype="float32"))

    def huge_chunks(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, shape=(16384, 8192), dtype="float32", chunks=(16384, 8192)))

    def dtype_string(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, data=np.array(["a", "b"], dtype=h5py.string_dtype())))

    def dtype_fixed_string(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, data=np.array([b"abc", b"def"])))

    def dtype_compound(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, data=np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])))

    def dtype_vlen(f, ds):
        def make(f, ds):
            d = f.create_dataset(ds, shape=(2,), dtype=h5py.vlen_dtype("float32"))
            d[0] = np.ones(3, dtype="float32")
        _replace(f, ds, make)

    def dtype_int(f, ds):
        _replace(f, ds, lambda f, ds: f.create_dataset(ds, data=np.arange(6, dtype="int32").reshape(2, 3)))

    def deep_groups(f, ds):
        g = f.require_group(ds.rsplit("/vars/", 1)[0])
        for i in range(80):
            g = g.create_group(f"g{i}")

    def deep_groups_many(f, ds):
        # 12,000 levels: libhdf5's H5Lvisit recurses once per level and overflowed the C
        # stack (a segfault, the process gone) before ckptscan looked at any depth
        f.require_group(ds.rsplit("/vars/", 1)[0]).create_group("/".join(f"g{i}" for i in range(DEEP_LEVELS)))

    def hard_cycle(f, ds):
        g = f[ds.rsplit("/vars/", 1)[0]]
        g["loop"] = g

    def huge_name_attr(f, ds):
        _regroup(f, ds.rsplit("/", 1)[0]).attrs.create("name", np.zeros(1_100_000, dtype="S1"))

    def link_name(ds):
        return ds

    edits = [
        ("soft_link", soft, lambda ds: f"{ds} is a soft link to /{ds.strip('/').split('/')[0]}; links are never followed"),
        ("external_link", external_link, lambda ds: f"{ds} is an external link to /etc/passwd:/x; links are never followed"),
        ("external_storage", external_storage, lambda ds: f"{ds} stores its data in external file '/etc/passwd'; never followed"),
        ("virtual_other_h5", virtual, lambda ds: f"{ds} is a virtual dataset; links out of the file are never followed"),
        ("virtual_passwd", virtual_passwd, lambda ds: f"{ds} is a virtual dataset; links out of the file are never followed"),
        ("shape_bomb_chunked", shape_bomb_chunked,
         lambda ds: f"{ds} declares 4000000000000 bytes (shape (1000000, 1000000)) over 0 stored (shape bomb)"),
        ("shape_bomb_gzip", shape_bomb_gzip, lambda ds: f"{ds} expands 4000000000000x when decompressed (shape bomb)"),
        ("shape_bomb_contiguous", shape_bomb_contiguous,
         lambda ds: f"{ds} declares 4000000000000 bytes (shape (1000000, 1000000)) but stores none (shape bomb)"),
        ("huge_chunks", huge_chunks, lambda ds: f"{ds} has chunks of 536870912 bytes (too large)"),
        ("dtype_vlen_string", dtype_string, lambda ds: f"{ds} has dtype string, not a numeric weight"),
        ("dtype_fixed_string", dtype_fixed_string, lambda ds: f"{ds} has dtype string, not a numeric weight"),
        ("dtype_compound", dtype_compound, lambda ds: f"{ds} has dtype compound, not a numeric weight"),
        ("dtype_vlen_float", dtype_vlen, lambda ds: f"{ds} has dtype variable-length, not a numeric weight"),
        ("dtype_int", dtype_int, None),
    ]
    def deep_reason(ds):
        parts = ds.rsplit("/vars/", 1)[0].strip("/").split("/")
        parts += [f"g{i}" for i in range(64 - len(parts) + 1)]
        return "/" + "/".join(parts[:3]) + "/…/" + parts[-1] + ": groups nested more than 64 deep"

    v3_only = [
        ("deep_groups", deep_groups, deep_reason),
        ("deep_groups_12000", deep_groups_many, deep_reason),
        ("hard_link_cycle", hard_cycle,
         lambda ds: f"{ds.rsplit('/vars/', 1)[0]}/loop is a group linked more than once (hard-link cycle)"),
        ("huge_attribute", huge_name_attr,
         lambda ds: f"attribute {ds.rsplit('/', 1)[0]}@name declares 1100000 elements of 1 bytes (too large)"),
    ]
    import h5py as _h5

    with _h5.File(v3_seed, "r") as f:
        v3_ds = first_v3_dataset(f)
    with _h5.File(legacy_seed, "r") as f:
        legacy_ds = first_legacy_dataset(f)
    with zipfile.ZipFile(keras_seed) as z:
        (tmp / "_inner.h5").write_bytes(z.read("model.weights.h5"))
    with _h5.File(tmp / "_inner.h5", "r") as f:
        keras_ds = first_v3_dataset(f)
    (tmp / "_inner.h5").unlink()
    for name, edit, reason in edits + v3_only:
        cases.append(Case(f"v3_{name}", _edit_h5(v3_seed, tmp / f"v3_{name}.weights.h5", edit),
                          reason(v3_ds) if reason else None))
        cases.append(Case(f"keras_{name}", _keras_with_h5(keras_seed, tmp / f"keras_{name}.keras", edit),
                          reason(keras_ds) if reason else None))
    for name, edit, reason in edits:
        cases.append(Case(f"legacy_{name}", _edit_h5(legacy_seed, tmp / f"legacy_{name}.h5", edit),
                          reason(legacy_ds) if reason else None))

    def legacy_huge_layer_names(p):
        shutil.copyfile(legacy_seed, p)
        with h5py.File(p, "r+", libver="latest") as f:
            g = _regroup(f, "model_weights") if "model_weights" in f else f
            del g.attrs["layer_names"]
            g.attrs.create("layer_names", np.zeros(1_100_000, dtype="S1"))
    deep_path = "/".join(f"g{i}" for i in range(DEEP_LEVELS))

    def legacy_deep_weight_name(p):
        # a weight name 12,000 groups deep, listed in weight_names and really there
        shutil.copyfile(legacy_seed, p)
        with h5py.File(p, "r+", libver="latest") as f:
            top = f["model_weights"] if "model_weights" in f else f
            layer = next(top[n] for n in top.attrs["layer_names"] if len(top[n].attrs.get("weight_names", [])))
            layer.create_dataset(f"{deep_path}/kernel:0", data=np.ones(2, "float32"))
            names = [n.decode() if isinstance(n, bytes) else n for n in layer.attrs["weight_names"]]
            layer = _regroup(f, layer.name)
            layer.attrs["weight_names"] = np.array([n.encode() for n in names + [f"{deep_path}/kernel:0"]])

    def legacy_deep_unlisted(p):
        # the same depth in groups no weight name lists: the legacy reader never goes there
        shutil.copyfile(legacy_seed, p)
        with h5py.File(p, "r+") as f:
            f.create_group(deep_path)

    case("legacy_deep_weight_name", "g0/g1/g2/…/kernel:0: groups nested more than 64 deep", legacy_deep_weight_name, ".h5")
    case("legacy_deep_unlisted", None, legacy_deep_unlisted, ".h5")

    grp = "/model_weights" if "model_weights" in h5py.File(legacy_seed, "r") else ""
    case("legacy_huge_layer_names",
         f"attribute {grp}@layer_names declares 1100000 elements of 1 bytes (too large)", legacy_huge_layer_names, ".h5")

    # --- sharded sets
    sharded = seeds.get("sharded")
    if sharded is not None:
        def shard_index(mutate):
            def build(p):
                d = tmp / p.name.replace(".weights.json", "")
                idx = copy_seed(sharded, d)
                doc = json.loads(idx.read_text())
                mutate(doc)
                idx.write_text(json.dumps(doc))
                return idx
            return build

        def traversal(doc):
            k = next(iter(doc["weight_map"]))
            doc["weight_map"][k] = ["../../etc/passwd"]

        def absolute(doc):
            k = next(iter(doc["weight_map"]))
            doc["weight_map"][k] = "/etc/passwd"

        def missing(doc):
            k = next(iter(doc["weight_map"]))
            doc["weight_map"][k] = "nope_00009.weights.h5"

        def no_map(doc):
            doc.pop("weight_map")
            doc["weights"] = {}

        case("sharded_traversal", "shard name '../../etc/passwd' points outside the index's folder (path traversal)",
             shard_index(traversal), ".weights.json")
        case("sharded_absolute", "shard name '/etc/passwd' points outside the index's folder (path traversal)",
             shard_index(absolute), ".weights.json")
        case("sharded_missing_shard", "shard nope_00009.weights.h5 is missing", shard_index(missing), ".weights.json")
        case("sharded_no_weight_map", "JSON file that is not a sharded Keras weights index (no weight_map)",
             shard_index(no_map), ".weights.json")

        def shard_truncated(p):
            d = tmp / "sharded_truncated_shard"
            idx = copy_seed(sharded, d)
            s1 = d / shard_files(idx)[1].name
            s1.write_bytes(s1.read_bytes()[:5000])
            return idx
        first_shard = shard_files(sharded)[1].name
        shard_size = shard_files(sharded)[1].stat().st_size
        case("sharded_truncated_shard",
             f"shard {first_shard}: truncated: HDF5 end-of-file address {shard_size} > file size 5000",
             shard_truncated, ".weights.json")

    # --- libhdf5 allocating without end (fuzzer finds): the memory cap ends them
    bomb_v3, bomb_keras = ALLOC_BOMBS
    case("v3_hdf5_alloc_bomb", BOMB_REASON, lambda p: shutil.copyfile(bomb_v3, p))
    case("keras_hdf5_alloc_bomb", BOMB_REASON, lambda p: shutil.copyfile(bomb_keras, p), ".keras")
    case("keras_compressed_hdf5_alloc_bomb", BOMB_REASON,  # inflated to a temporary file first
         lambda p: rezip(keras_seed, p, replace={"model.weights.h5": bomb_v3.read_bytes()},
                         compress={"model.weights.h5": zipfile.ZIP_DEFLATED}), ".keras")

    # fill in reasons that depend on the built file
    for c in cases:
        if c.name == "keras_stored_member_oversize":
            c.reason = ("zip member model.weights.h5 is stored but declares 2147483647 bytes from "
                        f"{zipfile.ZipFile(keras_seed).getinfo('model.weights.h5').compress_size}")
    return cases


# --- the worker --------------------------------------------------------------------------

def sha256(path: Path) -> str | None:
    """Digest of a file, None if absent."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def snapshot(path: Path) -> dict:
    """What must not change: the input's bytes (a sharded set: index and shards) and
    the names in its folder (a command must leave no temporary or journal file)."""
    path = Path(path)
    files = [path]
    if path.name.endswith((".json", ".index")) and path.is_file():
        try:
            files += shard_files(path)
        except Exception:  # a mutated index: its folder's .h5 files then
            files += sorted(path.parent.glob("*.h5"))
    folder = path.parent if path.parent.is_dir() else None
    return {
        "digests": {str(f): sha256(f) for f in files},
        "names": sorted(os.listdir(folder)) if folder else [],
    }


class WorkerDied(AssertionError):
    """The worker process crashed or hung (an input broke a limit)."""


class Worker:
    """A ckptscan process that runs ``main(argv)`` per request, under the CLI's memory cap."""

    def __init__(self, memory: int = WORKER_MEMORY):
        env = dict(os.environ, PYTHONPATH=str(ROOT), HOSTILE_MEMORY=str(memory))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=str(ROOT), text=True, bufsize=1,
        )
        self.last: list[str] | None = None
        ready = self._read(60)
        assert ready.get("ready"), ready
        self.commands: dict[str, list[str]] = ready["commands"]

    def argv(self, command: str, path: Path | str, *extra: str) -> list[str]:
        """``COMMAND [--timeout N] EXTRA PATH`` (``--timeout`` when the command has it)."""
        opts = self.commands[command]
        timeout = ["--timeout", str(CLI_TIMEOUT)] if "--timeout" in opts else []
        return [command, *timeout, *extra, str(path)]

    def _read(self, deadline: float) -> dict:
        r, _, _ = select.select([self.proc.stdout], [], [], deadline)
        if not r:
            self.close()
            raise WorkerDied(f"no answer within {deadline:g} s for {self.last}")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            raise WorkerDied(f"worker died on {self.last}: rc={self.proc.wait()} {err[-2000:]}")
        return json.loads(line)

    def run(self, argv: list[str], digest: str | Path | None = None, deadline: float = INPUT_DEADLINE) -> dict:
        """Run ``ckptscan ARGV`` in the worker; ``digest`` is hashed before and after."""
        self.last = list(map(str, argv))
        self.proc.stdin.write(json.dumps({"argv": self.last, "digest": str(digest) if digest else None}) + "\n")
        self.proc.stdin.flush()
        return self._read(deadline)

    def close(self) -> None:
        """Stop the worker."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _worker_main() -> None:  # pragma: no cover - runs in the subprocess
    import io
    import resource

    from ckptscan.runtime import memory as limits

    limit = int(os.environ.get("HOSTILE_MEMORY", WORKER_MEMORY))
    assert limits.apply_memory_cap(limit) == limit, "the memory cap could not be applied"
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sink = tempfile.TemporaryFile()  # fd 1 and 2 of the worker: catches C-level output
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    from ckptscan import cli
    from typer.main import get_command

    commands = {name: sorted(o for p in cmd.params for o in getattr(p, "opts", []) if o.startswith("--"))
                for name, cmd in get_command(cli.app).commands.items()}
    out.write(json.dumps({"ready": True, "commands": commands}) + "\n")
    # the worker's own high-water mark over its life: VmHWM, per input (reset between inputs)
    # and before the first. Not ru_maxrss: Linux carries the parent's high-water mark across
    # exec, so that would count the pytest process that started the worker.
    life_peak = _peak_rss()
    for line in sys.stdin:
        req = json.loads(line)
        before = snapshot(req["digest"]) if req["digest"] else None
        py_out, py_err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = py_out, py_err
        sink.seek(0)
        sink.truncate()
        _reset_peak_rss()
        t0 = time.monotonic()
        crash = None
        try:
            rc = cli.main(req["argv"])
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a crash
            import traceback

            rc, crash = -1, "".join(traceback.format_exception(exc))
        elapsed = time.monotonic() - t0
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        sink.seek(0)
        fd_text = sink.read().decode("utf-8", "replace")
        after = snapshot(req["digest"]) if req["digest"] else None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = _peak_rss()
        if life_peak is not None and peak is not None:
            life_peak = max(life_peak, peak)
        out.write(json.dumps({
            "rc": rc, "stdout": py_out.getvalue(), "stderr": py_err.getvalue() + fd_text, "crash": crash,
            "elapsed": elapsed, "maxrss": life_peak or rss, "peak_rss": peak or rss,
            "unchanged": before is None or before["digests"] == after["digests"],
            "leftovers": sorted(set(after["names"]) - set(before["names"])) if before else [],
        }) + "\n")


def _reset_peak_rss() -> None:  # pragma: no cover - runs in the worker
    """Reset this process's RSS high-water mark (Linux ``clear_refs`` 5); else keep it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss() -> int | None:  # pragma: no cover - runs in the worker
    """Peak RSS (bytes) since the last reset (``VmHWM``), None where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- the contract ------------------------------------------------------------------------

def check_error(res: dict, path: Path | str, paths_ok: tuple = (), summary: bool = False) -> str:
    """Assert exit 2 with exactly one ``ckptscan: error: <path>: <reason>`` line.

    Returns the reason. ``paths_ok`` lists other acceptable file names (for example
    a shard of the set named by ``path``). ``summary``: a prefix of summary lines a
    bulk command may add (lines starting ``ckptscan`` that are not ``ckptscan: error:``);
    nothing else may appear on stderr.
    """
    problems = _common_problems(res)
    lines = res["stderr"].splitlines()
    if summary:  # bulk commands end with a one-line summary ("ckptscan fix: 1 file(s): …")
        lines = [ln for ln in lines if ln.strip() and not (ln.startswith("ckptscan") and not ln.startswith("ckptscan: error:"))]
    if res["rc"] != 2:
        problems.append(f"exit {res['rc']}, expected 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, expected 1")
    m = LINE.match(lines[0]) if lines else None
    ok_files = {str(path), *map(str, paths_ok)}
    if m is None or not any(lines[0].startswith(f"ckptscan: error: {f}: ") for f in ok_files):
        problems.append("stderr line is not 'ckptscan: error: <file>: <reason>'")
    assert not problems, f"{path}: {problems}\nstderr: {res['stderr'][:3000]}\nstdout: {res['stdout'][:500]}"
    return lines[0].split(": ", 3)[-1] if m else ""


def check_sane(res: dict, path: Path | str, may_write: bool = False) -> None:
    """For input that may still be valid: no crash; exit 0/1/2; an error is one line.

    ``may_write``: the command may legitimately patch a file it fully parsed (``fix``);
    a file it refused (exit 2) must still be unchanged.
    """
    if may_write and res["rc"] != 2:
        res = dict(res, unchanged=True, leftovers=[n for n in res["leftovers"] if not n.endswith(".bak")])
    problems = _common_problems(res)
    if res["rc"] not in (0, 1, 2):
        problems.append(f"exit {res['rc']}")
    if res["rc"] == 2:
        lines = [ln for ln in res["stderr"].splitlines() if ln.startswith("ckptscan: error:")]
        if len(lines) != 1:
            problems.append(f"{len(lines)} error lines")
    assert not problems, f"{path}: {problems}\nstderr: {res['stderr'][:3000]}"


def _common_problems(res: dict) -> list[str]:
    problems = []
    if res["crash"]:
        problems.append("exception escaped main(): " + res["crash"][-1500:])
    text = res["stderr"] + res["stdout"]
    for bad in ("Traceback", "internal error", "HDF5-DIAG", "out of memory", "MemoryError"):
        if bad in text:
            problems.append(f"{bad!r} in output")
    if res["elapsed"] > CLI_TIMEOUT + 2:
        problems.append(f"took {res['elapsed']:.1f} s")
    if res.get("peak_rss", 0) >= RSS_BOUND:
        problems.append(f"peak RSS {res['peak_rss'] >> 20} MiB >= {RSS_BOUND >> 20} MiB")
    if not res["unchanged"]:
        problems.append("the input file changed")
    if res["leftovers"]:
        problems.append(f"left files behind: {res['leftovers']}")
    return problems


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker_main()


def summary_prefix(command: str) -> bool:
    """True if a command may print summary lines (``ckptscan: 1 file unreadable``,
    ``ckptscan fix: …``) besides the one error line; ``inspect`` may not."""
    return command != "inspect"
