"""irc.calibration.progress: tqdm's bar on a terminal (rate, ETA), plain start / end lines
elsewhere, nothing when disabled, never stdout; stage lines; stage times; and the time
summary of ``irc compile`` naming each stage that ran."""

from __future__ import annotations

import io
import re
import threading
import time
import types

import numpy as np
import pytest
from onnx_builders import small_convnet, tiny_cnn
from tqdm import TMonitor

import irc
from irc.calibration import progress
from irc.calibration.progress import Progress, StageTimes, duration, rate_text, stage
from irc.tools.cli import main, time_summary


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeClock:
    """``perf_counter`` advancing by hand."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_terminal_mode_draws_tqdm_bar_with_rate_and_eta():
    stream = FakeTerminal()
    with Progress(10, label="calibrate", unit="img", stream=stream) as bar:
        assert bar.mode == "bar"
        time.sleep(0.12)  # past tqdm's redraw interval: the next update redraws
        bar.update(3)
        assert re.search(r"3/10 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+img/s\]", stream.getvalue())
        bar.update(7)
    text = stream.getvalue()
    assert "calibrate: 100%" in text and "10/10 [" in text
    assert "\r" in text and text.endswith("\n")
    assert not any(isinstance(t, TMonitor) for t in threading.enumerate())


def test_force_draws_the_bar_on_any_stream():
    stream = io.StringIO()
    with Progress(4, stream=stream, force=True) as bar:
        bar.update(4)
    assert "4/4 [" in stream.getvalue() and "img/s" in stream.getvalue()


def test_plain_mode_writes_a_start_and_an_end_line(clock):
    stream = io.StringIO()
    with Progress(64, label="calibrate", unit="img", stream=stream) as bar:
        assert bar.mode == "lines"
        clock.now += 5.0
        bar.update(32)
        clock.now += 7.3
        bar.update(32)
    assert stream.getvalue().splitlines() == [
        "calibrate: 64 img ...",
        "calibrate: 64/64 img in 12.3 s (5.2 img/s)",
    ]


def test_plain_mode_shows_life_every_interval(clock):
    stream = io.StringIO()
    with Progress(100, label="sensitivity", unit="run", stream=stream) as bar:
        clock.now += 10.0
        bar.update(10)  # before the interval: no line
        clock.now += progress.LINE_INTERVAL
        bar.update(20)
        clock.now += 1.0
        bar.update(10)  # one second after the last line: none
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1] == "sensitivity: 30/100 run, 1.3 s/run, 40.0 s elapsed, ETA 1 min 33 s"
    assert lines[2] == "sensitivity: 40/100 run in 41.0 s (1.0 s/run)"


def test_plain_mode_without_a_total_and_on_an_exception(clock):
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress(None, label="gptq", stream=stream) as bar:
        bar.update(5)
        clock.now += 2.0
        raise RuntimeError
    assert stream.getvalue().splitlines() == ["gptq ...", "gptq: stopped at 5 img after 2.0 s"]
    stream = io.StringIO()
    with Progress(None, label="cost model", unit="layer", stream=stream) as bar:
        clock.now += 8.0
        bar.update(2)
    assert stream.getvalue().splitlines()[-1] == "cost model: 2 layer in 8.0 s (4.0 s/layer)"


def test_disabled_writes_nothing():
    for stream in (io.StringIO(), FakeTerminal()):
        with Progress(10, stream=stream, enabled=False, force=True) as bar:
            bar.update(10)
        with stage("build", stream=stream, enabled=False):
            pass
        assert stream.getvalue() == "" and bar.mode == "off"


def test_nothing_goes_to_stdout(capsys):
    with Progress(3, label="calibrate") as bar:  # default stream: stderr
        bar.update(3)
    with stage("build"):
        pass
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == "calibrate: 3 img ..." and "build: done in" in err


def test_stage_lines_and_terminal(clock):
    stream = io.StringIO()
    with stage("build", stream=stream):
        clock.now += 3.25
    assert stream.getvalue().splitlines() == ["build ...", "build: done in 3.2 s"]
    stream = FakeTerminal()
    with pytest.raises(ValueError), stage("verify plan 1", stream=stream):
        clock.now += 61.0
        raise ValueError
    assert stream.getvalue() == "verify plan 1 ...\rverify plan 1: failed after 1 min 01 s\x1b[K\n"


def test_stage_times_count_inner_stages_once(clock):
    times = StageTimes()
    with times.timing("verification"):
        clock.now += 1.0
        with times.timing("build"):
            clock.now += 4.0
        clock.now += 2.0
    with times.timing("build"):
        clock.now += 0.5
    assert times == {"verification": 3.0, "build": 4.5}
    assert list(times) == ["verification", "build"]


def test_durations_and_rates():
    assert duration(3.21) == "3.2 s" and duration(245) == "4 min 05 s"
    assert duration(3725) == "1 h 02 min"
    assert rate_text(52, 10.0, "img") == "5.2 img/s" and rate_text(1, 4.0, "layer") == "4.0 s/layer"
    assert rate_text(0, 0.0, "img") == "0.0 img/s"


def test_time_summary_names_each_stage_with_its_share():
    times = {"load": 1.0, "calibrate": 6.0, "build": 2.0, "total": 9.0}
    assert time_summary(10.0, times) == (
        "compiled in 10.0 s: load 1.0 s (10%), calibrate 6.0 s (60%), build 2.0 s (20%), "
        "other 1.0 s (10%)"
    )


def test_compile_times_and_progress_of_the_plain_path(capsys):
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    model = irc.compile(tiny_cnn(), precision="int8", calibration=x, num_threads=1)
    assert list(model.compile_seconds) == ["load", "calibrate", "build", "total"]
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "calibrate: 6 img ..." and lines[1].startswith("calibrate: 6/6 img in ")
    assert lines[2].startswith("calibrate: ") and "ranges (uniform INT8 output SQNR: " in lines[2]
    assert lines[3:5] == ["build ...", lines[4]] and lines[4].startswith("build: done in ")
    irc.compile(tiny_cnn(), precision="int8", calibration=x, num_threads=1, progress=False)
    assert capsys.readouterr() == ("", "")


def test_strategy_compile_summary_names_each_stage(capsys, tmp_path):
    model_file, calib = tmp_path / "small.onnx", tmp_path / "calib.npy"
    model_file.write_bytes(small_convnet().SerializeToString())
    np.save(calib, np.random.default_rng(5).normal(size=(12, 3, 16, 16)).astype(np.float32))
    code = main([str(a) for a in ("compile", model_file, "--calib", calib, "--strategy",
                 "auto", "--max-size", "1.6kB", "--sample", "8", "--rounding", "gptq", "-o",
                 tmp_path / "m.ircm", "--threads", "1", "--no-cache")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    (summary,) = [line for line in out.splitlines() if line.startswith("compiled in ")]
    stages = ["load", "calibrate", "rounding statistics", "sample data", "sensitivity",
              "cost model", "decision and verification", "build"]  # fmt: skip
    # a stage's time reads "0.4 s", "1 min 05 s" or "1 h 02 min" (a cold Numba cache)
    time_text = r"(?:[\d.]+ s|\d+ min \d+ s|\d+ h \d+ min)"
    named = re.findall(rf"(?:: |, )([a-z ]+?) {time_text} \(\d+%\)", summary)
    assert named[: len(stages)] == stages and set(named[len(stages) :]) <= {"other"}
    for label in ("calibrate", "gptq statistics", "sensitivity", "cost model"):
        assert f"{label}: " in err
    assert "verify plan 1: done in" in err and "fp32 reference: done in" in err
