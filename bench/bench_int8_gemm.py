"""INT8 GEMM throughput: irc's channels-last pointwise conv against onnxruntime's MatMulInteger.

For each shape (M pixels, K input channels, N output channels) both products run on one
thread in the same process, called in turn once per round (``irc.measure.interleaved``),
and the medians are kept. GOP/s counts 2·M·N·K per call.

- irc: ``irc.backends.numba.int_conv_nhwc.qconv_nhwc_prepared`` as a 1×1 conv (stride 1,
  no padding) of int8 NHWC x [1, 1, M, K] with int8 weights [N, K, 1, 1], int32 bias and
  per-channel multiplier 2^30 / shift 40, its weight table and constants prepared once (as
  a compiled model binds them): its time INCLUDES the requantization to int8. Numba is set
  to one thread.
- onnxruntime: a one-node ONNX model (opset 13) ``MatMulInteger`` of uint8 A [M, K] (with a
  zero point) by an int8 initializer B [K, N] into int32 (no requantization), one intra-op
  thread, called through an IO binding with a preallocated output.

The shapes: 512×512×512, and every 1×1 Conv of the shared models at batch 1 (identical
shapes measured once and counted with their multiplicity in the model totals). Each irc
GOP/s is also given as a percentage of the single-core ``vpdpbusd`` (512-bit) peak that
``bench/peak_probe.py`` measures in the same run.

    python bench/bench_int8_gemm.py [--runs 50] [--shapes 512|mobilenetv2|efficientnet|all]
                                    [--out bench/results/int8-gemm.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper, shape_inference  # noqa: E402

from irc.backends.numba import int_conv_nhwc  # noqa: E402
from irc.measure import interleaved  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[2] / "shared" / "models"  # ../shared beside the repo
MODELS = {"mobilenetv2": "mobilenetv2_bn.onnx", "efficientnet": "efficientnet_lite0_bn.onnx"}
FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
MULTIPLIER, SHIFT = 1 << 30, 40
X_ZERO, ZP = 3, -2


def _peak_probe():
    """bench/peak_probe.py imported by path (bench/ is not a package)."""
    path = Path(__file__).resolve().parent / "peak_probe.py"
    spec = importlib.util.spec_from_file_location("peak_probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peak_probe", module)
    spec.loader.exec_module(module)
    return module


def cpu_info() -> dict[str, str]:
    """The CPU's model name, family/model and which of ``FLAGS`` it has (/proc/cpuinfo)."""
    info = {"model name": platform.processor() or "?", "cpu family": "?", "model": "?"}
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in info and info[key] in ("?", platform.processor()):
            info[key] = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    info["flags"] = " ".join(f"{f}{'+' if f in flags else '-'}" for f in FLAGS)
    return info


def cpu_line() -> str:
    """One line naming the CPU: model name, family/model and the int8-relevant flags."""
    info = cpu_info()
    return (f"{info['model name']} (family {info['cpu family']}, model {info['model']}); "
            f"flags: {info['flags']}")  # fmt: skip


def model_shapes(path: Path) -> list[tuple[int, int, int]]:
    """(M, K, N) of every 1×1, stride-1, ungrouped Conv of the ONNX model at batch 1, in
    graph order: M = H·W of its output, K = C_in, N = C_out (shapes by ONNX inference)."""
    model = onnx.load(str(path))
    for inp in model.graph.input:  # batch 1
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(model.graph.value_info) + list(model.graph.output)
    }
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = weights[node.input[1]]
        if w[2:] != [1, 1] or attrs.get("group", 1) != 1:
            continue
        if any(s != 1 for s in attrs.get("strides", [1, 1])):
            continue
        out = shapes.get(node.output[0])
        if not out or len(out) != 4 or 0 in out[1:]:
            raise RuntimeError(f"{path.name}: no inferred shape for {node.name}")
        found.append((out[2] * out[3], w[1], w[0]))
    return found


