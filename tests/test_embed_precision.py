"""precision="auto" measured on the CPU at hand: bf16 where native (or int8 when its VNNI
tile is clearly faster there), else the fastest of f32, f16 and int8, by a calibration
that is stored per CPU model, SIMD level and version."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from routeguard._native import core
from routeguard.embed import precision, resolve_precision


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache directory and no choice remembered in this process."""
    monkeypatch.setenv("ROUTEGUARD_CACHE_DIR", str(tmp_path))
    saved = dict(precision._chosen)
    precision._chosen.clear()
    yield tmp_path
    precision._chosen.clear()
    precision._chosen.update(saved)


def test_f16_only_when_clearly_faster() -> None:
    assert precision.pick({"f32": 10.0, "f16": 5.0}) == "f16"
    assert precision.pick({"f32": 10.0, "f16": 9.4}) == "f16"
    assert precision.pick({"f32": 10.0, "f16": 9.6}) == "f32"  # a tie keeps the exact one
    assert precision.pick({"f32": 10.0, "f16": 12.0}) == "f32"


def test_the_fastest_narrow_precision_wins_only_when_clearly_faster() -> None:
    assert precision.pick({"f32": 10.0, "f16": 9.0, "int8": 6.0}) == "int8"
    assert precision.pick({"f32": 10.0, "f16": 6.0, "int8": 7.0}) == "f16"
    assert precision.pick({"f32": 10.0, "f16": 11.0, "int8": 9.6}) == "f32"
    assert precision.pick({"f32": 10.0, "f16": 12.0, "int8": 9.0}) == "int8"
    # Only the calibration's candidates count, whatever else a stored record holds.
    assert precision.pick({"f32": 10.0, "bf16": 1.0}) == "f32"


def test_timings_are_medians_of_interleaved_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    calls: list[str] = []

    def encoder(name: str, cost: float):  # type: ignore[no-untyped-def]
        def encode(ids: Sequence[Sequence[int]]) -> None:
            assert len(ids) == 1 and ids[0][0] == 101 and ids[0][-1] == 102
            calls.append(name)
            clock[0] += cost

        return encode

    monkeypatch.setattr(precision.time, "perf_counter", lambda: clock[0])
    got = precision.timings({"f32": encoder("f32", 0.002), "f16": encoder("f16", 0.001)})
    n = len(precision._LENGTHS)
    assert got == pytest.approx({"f32": 2.0 * n, "f16": 1.0 * n})
    assert calls.count("f32") == calls.count("f16") == n * (precision._ROUNDS + 1)
    # Each round alternates which encoder goes first.
    timed = calls[2 * n :]
    firsts = [timed[i] for i in range(0, len(timed), 2 * n)]
    assert firsts[:2] == ["f32", "f16"]


def test_a_single_candidate_needs_no_calibration(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "calibrate", _must_not_run)
    # Native bf16 without the VNNI int8 tile: bf16, unmeasured.
    monkeypatch.setattr(core, "auto_precision", lambda: "bf16")
    monkeypatch.setattr(core, "int8_kernel", lambda: "avx2")
    assert precision.candidates() == ("bf16",)
    assert precision.auto_precision() == resolve_precision("auto") == "bf16"
    # The portable loop: nothing to gain from narrower weights.
    monkeypatch.setattr(core, "auto_precision", lambda: "f32")
    monkeypatch.setattr(core, "simd_level", lambda: "scalar")
    monkeypatch.setattr(core, "int8_kernel", lambda: "scalar")
    assert precision.candidates() == ("f32",) and precision.auto_precision() == "f32"
    assert not (fresh / "precision.json").exists()


def test_the_candidates_follow_the_cpu() -> None:
    native = core.auto_precision() == "bf16"
    vnni = core.int8_kernel() == "vnni"
    if native:
        assert precision.candidates() == (("bf16", "int8") if vnni else ("bf16",))
    elif core.simd_level() in ("avx2", "avx512"):
        assert precision.candidates() == ("f32", "f16", "int8")
    else:
        assert precision.candidates() == ("f32",)
    # The VNNI tile runs only at the AVX-512 level, and int8 is a candidate wherever it does.
    assert not vnni or core.simd_level() == "avx512"
    assert not vnni or "int8" in precision.candidates()


def test_native_bf16_with_vnni_keeps_bf16_unless_int8_is_clearly_faster(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "auto_precision", lambda: "bf16")
    monkeypatch.setattr(core, "int8_kernel", lambda: "vnni")
    monkeypatch.setattr(core, "simd_level", lambda: "avx512")
    timed: list[tuple[str, ...]] = []

    def measure(times: dict[str, float]):  # type: ignore[no-untyped-def]
        def calibrate(_dir: Path, among: Sequence[str]) -> dict[str, float]:
            timed.append(tuple(among))
            return times

        return calibrate

    monkeypatch.setattr(precision, "calibrate", measure({"bf16": 4.0, "int8": 3.5}))
    assert precision.auto_precision() == "bf16"  # 12.5% faster: not enough against bf16
    assert timed == [("bf16", "int8")]
    (fresh / "precision.json").unlink()
    precision._chosen.clear()
    monkeypatch.setattr(precision, "calibrate", measure({"bf16": 4.0, "int8": 3.0}))
    assert precision.auto_precision() == "int8"
    assert precision.pick({"bf16": 4.0, "int8": 3.0, "f16": 1.0}, ("bf16", "int8")) == "int8"
    assert precision.pick({"bf16": 4.0, "f32": 1.0}, ("bf16", "int8")) == "bf16"


