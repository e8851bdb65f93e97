"""The cpu's calibration: checked against physical sense, recorded with its host, age and load,
measured again when it cannot be trusted, and announced.  Fabricated figures and cache files in
temporary directories; nothing here asserts a time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nncost
from calibration_figures import plausible_figures
from nncost.analyses.roofline import FAMILIES
from nncost.errors import CalibrationError
from nncost.hardware import calibration
from nncost.hardware.calibration import CalibrationWarning, cpu_device, problems

KIB = 1024
IDLE = 0.0


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NNCOST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_load", lambda: IDLE)
    return tmp_path


def with_point(figures: dict[str, Any], working_set: int, bandwidth: float) -> dict[str, Any]:
    for point in figures["bandwidth_curve"]:
        if point[0] == working_set:
            point[1] = bandwidth
    figures["bandwidth"] = figures["bandwidth_curve"][-1][1]
    return figures


def changed(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    figures = plausible_figures()
    change(figures)
    return figures


def stored(cache: Path) -> dict[str, Any]:
    records: dict[str, Any] = json.loads((cache / calibration.CACHE_FILE).read_text())
    return records


def store(cache: Path, record: Any, key: str | None = None) -> None:
    (cache / calibration.CACHE_FILE).write_text(json.dumps({key or calibration.cache_key(): record}))


def record(**changes: Any) -> dict[str, Any]:
    """A cache record of plausible figures, measured now on this host, idle; then ``changes``."""
    made = calibration._record(plausible_figures(), 0.1, 0.1, 1)
    made.update(changes)
    return made


class Calls:
    """A stand-in for ``calibrate``: returns each of ``figures`` in turn (the last one again)."""

    def __init__(self, *figures: dict[str, Any]) -> None:
        self.figures, self.count = figures, 0
        self.threads: list[int | None] = []  # the threads each call was asked for

    def __call__(self, threads: int | None = None) -> dict[str, Any]:
        self.count += 1
        self.threads.append(threads)
        return self.figures[min(self.count, len(self.figures)) - 1]


def test_a_plausible_calibration_has_no_problems() -> None:
    assert problems(plausible_figures()) == []


# Points of the copy curve that noise can move, and that a memory hierarchy still explains.
@pytest.mark.parametrize("working_set, bandwidth", [
    (128 * KIB << 10, 20e9),   # 128 MiB: 20 GB/s, within 1.5x of the 28 GB/s at 32 MiB
    (32 * KIB << 10, 40e9),    # 32 MiB: 40 GB/s, within 1.5x of the 28 GB/s at 8 MiB
    (2 * KIB << 10, 100e9),    # 2 MiB faster than 512 KiB: the fastest point may be anywhere
    (512 * KIB, 30e9),         # below the peak a point may be slow: more threads join at larger copies
])
def test_noise_within_the_tolerance_is_plausible(working_set: int, bandwidth: float) -> None:
    assert problems(with_point(plausible_figures(), working_set, bandwidth)) == []


@pytest.mark.parametrize("change, named", [
    # the user's calibration, measured while the machine was busy
    (lambda f: with_point(f, 512 * KIB, 0.059e9), "copy bandwidth at 512 KiB is 0.059 GB/s, below the floor of 1"),
    (lambda f: f["family_efficiency"].update(transcendental=0.0002),
     "transcendental efficiency is 0.0002, below the floor of 0.001"),
    (lambda f: f["family_efficiency"].update(conv=1.3), "conv efficiency is 1.3, above 1"),
    (lambda f: f["family_efficiency"].update(norm=0.0), "norm efficiency is 0, below the floor"),
    (lambda f: f["family_efficiency"].update(pooling=-0.5), "pooling efficiency is -0.5"),
    (lambda f: f["family_efficiency"].pop("matmul"), "matmul family has no efficiency"),
    (lambda f: f["peak_flops"].update(fp32=5e8), "fp32 peak is 0.5 GFLOP/s, below the floor of 1 GFLOP/s"),
    (lambda f: f["peak_flops"].update(bf16=5e7), "bf16 peak is 0.05 GFLOP/s, below the floor of 0.1"),
    (lambda f: f["peak_flops"].update(fp32=3e15), "fp32 peak is 3e+06 GFLOP/s, above the ceiling"),
    (lambda f: with_point(f, 32 * KIB, 1e15), "copy bandwidth at 32 KiB is 1e+06 GB/s, above the ceiling"),
    # past the fastest point a larger working set is never faster (by more than the tolerance)
    (lambda f: with_point(f, 128 * KIB << 10, 60e9),
     "copy bandwidth at 131072 KiB is 60 GB/s, above the 28 GB/s at 8192 KiB"),
    # copying more never takes less time: 32 KiB in 16 µs, then 128 KiB in 2.3 µs
    (lambda f: with_point(f, 32 * KIB, 2e9), "copying 128 KiB took 2.34 µs, less than the 16.4 µs of 32 KiB"),
    (lambda f: f.update(bandwidth=50e9), "the bandwidth is 50 GB/s, not the curve's 14 GB/s"),
    (lambda f: f["bandwidth_curve"].pop(0), "the bandwidth curve's working sets are"),
    (lambda f: f.update(module_call_seconds=1e-3), "module call's fixed cost is 1e+03 µs, above the ceiling of 200"),
    (lambda f: f["family_overhead_seconds"].update(depthwise=0.01), "depthwise fixed cost is 1e+04 µs, above"),
    (lambda f: f.update(op_overhead_seconds=-1e-6), "generic operator fixed cost is -1 µs, negative"),
    (lambda f: f["family_efficiency"].update(reduction=float("nan")), "malformed"),
    (lambda f: f["peak_flops"].update(fp32="fast"), "malformed"),
    (lambda f: f.pop("family_overhead_seconds"), "malformed"),
])
def test_an_implausible_figure_is_named(change: Callable[[dict[str, Any]], Any], named: str) -> None:
    found = problems(changed(change))
    assert found and any(named in phrase for phrase in found), found


def test_an_implausible_calibration_is_measured_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busy_curve = with_point(plausible_figures(), 512 * KIB, 0.059e9)
    calls = Calls(busy_curve, plausible_figures())
    monkeypatch.setattr(calibration, "calibrate", calls)
    said: list[str] = []
    cpu = cpu_device(say=said.append)
    assert calls.count == 2 and dict(cpu.bandwidth_curve)[512 * KIB] == 78e9
    assert calls.threads == [None, 1]  # torch's own threads, then one: a busy machine's waits are gone
    assert any("implausible" in line and "0.059 GB/s" in line and "again on one thread (attempt 2 of 3)" in line
               for line in said), said
    assert stored(cache)[calibration.cache_key()]["attempt"] == 2


def test_an_implausible_calibration_is_refused_and_not_stored(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(changed(lambda f: f["family_efficiency"].update(transcendental=0.0002)))
    monkeypatch.setattr(calibration, "calibrate", calls)
    with pytest.raises(CalibrationError, match=r"implausible 3 times.*transcendental efficiency is 0.0002"):
        cpu_device(say=lambda line: None)
    assert calls.count == calibration.ATTEMPTS
    assert not (cache / calibration.CACHE_FILE).exists()
    # without a say, the attempts measured again are warnings
    with pytest.warns(CalibrationWarning) as caught, pytest.raises(CalibrationError):
        cpu_device()
    assert ["attempt 2 of 3" in str(w.message) for w in caught] == [True, False]


@pytest.mark.parametrize("flags, shown", [
    (["--hardware", "cpu"], "Params"),
    (["--hardware", "cpu", "--train"], "Peak"),
    (["--measure-time", "--repeats", "1"], "Measured forward"),
])
def test_the_cli_reports_everything_else_when_the_cpu_cannot_be_calibrated(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        flags: list[str], shown: str) -> None:
    from nncost.cli import run

    calls = Calls(with_point(plausible_figures(), 512 * KIB, 0.059e9))
    monkeypatch.setattr(calibration, "calibrate", calls)
    chunks: list[str] = []
    assert run([f"{small_source(tmp_path)}:build", "--input", "3x8x8", *flags], out=chunks.append) == 0
    assert calls.count == calibration.ATTEMPTS and calls.threads == [None, 1, 1]
    text, err = "".join(chunks), capsys.readouterr().err
    assert shown in text and "Time estimates" in text and "implausible 3 times" in text
    assert "no time estimates: this cpu's calibration was implausible 3 times" in err and "0.059 GB/s" in err
    assert "error" not in err
    chunks.clear()
    assert run([f"{small_source(tmp_path)}:build", "--input", "3x8x8", *flags, "--format", "json"],
               out=chunks.append) == 0
    data = json.loads("".join(chunks))
    assert data["roofline"] is None and "0.059 GB/s" in data["time_unavailable"]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text()))


def test_memory_with_the_cpu_allocator_needs_no_calibration(cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from nncost.cli import run

    def refuse(threads: int | None = None) -> dict[str, Any]:
        raise AssertionError("the memory of a step needs no calibration")

    monkeypatch.setattr(calibration, "calibrate", refuse)
    chunks: list[str] = []
    argv = [f"{small_source(tmp_path)}:build", "--input", "3x8x8", "--train", "--allocator", "cpu", "--measure"]
    assert run(argv, out=chunks.append) == 0
    assert "Peak" in "".join(chunks)


def test_oversubscribed_threads_are_told_by_their_copy_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    # the curve two torch threads copied on the 2-core VM at load 4 (docs/roofline.md), then one thread's
    busy = [(2 * kib * KIB, gbs * 1e9) for kib, gbs in zip(calibration.COPY_KIB, (19, 49, 0.035, 0.11, 0.67, 1.7, 5.6),
                                                            strict=True)]
    quiet = [(ws, bw) for ws, bw in plausible_figures()["bandwidth_curve"]]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(calibration, "_bandwidth_curve", lambda: busy)
        assert any("0.035 GB/s" in phrase for phrase in calibration.oversubscribed())
        monkeypatch.setattr(calibration, "_bandwidth_curve", lambda: quiet)
        assert calibration.oversubscribed() == []
        torch.set_num_threads(1)  # one thread waits for no one: nothing to measure

        def refuse() -> list[tuple[int, float]]:
            raise AssertionError("one thread is not measured for oversubscription")

        monkeypatch.setattr(calibration, "_bandwidth_curve", refuse)
        assert calibration.oversubscribed() == []
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("oversubscribed, measured_on", [(["the copy bandwidth at 512 KiB is 0.035 GB/s"], 1),
                                                         ([], 2)])
def test_the_calibration_runs_on_one_thread_when_the_threads_are_oversubscribed(
        monkeypatch: pytest.MonkeyPatch, oversubscribed: list[str], measured_on: int) -> None:
    seen: list[int] = []
    monkeypatch.setattr(calibration, "oversubscribed", lambda: oversubscribed)
    monkeypatch.setattr(calibration, "_calibrate", lambda: seen.append(torch.get_num_threads()) or plausible_figures())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        figures = calibration.calibrate()
        assert seen == [measured_on] and figures["threads"] == measured_on and torch.get_num_threads() == 2
        assert calibration.calibrate(threads=1)["threads"] == 1 and seen[-1] == 1 and torch.get_num_threads() == 2

        def broken() -> dict[str, Any]:
            raise RuntimeError("a kernel failed")

        monkeypatch.setattr(calibration, "_calibrate", broken)
        with pytest.raises(RuntimeError):
            calibration.calibrate(threads=1)
        assert torch.get_num_threads() == 2  # restored however the calibration ends
    finally:
        torch.set_num_threads(threads)


def test_a_calibration_on_one_thread_of_several_is_marked_and_said(cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(calibration, "calibrate", Calls({**plausible_figures(), "threads": 1}))
        said: list[str] = []
        cpu = cpu_device(say=said.append)
        kept = stored(cache)[calibration.cache_key()]
        assert kept["busy"] is True and kept["threads"] == 1 and "one core's" in cpu.notes
        assert any("measured on one thread of 2" in line and "measured again once the machine is quieter" in line
                   for line in said), said
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cached, reason", [
    # the user's cache: figures measured on a busy machine, stored by a version that did not check them
    (record(family_efficiency={**{f: 0.5 for f in FAMILIES}, "transcendental": 0.0002}),
     "is implausible: the transcendental efficiency is 0.0002"),
    (record(bandwidth_curve=with_point(plausible_figures(), 512 * KIB, 0.059e9)["bandwidth_curve"]),
     "is implausible: the copy bandwidth at 512 KiB is 0.059 GB/s"),
    (record(version=9), "was written by another version of nncost"),
    (record(measured_at=time.time() - 31 * 86400), "is 31 days old (at most 30)"),
    (record(measured_at=time.time() + 5 * 86400), "is dated in the future"),
    (record(measured_at=None), "has no date"),
    (record(host={**calibration.host(), "hostname": "elsewhere"}), "measured elsewhere (hostname 'elsewhere'"),
    (record(host={**calibration.host(), "cpu_model": "Other CPU 9000"}), "cpu_model 'Other CPU 9000'"),
    (record(host=None), "measured elsewhere (no host)"),
    (record(host={**calibration.host(), "isa": "OTHER"}), "isa 'OTHER'"),
    (record(load=None), "has no load average"),
    ("not a record", "written by another version"),
])
def test_a_cached_calibration_is_checked_again_on_load(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                       cached: Any, reason: str) -> None:
    store(cache, cached)
    assert not calibration.is_cached()
    calls = Calls(plausible_figures())
    monkeypatch.setattr(calibration, "calibrate", calls)
    said: list[str] = []
    cpu = cpu_device(say=said.append)
    assert calls.count == 1 and cpu.family_efficiency["transcendental"] == 0.5
    assert any(line.startswith("measuring this cpu's roofs again: the cached calibration ") and reason in line
               for line in said), said
    assert calibration.is_cached() and problems(stored(cache)[calibration.cache_key()]) == []


def test_a_recent_plausible_calibration_is_used_as_it_is(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store(cache, record(measured_at=time.time() - 29 * 86400))
    monkeypatch.setattr(calibration, "calibrate", Calls())  # would fail: nothing to return
    said: list[str] = []
    assert calibration.is_cached()
    assert cpu_device(say=said.append).peak("fp32") == 1.7e11
    assert said == []


@pytest.mark.parametrize("text, reason", [("{not json", "is not valid JSON"), ("[1, 2]", "holds no records")])
def test_a_broken_cache_file_is_measured_again_and_said(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                        text: str, reason: str) -> None:
    (cache / calibration.CACHE_FILE).write_text(text)
    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    said: list[str] = []
    cpu_device(say=said.append)
    assert any(reason in line for line in said), said
    assert calibration.cache_key() in stored(cache)


def test_the_record_says_when_where_and_under_what_load(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    loads = iter([0.25, 0.5])
    monkeypatch.setattr(calibration, "_load", lambda: next(loads))
    before = time.time()
    cpu = cpu_device(say=lambda line: None)
    (key, kept), = stored(cache).items()
    assert key == calibration.cache_key()
    assert kept["version"] == calibration.VERSION and kept["attempt"] == 1
    assert set(kept["host"]) == {"hostname", "cpu_model", "isa", "threads", "torch"}
    assert kept["host"]["threads"] == torch.get_num_threads() and kept["host"]["torch"] == torch.__version__
    assert before <= kept["measured_at"] <= time.time() and kept["date"].endswith("UTC")
    assert kept["load"]["before"] == 0.25 and kept["load"]["after"] == 0.5 and kept["load"]["cores"] >= 1
    assert kept["busy"] is False and cpu.notes == ""
    assert kept["host"]["hostname"] in cpu.sources["peak_flops"] and "0.25 → 0.50" in cpu.sources["peak_flops"]


def test_a_calibration_under_heavy_load_is_marked_and_said(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cores = calibration.os.cpu_count() or 1
    load = {"now": cores + 3.0}
    monkeypatch.setattr(calibration, "_load", lambda: load["now"])
    calls = Calls(plausible_figures())
    monkeypatch.setattr(calibration, "calibrate", calls)
    said: list[str] = []
    cpu = cpu_device(say=said.append)
    assert stored(cache)[calibration.cache_key()]["busy"] is True and "heavy load" in cpu.notes
    assert any(f"measured under heavy load (load average {cores + 3:.2f} on {cores} cores)" in line
               for line in said), said
    # still busy: the cached one is used, and the user told again (a warning without a say)
    with pytest.warns(CalibrationWarning, match="cached calibration of this cpu was measured under heavy load"):
        cpu_device()
    assert calls.count == 1
    # quieter now: measured again
    load["now"] = 0.1
    said.clear()
    assert not calibration.is_cached()
    cpu_device(say=said.append)
    assert calls.count == 2 and stored(cache)[calibration.cache_key()]["busy"] is False
    assert any("measured under heavy load, and the machine is quieter now" in line for line in said), said


def test_refresh_measures_again_and_says_so(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store(cache, record())
    calls = Calls(plausible_figures())
    monkeypatch.setattr(calibration, "calibrate", calls)
    said: list[str] = []
    cpu_device(refresh=True, say=said.append)
    assert calls.count == 1 and said and said[0].startswith("measuring this cpu's roofs again, as asked")


def test_other_hosts_records_are_kept(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "elsewhere | Other CPU | threads=4 | torch=2.0 | v10"
    store(cache, record(host={**calibration.host(), "hostname": "elsewhere"}), key=other)
    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    cpu_device(say=lambda line: None)
    assert set(stored(cache)) == {other, calibration.cache_key()}


def small_source(tmp_path: Path) -> Path:
    source = tmp_path / "cnn.py"
    source.write_text("from torch import nn\n"
                      "def build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n")
    return source


@pytest.mark.parametrize("flags", [["--measure-time", "--repeats", "1"], ["--hardware", "cpu"],
                                   ["--hardware", "cpu", "--measure-time", "--repeats", "1"]])
def test_every_cli_path_that_calibrates_says_so(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    from nncost.cli import run

    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    assert run([f"{small_source(tmp_path)}:build", "--input", "3x8x8", *flags], out=lambda text: None) == 0
    assert capsys.readouterr().err.count("measuring this cpu's roofs, once") == 1


def test_the_python_api_says_so_through_progress(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    said: list[str] = []
    nncost.profile(nn.Conv2d(3, 4, 3), (3, 8, 8), hardware="cpu", progress=said.append)
    assert any("measuring this cpu's roofs, once" in line for line in said), said


def tree(root: Path) -> dict[str, float]:
    """Every path under ``root`` (not following links) with its modification time."""
    if not root.is_dir():
        return {}
    return {str(path): path.lstat().st_mtime for path in root.rglob("*")}


def test_the_cache_is_under_xdg_cache_home_unless_nncost_names_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NNCOST_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(calibration, "_load", lambda: IDLE)
    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    cpu_device(say=lambda line: None)
    assert (tmp_path / "xdg" / "nncost" / calibration.CACHE_FILE).exists()
    assert not (tmp_path / "home").exists()
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # unset in effect: the home's .cache
    assert calibration.cache_dir() == tmp_path / "home" / ".cache" / "nncost"
    monkeypatch.setenv("NNCOST_CACHE_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert calibration.cache_dir() == tmp_path / "own"


def test_tests_leave_nothing_in_the_real_home(monkeypatch: pytest.MonkeyPatch, session_home: Path,
                                              real_home: Path) -> None:
    # where nncost writes by default, and the places a calibration could touch
    watched = [real_home / ".cache" / "nncost", real_home / ".cache", real_home / ".config"]
    before = {str(path): tree(path) for path in watched}
    top = sorted(path.name for path in real_home.iterdir()) if real_home.is_dir() else []
    monkeypatch.delenv("NNCOST_CACHE_DIR")  # the default place, under HOME
    monkeypatch.setattr(calibration, "CACHE_FILE", "home_test.json")  # the session's calibration stays as it is
    monkeypatch.setattr(calibration, "calibrate", Calls(plausible_figures()))
    cpu_device(refresh=True, say=lambda line: None)
    assert (session_home / ".cache" / "nncost" / "home_test.json").exists()
    assert Path.home() == session_home != real_home
    assert {str(path): tree(path) for path in watched} == before
    assert (sorted(path.name for path in real_home.iterdir()) if real_home.is_dir() else []) == top
