"""irc.benchmark: rows, tables and plots of ``irc bench`` on a small convnet.

Oracles: top-1 against labels that are the float model's own argmax (so FP32 is exactly
100%), onnxruntime's FP32 on the same images, the report's byte counts, and a brute-force
Pareto front.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx_builders import small_convnet
from PIL import Image

import irc
from irc.benchmark import BenchData, load_data, markdown, pareto, run_bench, write_json
from irc.calibration import Preprocess
from irc.errors import InputError
from irc.measure import accuracy

pytest.importorskip("onnxruntime")


def _labelled(model_path, n, seed):
    """Random inputs and, as labels, the float model's own top-1 on them."""
    x = np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)
    model = irc.compile(str(model_path), num_threads=1)
    labels = np.array([np.argmax(model(x[i : i + 1])[0]) for i in range(n)])
    return x, labels


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "small.onnx"
    onnx.save(small_convnet(), path)
    calib, calib_labels = _labelled(path, 24, 0)
    evals, eval_labels = _labelled(path, 20, 1)
    data = BenchData(calib, calib_labels, evals, eval_labels)
    result = run_bench(path, data, strategies=("uniform-int8", "sals", "auto"), sizes=(2.0,),
                       auto_latency=None, sample=8, runs=3, log=lambda m: None)  # fmt: skip
    return path, data, result


def test_every_configuration_is_a_row(bench):
    _, _, result = bench
    names = [r.name for r in result.rows]
    assert names == ["irc fp32", "uniform-int8", "sals ≤FP32/2", "auto ≤FP32/2", "ort fp32",
                     "ort int8"]  # fmt: skip
    for r in result.rows:
        assert r.error is None, r
        assert r.latency_ms > 0 and r.compile_s >= 0 and r.bytes > 0


def test_fp32_rows_reach_their_own_labels(bench):
    _, _, result = bench
    assert result.row("irc fp32").top1 == 100.0
    assert result.row("ort fp32").top1 == 100.0


def test_sizes_are_the_compiled_reports(bench):
    _, _, result = bench
    assert result.row("irc fp32").bytes == result.fp32_bytes
    assert result.row("uniform-int8").precisions == {"int8": 4}
    assert result.fp32_bytes / result.row("uniform-int8").bytes > 1.5  # scales and biases weigh
    for name in ("sals ≤FP32/2", "auto ≤FP32/2"):
        assert result.row(name).bytes <= result.fp32_bytes / 2


def test_markdown_and_json(bench, tmp_path):
    _, _, result = bench
    table = markdown(result)
    for r in result.rows:
        assert f"| {r.name}" in table
    int8_line = next(line for line in table.splitlines() if line.startswith("| uniform-int8"))
    assert "| 1.00 |" in int8_line  # its own latency ratio
    write_json(result, tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert [r["name"] for r in loaded["rows"]] == [r.name for r in result.rows]


def test_plots_are_pngs(bench, tmp_path):
    pytest.importorskip("matplotlib")
    from irc.benchmark import write_plots

    _, _, result = bench
    files, why = write_plots(result, tmp_path, "small")
    assert why is None and [f.name for f in files] == ["small-size.png", "small-latency.png"]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unmet_budget_is_a_row_with_its_reason(bench):
    path, data, _ = bench
    result = run_bench(path, data, strategies=("sals",), sizes=(1000.0,), sample=8, runs=1,
                       peers=False, log=lambda m: None)  # fmt: skip
    row = result.row("sals ≤FP32/1000")
    assert row.error and row.bytes is None
    assert "no plan meets the budgets" in markdown(result)


def test_unknown_strategy_is_named(bench):
    path, data, _ = bench
    with pytest.raises(InputError, match="'fastest'"):
        run_bench(path, data, strategies=("fastest",), log=lambda m: None)


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    points = [tuple(p) for p in rng.integers(0, 6, (12, 2)).astype(float)]
    front = set(pareto(points))
    for i, (x, y) in enumerate(points):
        beaten = any((a <= x and b > y) or (a < x and b >= y) for a, b in points)
        assert (i in front) == (not beaten and points.index((x, y)) == i), (i, points)


def test_accuracy_pads_the_last_batch():
    # five one-hot "images" whose logits are themselves; the last label is wrong
    images = np.eye(5, dtype=np.float32).reshape(5, 5)
    labels = np.array([0, 1, 2, 3, 0])
    sizes = []

    def run(x):
        sizes.append(len(x))
        return x

    top1, top5 = accuracy(run, images, labels, batch=2)
    assert sizes == [2, 2, 2] and top1 == 80.0 and top5 == 100.0


def _image_folder(root, n):
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(root / f"im{i}.png")
        lines.append(f"im{i}.png {i % 3}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")


def test_split_data_never_overlaps(tmp_path):
    _image_folder(tmp_path / "imgs", 9)
    pre = Preprocess(resize=16, crop=16)
    data = load_data(tmp_path / "imgs", pre)
    assert len(data.calib) == 5 and len(data.eval) == 4
    for c in data.calib:
        assert not any(np.array_equal(c, e) for e in data.eval)
    assert data.calib_labels.tolist() == [0, 2, 1, 0, 2]


def test_labels_file_elsewhere_and_small_folder(tmp_path):
    _image_folder(tmp_path / "imgs", 3)
    (tmp_path / "mine.txt").write_text("im0.png 7\nim1.png 8\nim2.png 9\n")
    pre = Preprocess(resize=16, crop=16)
    data = load_data(tmp_path / "imgs", pre, labels_file=tmp_path / "mine.txt",
                     calib=tmp_path / "imgs")  # fmt: skip
    assert data.eval_labels.tolist() == [7, 8, 9]
    with pytest.raises(InputError, match="at least 4"):
        load_data(tmp_path / "imgs", pre)


def test_best_rounding_rows_compile_and_keep_fp32(bench):
    path, data, _ = bench
    result = run_bench(path, data, strategies=("uniform-int8", "auto"), sizes=(2.0,),
                       auto_latency=None, sample=8, runs=1, rounding="best", peers=False,
                       log=lambda m: None)  # fmt: skip
    assert result.rounding == "best" and result.row("irc fp32").top1 == 100.0
    for name in ("uniform-int8", "auto ≤FP32/2"):
        assert result.row(name).error is None and result.row(name).top1 is not None
