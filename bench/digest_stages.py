"""Digests of what the compile stages make of the shared models, to compare two versions.

For each model: ``irc.compile`` with ``strategy="auto"`` under a size budget of FP32/6,
GPTQ rounding, ``--calib`` calibration images (the sensitivity sample is their first
``--sample``; the GPTQ statistics come from the calibration images after it), one thread.
Printed per model, as short hashes: the activation ranges, the GPTQ rounding statistics,
the sensitivity table, the chosen plan and the saved model file (its graph and constants;
creation time and measured latencies left out). Two versions of irc that print the same
lines computed the same things.

    python bench/digest_stages.py [--models mobilenetv2_bn efficientnet_lite0_bn]
        [--calib 64] [--sample 8] [--engine compiled|reference] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

import irc
from irc.decision import Budgets

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


def digest_arrays(arrays) -> str:
    """A short hash of a sequence of arrays (dtype, shape and bytes) and plain values."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        if isinstance(a, np.ndarray):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.hexdigest()


def statistics_arrays(statistics) -> list:
    """Every array an ``InputStatistics`` holds, in a fixed order."""
    out = [statistics.hessian]
    for part in (statistics.halves, statistics.spatial_halves):
        out += list(part) if part is not None else [None]
    out.append(statistics.spatial)
    for m in [statistics.moments, *(statistics.half_moments or ())]:
        out += [None] if m is None else [m.patch_sum, m.positions, m.channel_mean]
    return out


def file_digest(path: Path) -> str:
    """A short hash of a saved model file's graph and constant bytes, leaving out what is
    measured afresh in each run (creation time, verified latency: ``note_measured_us``
    annotations and the metadata's decision summary)."""
    data = path.read_bytes()
    _, _, _, meta_len, ir_len, index_len, data_len = struct.unpack_from("<8sIIQQQQ", data, 0)
    start = struct.calcsize("<8sIIQQQQ32s32s32s") + 32
    metadata = json.loads(data[start : start + meta_len])
    for measured in ("created", "decision"):
        metadata.pop(measured, None)
    ir = zlib.decompress(data[start + meta_len : start + meta_len + ir_len]).decode()
    ir = re.sub(r"note_measured_us\s*=\s*[^,}]*", "", ir)
    payloads = data[len(data) - 32 - data_len : len(data) - 32]
    return digest_arrays([json.dumps(metadata, sort_keys=True), ir,
                          np.frombuffer(payloads, np.uint8)])  # fmt: skip


def digest_model(name: str, calib: int, sample: int, engine: str | None = None) -> dict:
    """The digests of one model (see the module docstring) and the seconds it took."""
    path = SHARED / "models" / f"{name}.onnx"
    fp32 = irc.compile(path, num_threads=1).report().totals.fp32_bytes
    start = time.perf_counter()
    model = irc.compile(path, num_threads=1, strategy="auto", rounding="gptq",
                        budgets=Budgets(max_bytes=int(fp32 / 6)),
                        calibration=SHARED / "data" / "imagenet-calib256",
                        preprocess=PRESETS[name], calibration_limit=calib,
                        sensitivity_limit=sample, progress=False,
                        **({"calibration_engine": engine} if engine else {}))  # fmt: skip
    seconds = time.perf_counter() - start
    ranges = model.calibration.ranges
    hessians = model.calibration.hessians
    table = model.choice.table
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "model.ircm"
        model.save(saved)
        saved_digest = file_digest(saved)
    return {
        "ranges": digest_arrays([(k, *ranges[k]) for k in sorted(ranges)]),
        "rounding_statistics": digest_arrays(
            [k for k in sorted(hessians)]
            + [a for k in sorted(hessians) for a in statistics_arrays(hessians[k])]
        ),
        "sensitivity": digest_arrays(
            [table.names, table.precisions]
            + [table.metrics[m] for m in sorted(table.metrics)]
            + [None if table.rounding is None else table.rounding.astype(str)]
        ),
        "plan": digest_arrays([json.dumps(model.choice.decision.plan, sort_keys=True)]),
        "saved_model": saved_digest,
        "seconds": round(seconds, 1),
        "calibrate_seconds": round(model.compile_seconds.get("calibrate", float("nan")), 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    parser.add_argument("--calib", type=int, default=64, help="calibration images")
    parser.add_argument("--sample", type=int, default=8, help="sensitivity images")
    parser.add_argument(
        "--engine",
        choices=("compiled", "reference"),
        help="what runs calibration (irc.compile's calibration_engine)",
    )
    parser.add_argument("--json", help="write the digests here")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the shared models and images")
    rows = {}
    for name in args.models:
        rows[name] = digest_model(name, args.calib, args.sample, args.engine)
        print(name, json.dumps(rows[name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