def operands(m: int, k: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random int8 activations [M, K], weights [N, K], int32 bias and the derived constants."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    bias = rng.integers(-1000, 1000, n).astype(np.int32)
    return {"x": x, "w": w, "bias": bias, "wsums": w.astype(np.int64).sum(axis=1)}


def irc_runner(ops: dict[str, np.ndarray]):
    """run(_) -> int8 out [1, 1, M, N]: irc's pointwise channels-last conv on ``ops``, its
    plan, weight table and layer constants prepared once, as a compiled model binds them."""
    x, w = ops["x"], ops["w"]
    m, k = x.shape
    n = w.shape[0]
    x4 = np.ascontiguousarray(x.reshape(1, 1, m, k))
    w4 = np.ascontiguousarray(w.reshape(n, k, 1, 1))
    mult = np.full(n, MULTIPLIER, np.int32)
    shift = np.full(n, SHIFT, np.int32)
    out = np.empty((1, 1, m, n), np.int8)
    bias, wsums, c = ops["bias"], ops["wsums"], int_conv_nhwc
    lanes, tile = c.conv_plan(c.PATH_AUTO, k, n, m, m, 0)
    table = c.prepare_weights(w4, 8, 1, k, 1, 1, n, lanes)
    tail = c.prepare_tail(bias, mult, shift, wsums, X_ZERO, k, lanes)
    run_args = (1, 1, 1, 1, 0, 0, 1, 1, 1, X_ZERO, ZP, -128, 127, lanes, tile, 1)

    def run(_):
        c.qconv_nhwc_prepared(x4, w4, 8, table, tail, out, *run_args)
        return out

    return run


def ort_runner(ops: dict[str, np.ndarray]):
    """run(_) -> int32 [M, N]: onnxruntime MatMulInteger of uint8 x + 128 (zero point
    X_ZERO + 128) by the int8 weights [K, N], one thread, IO-bound output."""
    x, w = ops["x"], ops["w"]
    m, k = x.shape
    n = w.shape[0]
    a = (x.astype(np.int16) + 128).astype(np.uint8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["Y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(w.T), "B"),
            numpy_helper.from_array(np.array(X_ZERO + 128, np.uint8), "a_zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])  # fmt: skip
    y = np.empty((m, n), np.int32)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("A", ort.OrtValue.ortvalue_from_numpy(a))
    binding.bind_ortvalue_output("Y", ort.OrtValue.ortvalue_from_numpy(y))

    def run(_):
        sess.run_with_iobinding(binding)
        return y

    return run


def check(ops: dict[str, np.ndarray], irc_out: np.ndarray, ort_out: np.ndarray) -> str:
    """ "ok" if ort equals the exact integer product Σ (x - X_ZERO)·w and irc equals its
    requantization round(acc·2^30 / 2^40) + ZP (clipped) except, by one, on exact .5 ties;
    else what differs."""
    x, w = ops["x"].astype(np.int64), ops["w"].astype(np.int64)
    exact = (x - X_ZERO) @ w.T
    if not np.array_equal(exact, ort_out):
        return "ort differs from the exact product"
    acc = exact + ops["bias"][None, :]
    scaled = acc * MULTIPLIER
    want = np.clip(np.floor(scaled / 2.0**SHIFT + 0.5) + ZP, -128, 127)
    diff = irc_out.reshape(want.shape).astype(np.float64) - want
    tie = scaled % (1 << SHIFT) == 1 << (SHIFT - 1)
    if np.any(np.abs(diff) > 1) or np.any((diff != 0) & ~tie):
        return f"irc differs (max |diff| {np.max(np.abs(diff)):.0f}, not only at ties)"
    return "ok"


def bench_shape(m: int, k: int, n: int, runs: int) -> dict[str, float | str]:
    """Median seconds of irc and ort on one shape, interleaved, and ``check``'s verdict."""
    ops = operands(m, k, n)
    runners = {"irc": irc_runner(ops), "ort": ort_runner(ops)}
    status = check(ops, runners["irc"](None).copy(), runners["ort"](None).copy())
    times = interleaved(runners, None, runs, warmup=3)
    return {"irc": times["irc"], "ort": times["ort"], "check": status}


def shape_sets(which: str) -> dict[str, list[tuple[int, int, int]]]:
    """The shape lists to time, by set name, for ``--shapes``."""
    sets: dict[str, list[tuple[int, int, int]]] = {}
    if which in ("512", "all"):
        sets["512"] = [(512, 512, 512)]
    for name, file in MODELS.items():
        if which in (name, "all"):
            sets[name] = model_shapes(MODELS_DIR / file)
    if not sets:
        raise SystemExit(f"--shapes: unknown set {which!r}")
    return sets


HEADER = ("| M | K | N | count | irc ms | ort ms | irc GOP/s | ort GOP/s | irc/ort time "
          "| irc % peak | ort % peak |")  # fmt: skip
RULE = "|" + "---:|" * 11


def table(shapes: list[tuple[int, int, int]], runs: int, peak: float) -> list[str]:
    """Markdown rows for one shape set (unique shapes with their count) and its total."""
    counts = Counter(shapes)
    lines = [HEADER, RULE]
    tot_irc = tot_ort = tot_ops = 0.0
    failed = []
    for (m, k, n), count in counts.items():
        r = bench_shape(m, k, n, runs)
        ops = 2.0 * m * n * k
        g_irc, g_ort = ops / r["irc"] / 1e9, ops / r["ort"] / 1e9
        lines.append(
            f"| {m} | {k} | {n} | {count} | {1e3 * r['irc']:.4f} | {1e3 * r['ort']:.4f} "
            f"| {g_irc:.1f} | {g_ort:.1f} | {r['irc'] / r['ort']:.2f} "
            f"| {100 * g_irc / peak:.1f} | {100 * g_ort / peak:.1f} |"
        )
        print(lines[-1], flush=True)
        tot_irc += count * r["irc"]
        tot_ort += count * r["ort"]
        tot_ops += count * ops
        if r["check"] != "ok":
            failed.append(f"{m}×{k}×{n}: {r['check']}")
    g_irc, g_ort = tot_ops / tot_irc / 1e9, tot_ops / tot_ort / 1e9
    lines.append(
        f"| **total** | | | {len(shapes)} | **{1e3 * tot_irc:.3f}** | **{1e3 * tot_ort:.3f}** "
        f"| **{g_irc:.1f}** | **{g_ort:.1f}** | **{tot_irc / tot_ort:.2f}** "
        f"| {100 * g_irc / peak:.1f} | {100 * g_ort / peak:.1f} |"
    )
    print(lines[-1], flush=True)
    lines.append("")
    if failed:
        lines.append("Result check FAILED: " + "; ".join(failed))
    else:
        lines.append(
            "Result check: ort = the exact int32 product; irc = its requantization (exactly, "
            "up to ±1 on exact .5 rounding ties) on every shape."
        )
    return lines


def main() -> None:
    """Time the shapes, print the tables and optionally write them as markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="interleaved rounds per shape")
    parser.add_argument("--shapes", default="all",
                        choices=["512", "mobilenetv2", "efficientnet", "all"])  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write a markdown file")
    parser.add_argument("--peak-seconds", type=float, default=0.5)
    args = parser.parse_args()

    numba.set_num_threads(1)
    pp = _peak_probe()
    sets = shape_sets(args.shapes)
    head = [
        f"CPU: {cpu_line()}",
        f"LLVM host CPU: {pp.llvm.get_host_cpu_name()}; irc quad (vpdpbusd) kernel: "
        f"{bool(int_conv_nhwc.HAVE_VNNI)}",
        f"numba {numba.__version__} (threads: {numba.get_num_threads()}), onnxruntime "
        f"{ort.__version__} (intra_op_num_threads=1), numpy {np.__version__}, "
        f"Python {platform.python_version()}",
    ]
    for line in head:
        print(line)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    before = pp.peaks(args.peak_seconds)
    md = ["# INT8 GEMM: irc pointwise conv vs onnxruntime MatMulInteger, one thread", ""]
    md += [f"- {line}" for line in head]
    md += [
        "- irc: `qconv_nhwc_prepared` as a 1×1 conv, int8 NHWC [1, 1, M, K] × int8 "
        "[N, K, 1, 1] **including requantization to int8** (bias, multiplier 2^30, shift 40); "
        "its weight table prepared once, as a compiled model binds it.",
        "- ort: `MatMulInteger` (opset 13), uint8 A [M, K] with zero point × int8 "
        "initializer B [K, N] → **int32, no requantization**; IO binding, preallocated "
        "output.",
        f"- Median of {args.runs} interleaved rounds (`irc.measure.interleaved`), after 3 "
        "warm-up rounds; GOP/s = 2·M·N·K / median time. `% peak` is of the single-core "
        "`vpdpbusd` 512-bit peak measured by `bench/peak_probe.py` in the same run (best of "
        "its measurements before and after the GEMMs).",
        "",
    ]
    tables = []
    peak_pre = before.get("vpdpbusd 512")
    if not peak_pre:
        raise SystemExit("host has no AVX-512 VNNI: no vpdpbusd 512 peak to compare with")
    for name, shapes in sets.items():
        print(f"\n## {name}: {len(shapes)} products, {len(set(shapes))} distinct")
        print(HEADER)
        print(RULE)
        rows = table(shapes, args.runs, peak_pre)
        tables.append((name, shapes, rows))
    after = pp.peaks(args.peak_seconds)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    md[2 + len(head) : 2 + len(head)] = [
        f"- 1-minute load average (2 cores, shared machine): {load_before:.2f} at the start, "
        f"{load_after:.2f} at the end; the peaks are timed by thread CPU time, the GEMMs by "
        "wall time (median of short calls)."
    ]
    peak = max(peak_pre, after["vpdpbusd 512"])
    if peak != peak_pre:  # recompute the percentages against the better peak
        tables = [(n, s, [_rescale(r, peak_pre, peak) for r in rows]) for n, s, rows in tables]
    peak_lines = [
        "## Single-core peaks (bench/peak_probe.py)",
        "",
        "| instruction | MACs/instr | GOP/s before | GOP/s after |",
        "|---|---:|---:|---:|",
    ]
    for name, gops in before.items():
        macs = pp.PROBES[name].macs
        peak_lines.append(f"| {name} | {macs} | {gops:.1f} | {after[name]:.1f} |")
    peak_lines += ["", f"`% peak` below uses vpdpbusd 512 = {peak:.1f} GOP/s.",
                   "vpmaddwd+vpaddd counts the pair as one step (16 / 32 MACs).", ""]  # fmt: skip
    md += peak_lines
    for name, shapes, rows in tables:
        title = "512×512×512" if name == "512" else f"{name} 1×1 convs at batch 1"
        md += [f"## {title} ({len(shapes)} products, {len(set(shapes))} distinct)", ""]
        md += rows + [""]
    print("\n" + "\n".join(md))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(md))
        print(f"wrote {args.out}")


def _rescale(row: str, old: float, new: float) -> str:
    """A table row with its last two columns (% of peak) recomputed for peak ``new``."""
    cells = row.split("|")
    if len(cells) < 13 or not cells[-2].strip().replace(".", "").isdigit():
        return row
    for i in (-3, -2):
        cells[i] = f" {float(cells[i]) * old / new:.1f} "
    return "|".join(cells)


if __name__ == "__main__":
    main()
