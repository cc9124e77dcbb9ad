"""``irc.compile`` and ``CompiledModel``: the driver, its cache, input checks and errors."""

from __future__ import annotations

import gc

import numba
import numpy as np
import pytest
from kernel_patches import blas_threads_kept, patched_kernels, without_kernel
from numba import njit
from onnx_builders import pool_concat_resize_net, small_convnet, tiny_cnn

import irc
from irc.backends.numba import kernel_table
from irc.backends.numba.kernel_table import BackendError
from irc.build import cached_programs
from irc.compile import CompiledModel, clear_cache, format_profile, graph_key
from irc.errors import InputError
from irc.interpreter import ExecutionError

MODEL = """graph @main(%x: f32[1,3,4], %i: i64[2]) {
  %w = constant() {value=dense<[1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0,9.0]>} : f32[3,3]
  %t = transpose(%x) {perm=[0,2,1]} : f32[1,4,3]
  %s = softmax(%t) {axis=-1} : f32[1,4,3]
  %r = reshape(%s) {shape=[-1,3]} : f32[4,3]
  %c = concat(%r, %w) {axis=0} : f32[7,3]
  %g = gather(%c, %i) {axis=0} : f32[2,3]
  return %g, %c
}
"""


@pytest.fixture(autouse=True)
def _blas_threads():
    with blas_threads_kept():
        yield


SYMBOLIC = """graph @main(%x: f32[N,3,S]) {
  %t = transpose(%x) {perm=[0,2,1]} : f32[N,S,3]
  %s = softmax(%t) {axis=-1} : f32[N,S,3]
  return %s
}
"""


def graph_and_inputs():
    graph = irc.parse_graph(MODEL)
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    return graph, [x, np.array([1, -1], np.int64)]


def test_compiled_model_matches_the_interpreter_and_shows_its_driver():
    graph, inputs = graph_and_inputs()
    model = irc.compile(graph, pipeline="")
    assert isinstance(model, CompiledModel) and model.num_threads >= 1
    for got, want in zip(model(*inputs), irc.run(graph, inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    source = model.driver_source
    assert source.startswith("def run(x0, x1):")
    assert source.count("  # %") == 5  # four kernel calls and one reshape view
    assert "viewed as [4, 3]" in source and "return (" in source
    assert ("plan-memory", model.program.plan.statistics()) in model.stats


def test_inputs_by_name_and_outputs_that_outlive_the_call():
    graph, (x, i) = graph_and_inputs()
    model = irc.compile(graph, pipeline="")
    first, _ = model({"x": x, "i": i})
    kept = first.copy()
    model(x * 2, i[::-1].copy())
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ((np.zeros((1, 3, 4), np.float64), np.zeros(2, np.int64)), "must have dtype float32"),
        ((np.zeros((2, 3, 4), np.float32), np.zeros(2, np.int64)), "compiled for these shapes"),
        ((np.zeros((1, 3, 4), np.float32),), "takes 2 input"),
        (({"x": np.zeros((1, 3, 4), np.float32)},), "missing \\['i'\\]"),
        (([[1.0]], np.zeros(2, np.int64)), "must be a numpy array"),
    ],
)
def test_bad_inputs_are_named(inputs, message):
    graph, _ = graph_and_inputs()
    model = irc.compile(graph, pipeline="")
    with pytest.raises(InputError, match=message):
        model(*inputs)


def test_the_program_cache_frees_a_dropped_models_program():
    clear_cache()
    graph, inputs = graph_and_inputs()
    model = irc.compile(graph, pipeline="")
    assert cached_programs() == 1
    again = irc.compile(graph, pipeline="")
    assert again.cache_hit and cached_programs() == 1
    del model, again
    gc.collect()
    assert cached_programs() == 0  # its constants went with it
    assert not irc.compile(graph, pipeline="").cache_hit