def test_calibrates_once_and_stores_the_choice(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "auto_precision", lambda: "f32")  # as on a CPU without bf16
    monkeypatch.setattr(core, "simd_level", lambda: "avx2")
    monkeypatch.setattr(precision, "calibrate", lambda _dir, _among: {"f32": 4.5, "f16": 3.1})
    assert precision.auto_precision() == "f16"
    stored = json.loads((fresh / "precision.json").read_text())
    key = precision.cache_key()
    version = __import__("routeguard").__version__
    assert key.endswith(f"|avx2|{version}|calibration {precision.CALIBRATION}")
    assert stored[key]["choice"] == "f16" and stored[key]["ms"] == {"f32": 4.5, "f16": 3.1}
    # A new process (nothing remembered) reads the stored choice instead of measuring.
    precision._chosen.clear()
    monkeypatch.setattr(precision, "calibrate", _must_not_run)
    assert precision.auto_precision() == "f16"
    assert resolve_precision("auto") == "f16"
    assert resolve_precision("auto", backend="numpy") == "f32"
    # Another CPU model or level is another key: measured afresh.
    precision._chosen.clear()
    monkeypatch.setattr(core, "simd_level", lambda: "avx512")
    monkeypatch.setattr(precision, "calibrate", lambda _dir, _among: {"f32": 3.0, "f16": 3.0})
    assert precision.auto_precision() == "f32"
    assert len(json.loads((fresh / "precision.json").read_text())) == 2


def test_an_unwritable_cache_still_chooses(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ROUTEGUARD_CACHE_DIR", str(blocker / "sub"))
    monkeypatch.setattr(core, "auto_precision", lambda: "f32")
    monkeypatch.setattr(core, "simd_level", lambda: "avx2")
    monkeypatch.setattr(precision, "calibrate", lambda _dir, _among: {"f32": 4.0, "f16": 2.0})
    assert precision.auto_precision() == "f16"
    monkeypatch.setattr(precision, "calibrate", _must_not_run)
    assert precision.auto_precision() == "f16"  # remembered for this process


def test_a_corrupt_cache_file_is_measured_over(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fresh / "precision.json").write_text("{not json")
    monkeypatch.setattr(core, "auto_precision", lambda: "f32")
    monkeypatch.setattr(core, "simd_level", lambda: "avx2")
    monkeypatch.setattr(precision, "calibrate", lambda _dir, _among: {"f32": 4.0, "f16": 4.1})
    assert precision.auto_precision() == "f32"
    assert json.loads((fresh / "precision.json").read_text())[precision.cache_key()]


def test_a_choice_stored_under_an_older_rule_is_measured_again(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "auto_precision", lambda: "f32")
    monkeypatch.setattr(core, "simd_level", lambda: "avx2")
    old_key = precision.cache_key().replace(f"|calibration {precision.CALIBRATION}", "")
    (fresh / "precision.json").write_text(json.dumps({old_key: {"choice": "f16"}}))
    times = {"f32": 4.0, "f16": 3.5, "int8": 2.0}
    monkeypatch.setattr(precision, "calibrate", lambda _dir, _among: times)
    assert precision.auto_precision() == "int8"
    stored = json.loads((fresh / "precision.json").read_text())
    assert stored[old_key]["choice"] == "f16" and stored[precision.cache_key()]["choice"] == "int8"


def test_the_real_calibration_times_every_candidate() -> None:
    if core.simd_level() not in ("avx2", "avx512"):
        pytest.skip("calibration runs only where the Rust encoder has SIMD kernels")
    from routeguard.embed.minilm import bundled_model_dir

    times = precision.calibrate(bundled_model_dir())
    assert set(times) == {"f32", "f16", "int8"} and all(t > 0 for t in times.values())
    assert precision.pick(times) in ("f32", "f16", "int8")
    among = precision.candidates()
    if among == precision.NATIVE_CANDIDATES:
        times = precision.calibrate(bundled_model_dir(), among)
        assert set(times) == {"bf16", "int8"} and all(t > 0 for t in times.values())


def test_cpu_model_names_the_generation() -> None:
    name = precision.cpu_model()
    assert name
    if Path("/proc/cpuinfo").exists() and "cpu family" in Path("/proc/cpuinfo").read_text():
        assert "family" in name and "model" in name


def _must_not_run(_dir: Path, _among: Sequence[str] = ()) -> dict[str, float]:
    raise AssertionError("calibration ran where it should not")
