"""Time irc's float conv2d kernels against onnxruntime on a model's conv layer shapes.

For each distinct conv of the model (batch 1 unless --batch), one single-op ONNX model
(Conv, plus Clip when the model follows that conv's BatchNormalization with a Clip, which
onnxruntime fuses) runs in onnxruntime and the same op runs through irc's kernel, both on
one thread unless --threads, interleaved, median of --runs calls each.

    python bench/bench_conv_kernels.py [--model PATH] [--runs 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numba
import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

from irc.backends.numba.kernel_table import bind_kernel
from irc.benchmark.peers import require_ort
from irc.ir import Graph
from irc.measure import interleaved
from irc.opdef import build
from irc.types import DType, TensorType

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "mobilenetv2_bn.onnx"


def conv_layers(path: Path, batch: int):
    """Distinct convs of the model as ((x shape, w shape, attrs, relu6), count) in model
    order."""
    model = shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    shapes = {
        v.name: [d.dim_value or batch for d in v.type.tensor_type.shape.dim]
        for v in list(graph.value_info) + list(graph.input)
    }
    inits = {i.name: list(i.dims) for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def followed_by_clip(name):
        for node in consumers.get(name, []):
            if node.op_type == "Clip":
                return True
            if node.op_type == "BatchNormalization":
                return followed_by_clip(node.output[0])
        return False

    counts: dict = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {
            "strides": tuple(attrs.get("strides", (1, 1))),
            "pads": tuple(attrs.get("pads", (0, 0, 0, 0))),
            "dilations": tuple(attrs.get("dilations", (1, 1))),
            "group": attrs.get("group", 1),
        }
        x_shape = tuple([batch] + shapes[node.input[0]][1:])
        key = (x_shape, tuple(inits[node.input[1]]), tuple(attrs.items()))
        key += (followed_by_clip(node.output[0]),)
        counts[key] = counts.get(key, 0) + 1
    return list(counts.items())


def ort_session(x_shape, w, b, attrs, relu6, threads):
    """An onnxruntime session running one Conv (+ Clip 0..6)."""
    ort = require_ort()  # an optional dependency: imported when a session is made
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(w.shape[2:]), **attrs)
    ]
    inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")]
    out = "y"
    if relu6:
        inits += [
            onnx.numpy_helper.from_array(np.array(0, np.float32), "lo"),
            onnx.numpy_helper.from_array(np.array(6, np.float32), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["y", "lo", "hi"], ["z"]))
        out = "z"
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), options)


def irc_kernel(x_shape, w, attrs, relu6):
    """irc's bound conv2d kernel for the layer, and its preallocated output."""
    graph = Graph()
    operands = [
        graph.add_input("x", TensorType(DType.F32, x_shape)),
        graph.add_input("w", TensorType(DType.F32, w.shape)),
        graph.add_input("b", TensorType(DType.F32, (w.shape[0],))),
    ]
    act = {"activation": "clip", "act_min": 0.0, "act_max": 6.0} if relu6 else {}
    op = build(graph, "conv2d", operands, {**attrs, **act})
    return bind_kernel(op), np.empty(op.result.type.shape, np.float32), op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # before the first parallel run
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    total_irc = total_ort = 0.0
    print(f"{'input':>18} {'weight':>18} {'s':>3} {'g':>4} {'act':>4} {'n':>2} "
          f"{'irc µs':>9} {'ort µs':>9} {'ratio':>6} {'maxerr':>8}")  # fmt: skip
    for (x_shape, w_shape, attr_items, relu6), count in conv_layers(args.model, args.batch):
        attrs = dict(attr_items)
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) * 0.1).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        session = ort_session(x_shape, w, b, attrs, relu6, args.threads)
        kernel, out, _ = irc_kernel(x_shape, w, attrs, relu6)
        expected = session.run(None, {"x": x})[0]
        kernel(x, w, b, out)
        err = float(np.abs(out - expected).max())
        runners = {
            "irc": lambda a, k=kernel, w=w, b=b, out=out: k(a, w, b, out),
            "ort": lambda a, s=session: s.run(None, {"x": a}),
        }
        medians = interleaved(runners, x, args.runs, warmup=0)  # both ran once above
        mi, mo = medians["irc"] * 1e6, medians["ort"] * 1e6
        total_irc += mi * count
        total_ort += mo * count
        print(f"{str(list(x_shape)):>18} {str(list(w_shape)):>18} {attrs['strides'][0]:>3} "
              f"{attrs['group']:>4} {'r6' if relu6 else '-':>4} {count:>2} {mi:9.1f} {mo:9.1f} "
              f"{mi / mo:6.2f} {err:8.1e}")  # fmt: skip
    print(f"all convs of the model: irc {total_irc:.0f} µs, onnxruntime {total_ort:.0f} µs, "
          f"ratio {total_irc / total_ort:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