def test_second_compile_of_the_same_graph_is_a_cache_hit():
    clear_cache()
    graph, inputs = graph_and_inputs()
    first = irc.compile(graph, pipeline="")
    second = irc.compile(graph, pipeline="", num_threads=1)
    assert not first.cache_hit and second.cache_hit
    assert second.program is first.program and second.num_threads == 1
    # each model has its own arena: a snapshot of one is not the other's
    op = second.calls[-1]
    assert second.snapshot(op, *inputs).arena is not first.snapshot(op, *inputs).arena
    np.testing.assert_array_equal(first(*inputs)[0], second(*inputs)[0])


def test_cache_key_covers_constant_bytes_and_pipeline():
    graph, _ = graph_and_inputs()
    other = graph.clone()
    w = other.ops[0]
    w.attrs["value"] = w.attrs["value"] + 1  # the same printed text, other bytes
    assert irc.print_graph(graph) == irc.print_graph(other)
    assert graph_key(graph, "") != graph_key(other, "")
    assert graph_key(graph, "") != graph_key(graph, "plan-memory")


def test_symbolic_batch_becomes_one_and_other_symbols_must_be_given():
    odd = irc.parse_graph(SYMBOLIC)
    with pytest.raises(BackendError, match="input 'x' has symbolic dimensions"):
        irc.compile(odd, pipeline="")
    graph = irc.parse_graph(SYMBOLIC.replace("S", "5"))
    model = irc.compile(graph, pipeline="")
    assert model.graph.inputs[0].type.shape == (1, 3, 5)
    assert graph.inputs[0].type.shape == ("N", 3, 5)  # the caller's graph is untouched
    two = irc.compile(odd, input_shapes={"x": (2, 3, 5)}, pipeline="")
    x = np.ones((2, 3, 5), np.float32)
    np.testing.assert_allclose(two(x)[0], irc.run(graph, [x])[0], rtol=1e-6)


def test_an_op_without_a_kernel_is_named():
    graph, _ = graph_and_inputs()
    with without_kernel("softmax"), pytest.raises(BackendError, match=r"op %s \(softmax\)"):
        irc.compile(graph, pipeline="")


def test_a_failing_kernel_is_named_at_run_time():
    graph, (x, _) = graph_and_inputs()
    model = irc.compile(graph, pipeline="")
    with pytest.raises(ExecutionError, match=r"op %g \(gather\) failed.*out of range"):
        model(x, np.array([0, 7], np.int64))


def test_thread_count_is_checked():
    graph, _ = graph_and_inputs()
    with pytest.raises(BackendError, match="num_threads must be between 1 and"):
        irc.compile(graph, pipeline="", num_threads=0)


def test_profile_times_every_kernel_call():
    graph, inputs = graph_and_inputs()
    model = irc.compile(graph, pipeline="")
    rows = model.profile(*inputs, runs=3)
    assert [r.kind for r in rows] == ["transpose", "softmax", "concat", "gather"]
    assert all(r.seconds > 0 for r in rows)
    assert "softmax" in format_profile(rows, top=2)


def test_onnx_models_and_text_ir_files_compile(tmp_path):
    model = tiny_cnn()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    graph = irc.import_onnx(model)
    compiled = irc.compile(model, input_shapes={"x": (2, 3, 8, 8)}, num_threads=1)
    (want,) = irc.run(graph, [x])
    np.testing.assert_allclose(compiled(x)[0], want, rtol=1e-5, atol=1e-6)
    path = tmp_path / "tiny.irc"
    path.write_text(irc.print_graph(graph, full=True))
    from_text = irc.compile(path, input_shapes={"x": (2, 3, 8, 8)}, num_threads=1)
    np.testing.assert_allclose(from_text(x)[0], want, rtol=1e-5, atol=1e-6)
    elided = irc.parse_graph(irc.print_graph(graph))
    with pytest.raises(BackendError, match="dumped without its data"):
        irc.compile(elided, pipeline="")


