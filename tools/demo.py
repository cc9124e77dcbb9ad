"""``make demo``: the main job on an embedded default.

For now (the foundation): import a model that ships inside the onnx package, verify it,
print the head of its IR and its per-layer summary, round-trip the text form, and run it
in the reference interpreter against the output stored beside it. Later issues make this
a real compile.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx

import irc
from irc.stats import format_stats

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _runner_input(model: onnx.ModelProto) -> np.ndarray:
    """The input onnx's backend runner feeds its light models: arange(n)/n in float32."""
    inits = {t.name for t in model.graph.initializer}
    vi = next(v for v in model.graph.input if v.name not in inits)
    shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def main(argv=None) -> int:
    """Run the demo on one of the onnx package's light models (default: squeezenet)."""
    parser = argparse.ArgumentParser(prog="python -m irc.tools.demo", description=__doc__)
    parser.add_argument(
        "--model",
        default="squeezenet",
        help="a light model of the onnx package: squeezenet, resnet50, …",
    )
    args = parser.parse_args(argv)
    path = os.path.join(LIGHT_DIR, f"light_{args.model}.onnx")
    model = onnx.load(path)

    start = time.perf_counter()
    graph = irc.import_onnx(model)
    irc.verify_graph(graph)
    imported = time.perf_counter() - start
    text = irc.print_graph(graph)
    assert irc.print_graph(irc.parse_graph(text)) == text
    print(
        f"== {os.path.basename(path)}: imported and verified in {imported:.2f} s; "
        "text IR round-trips exactly"
    )
    lines = text.splitlines()
    print("\n".join(lines[:12]) + f"\n  … {len(lines) - 14} more lines …\n" + "\n".join(lines[-2:]))
    print("\n== per-layer summary")
    print(format_stats(graph))

    start = time.perf_counter()
    (y,) = irc.run(graph, [_runner_input(model)])
    ran = time.perf_counter() - start
    expected = onnx.numpy_helper.to_array(onnx.load_tensor(path.replace(".onnx", "_output_0.pb")))
    err = float(np.abs(y - expected).max() / np.abs(expected).max())
    print(
        f"\n== reference interpreter: {ran:.2f} s; output {list(y.shape)}, top-1 class "
        f"{int(y.argmax())}; max error against onnx's stored output {err:.2e} of its range"
    )
    return 0 if err < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
