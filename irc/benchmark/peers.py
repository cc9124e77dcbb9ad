"""onnxruntime as the benchmark's peer: its FP32 session and its static INT8 quantization.

onnxruntime is an optional dependency (the ``demo`` and ``test`` extras): ``require_ort``
turns its absence into an InputError that says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from irc.errors import InputError


def require_ort():
    """The onnxruntime module, or an InputError telling how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise InputError(
            "bench: onnxruntime is not installed; pip install 'irc[demo]' (or pass "
            "--no-peers to leave onnxruntime out)"
        ) from None
    return onnxruntime


def ort_session(path, threads: int, spin: bool = False):
    """An onnxruntime CPU session with ``threads`` intra-op threads and one inter-op."""
    ort = require_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_int8_model(path, calib: np.ndarray, out) -> Path:
    """onnxruntime's ``quantize_static`` of the ONNX model ``path`` into ``out``.

    QDQ format, per-channel weights, activations calibrated (minmax) on ``calib``, one
    input at a time. Shape pre-processing skips the symbolic pass (it needs sympy). A model
    below opset 13 is converted to 13 first (``at_least_opset13``).
    """
    require_ort()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort_session(path, 1).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    out = Path(out)
    prepared = out.with_suffix(".pre.onnx")
    path = at_least_opset13(path, out.with_suffix(".opset13.onnx"))
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)  # fmt: skip
    return out


def at_least_opset13(path, converted) -> Path:
    """``path`` when its opset is 13 or later, else its conversion to opset 13 written to
    ``converted``: per-channel QDQ needs ``DequantizeLinear``'s axis (opset 13), and
    ``quantize_static`` writes it into an opset 11/12 model that onnxruntime then refuses."""
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return Path(path)
    onnx.save(version_converter.convert_version(onnx.load(str(path)), 13), str(converted))
    return Path(converted)
