"""What ``precision="auto"`` means on the running CPU, decided by measuring it.

Data flow: :func:`auto_precision` -> :func:`candidates` for this CPU: bf16 alone where the
CPU multiplies bf16 natively (AVX-512 BF16, the rule in ``_core.auto_precision``) and has no
AVX-512 VNNI int8 tile; bf16 and int8 where it has both (Zen 4, Sapphire Rapids); f32, f16
and int8 on the other SIMD levels (int8 on its VNNI tile at the AVX-512 level of Cascade
Lake / Ice Lake, else on the AVX2 one) -> the choice stored for this CPU model, SIMD level
and version in ``precision.json`` under the cache directory -> else :func:`calibrate`: the
candidates' encoders time the same short and medium prompts, interleaved, and the fastest
other one replaces the first (the most accurate) only when clearly faster (:func:`pick`);
the choice is stored. Every candidate keeps what the layers decide within issue #12's
bounds of f32 (QQP cache precision/recall and router APGR within 0.005; int8, the loosest,
measured in docs/performance.md), which is the bound ``auto`` keeps, not a cosine
distance: int8 vectors sit ~1e-3 from f32's, bf16's ~3e-5. The first candidate wins ties.

The cache directory is ``$ROUTEGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/routeguard``, else
``~/.cache/routeguard``; if it cannot be written the choice is kept for this process only.
Pin a precision with ``embedding: {precision: f32}`` to skip all of this.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger("routeguard.embed")

Measured = Literal["f32", "f16", "int8", "bf16"]
"""The precisions calibration chooses between."""
CANDIDATES: tuple[Measured, ...] = ("f32", "f16", "int8")
"""Without native bf16: f32 first (the exact one), then the narrow ones."""
NATIVE_CANDIDATES: tuple[Measured, ...] = ("bf16", "int8")
"""With native bf16 and the AVX-512 VNNI int8 tile: bf16 first (the native rule's choice)."""

CLEAR_WIN = 0.95
"""A narrower precision replaces f32 only when its time is below this share of f32's."""
NATIVE_CLEAR_WIN = 0.85
"""int8 replaces native bf16 only when its time is below this share of bf16's: bf16 vectors
sit ~30x closer to f32's than int8's, and a gain of a few percent (Zen 4: int8 at ~0.94 of
bf16) flips with the machine's load, which would leave identical machines on different
precisions."""
CALIBRATION = 5
"""Bumped when the candidates, the rule or what they cost change, so choices stored under
the old ones are measured again (1: f32 and f16 only; 2: int8 on the AVX2 tile only, bf16
never timed; 3: int8 against bf16 at the 0.95 bar; 4: at the 0.85 bar, with an AVX-512
attention that gathered and scattered, a cost shared by every precision)."""
_LENGTHS = (8, 16, 48)  # tokens, [CLS] and [SEP] included: chat prompts' usual span
_ROUNDS = 7

_lock = threading.Lock()
_chosen: dict[str, str] = {}  # per process, by cache key


def cpu_model() -> str:
    """The CPU as Linux names it, with family/model/stepping (virtual machines often report
    only "AMD EPYC" for several generations); "unknown" elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    name = fields.get("model name", "unknown")
    ids = [fields.get(k) for k in ("cpu family", "model", "stepping")]
    if all(ids):
        name += f" (family {ids[0]} model {ids[1]} stepping {ids[2]})"
    return name


def cache_dir() -> Path:
    """Where per-machine choices are stored (see the module docstring)."""
    explicit = os.environ.get("ROUTEGUARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "routeguard"


def cache_key() -> str:
    """What a stored choice is valid for: CPU model, SIMD level in force, version, rule."""
    from routeguard._native import core
    from routeguard._version import __version__

    return f"{cpu_model()}|{core.simd_level()}|{__version__}|calibration {CALIBRATION}"


def candidates() -> tuple[Measured, ...]:
    """What calibration times on this CPU at this SIMD level, the default first: see the
    module docstring (a single candidate needs no calibration)."""
    from routeguard._native import core

    if core.auto_precision() == "bf16":
        return NATIVE_CANDIDATES if core.int8_kernel() == "vnni" else ("bf16",)
    if core.simd_level() not in ("avx2", "avx512"):
        return ("f32",)  # the portable loop gains nothing from narrower weights
    return CANDIDATES


def pick(times_ms: Mapping[str, float], among: Sequence[Measured] = CANDIDATES) -> Measured:
    """The fastest of ``among[1:]`` timed, if it took clearly less time than ``among[0]``
    (:data:`CLEAR_WIN`; :data:`NATIVE_CLEAR_WIN` against native bf16), else ``among[0]``."""
    base = among[0]
    bar = NATIVE_CLEAR_WIN if base == "bf16" else CLEAR_WIN
    others = [(times_ms[p], p) for p in among[1:] if p in times_ms]
    if others:
        best_ms, best = min(others)
        if best_ms < bar * times_ms[base]:
            return best
    return base


Encode = Callable[[Sequence[Sequence[int]]], object]
"""One encoder's ``encode``: token ids of each text -> vectors."""


def timings(encoders: Mapping[str, Encode]) -> dict[str, float]:
    """Median ms per round for each encoder: one call per prompt of :data:`_LENGTHS` tokens,
    the encoders interleaved each round so a busy neighbour slows all of them alike."""
    prompts = [[101, *(1000 + (7919 * i) % 20000 for i in range(n - 2)), 102] for n in _LENGTHS]
    for encode in encoders.values():  # first touch of the weights, untimed
        for p in prompts:
            encode([p])
    rounds: dict[str, list[float]] = {name: [] for name in encoders}
    for r in range(_ROUNDS):
        names = list(encoders)
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            for p in prompts:
                encoders[name]([p])
            rounds[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(ms) for name, ms in rounds.items()}


def calibrate(model_dir: Path, among: Sequence[Measured] = CANDIDATES) -> dict[str, float]:
    """Time the Rust encoders of the model in ``model_dir`` at each precision of ``among``
    on this CPU."""
    from routeguard.embed.bert import BertWeights
    from routeguard.embed.minilm import _rust_encoder

    config = json.loads((model_dir / "config.json").read_text())
    weights = BertWeights.from_safetensors(
        model_dir / "model.safetensors",
        heads=int(config["num_attention_heads"]),
        eps=float(config.get("layer_norm_eps", 1e-12)),
    )
    encoders: dict[str, Encode] = {p: _rust_encoder(weights, p).encode for p in among}
    return timings(encoders)


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, key: str, entry: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data[key] = entry
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        log.debug("embedding precision: could not store the calibration in %s (%s)", path, exc)


def auto_precision(model_dir: Path | None = None) -> str:
    """The precision ``"auto"`` means for the Rust encoder here: "bf16", "int8", "f16" or
    "f32"."""
    among = candidates()
    if len(among) == 1:
        return among[0]
    key = cache_key()
    with _lock:
        got = _chosen.get(key)
        if got is not None:
            return got
        path = cache_dir() / "precision.json"
        stored = _read(path).get(key, {}).get("choice")
        if stored in among:
            _chosen[key] = str(stored)
            return str(stored)
        from routeguard.embed.minilm import bundled_model_dir

        times = calibrate(model_dir or bundled_model_dir(), among)
        choice = pick(times, among)
        if log.isEnabledFor(logging.INFO):
            spent = ", ".join(f"{p} {ms:.2f} ms" for p, ms in times.items())
            log.info("embedding precision auto -> %s on %s (%s per round)", choice, key, spent)
        _write(path, key, {"choice": choice, "ms": times, "at": int(time.time())})
        _chosen[key] = choice
        return choice