def test_a_kernel_numba_cannot_compile_is_named():
    @njit
    def broken(x, out):
        out[:] = x.no_such_attribute

    kernel_table._load_kernel_modules()
    table = dict(kernel_table.KERNEL_BUILDERS, softmax=lambda op: broken)
    graph, _ = graph_and_inputs()
    with patched_kernels(table), pytest.raises(BackendError, match=r"op %s \(softmax\): Numba"):
        irc.compile(graph, pipeline="")


def test_a_float_model_gives_the_same_bits_at_one_and_two_threads():
    """MobileNetV2's last 1×1 convs (960→160→1280 over 7×7, products of several blocks):
    the float kernels' OpenBLAS products used to differ in the last bits by thread count."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.05, name)
        for name, shape in (("w1", (160, 960, 1, 1)), ("w2", (1280, 160, 1, 1)))
    ]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["y"])]  # fmt: skip
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 960, 7, 7])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1280, 7, 7])
    graph = helper.make_graph(nodes, "late_convs", [x_info], [y_info], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((1, 960, 7, 7)).astype(np.float32)
    threads = (1, min(2, numba.config.NUMBA_NUM_THREADS))
    one, two = (irc.compile(model, num_threads=t)(x)[0] for t in threads)
    np.testing.assert_array_equal(one, two)
    w1, w2 = (numpy_helper.to_array(w)[:, :, 0, 0].astype(np.float64) for w in weights)
    want = np.einsum("oc,chw->ohw", w2, np.einsum("oc,chw->ohw", w1, x[0]))
    np.testing.assert_allclose(one[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_an_adaptive_model_gives_the_same_bits_on_every_thread_count(monkeypatch):
    """By default each call runs on 1 or all threads, whichever was faster lately; an INT8
    and a float model give the fixed-count models' outputs whichever count a call took.
    The machine is made to report an idle core, so the chooser tries all threads even
    while the other test worker keeps the cores busy."""
    monkeypatch.setattr(irc.compiled, "IdleCores", lambda: lambda: 2.0)
    images = np.random.default_rng(5).standard_normal((9, 3, 16, 16)).astype(np.float32)
    x = images[:1]
    for options in ({"precision": "int8", "calibration": images[1:]}, {}):
        adaptive = irc.compile(small_convnet(), **options)
        assert adaptive.adaptive_threads and adaptive.num_threads >= 2
        fixed = [irc.compile(small_convnet(), num_threads=t, **options)(x)[0] for t in (1, 2)]
        np.testing.assert_array_equal(fixed[0], fixed[1])
        for _ in range(40):  # the chooser tries the other count within its first gap
            np.testing.assert_array_equal(adaptive(x)[0], fixed[0])
        assert set(adaptive.calls_by_threads) == {1, 2}
        assert not irc.compile(small_convnet(), num_threads=1, **options).adaptive_threads
        pinned = adaptive.with_threads(1)  # the same program, its own arena, one thread
        assert pinned.program is adaptive.program and not pinned.adaptive_threads
        np.testing.assert_array_equal(pinned(x)[0], fixed[0])
        assert pinned.calls_by_threads == {1: 1}


@pytest.mark.parametrize("builder", [pool_concat_resize_net, small_convnet])
def test_a_run_resumed_from_any_snapshot_is_the_whole_run(builder):
    """A snapshot keeps the buffers live at its op, and only those: resumed after another
    input overwrote the arena, every call's snapshot (taken in a chain, each from the one
    before) gives the same outputs as a whole run."""
    model = irc.compile(builder(), num_threads=1, progress=False)
    rng = np.random.default_rng(4)
    x, other = (rng.standard_normal(model.graph.inputs[0].type.shape).astype(np.float32)
                for _ in range(2))  # fmt: skip
    (want,) = model(x)
    snapshot = None
    for op in model.calls:
        snapshot = model.snapshot(op, x, start=snapshot)
        model(other)  # every arena byte rewritten
        np.testing.assert_array_equal(model.run_from(snapshot, x)[0], want)
