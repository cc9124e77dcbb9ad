"""Group-wise weight scales against per-channel scales at INT4 and INT2 (issue 24, item 4).

A float simulation of weight quantization only, so that the comparison isolates the weight
scales: every activation stays float32. For each model, each conv / gemm weight that is not
depthwise (``--depthwise float``, the default, keeps depthwise layers float and out of the
byte count; ``same`` quantizes them per channel at the scheme's bits) is replaced by its
fake-quantized version (levels × scale, in float) and the float program
(``irc.build.build``) runs on ImageNet images:

- schemes: one scale per output channel (irc today), or one per group of G consecutive input
  channels within each output channel (all kernel taps of those channels; G = 8 ... 128);
  irc's weight grids (``irc.quant.round_levels``: INT4 levels -8..7, INT2 the odd levels
  -3, -1, 1, 3) and irc's ``mse`` clipping search (``irc.quant.weight_scales``: 80 clip
  ratios in [0.2, 1] of the group's peak, least squared error) per scale group; every
  scale stored as float16 (the simulation rounds it so) at 2 bytes;
- bias correction as irc's quantize pass does it (on by default): each layer's bias
  shifted by E[(W_q - W)·x], x's per-channel means from ``--calib-limit`` images of
  imagenet-calib256;
- bytes: packed weight bits (rows padded to whole bytes, as irc packs them) + 2 bytes per
  scale; bits per weight include the scales;
- output SQNR against the FP32 model's logits, 10·log10(Σ ref² / Σ (ref - test)²), on the
  first ``--sqnr-images`` images of imagenet-val1300, and top-1 on ``--limit`` of them;
- the equal-bytes comparison: each layer's output noise Σ (ref - test)² with that layer
  alone quantized per channel at 2, 4 and 8 bits (the others float; 64 images), then, for
  each group scheme's byte total, a per-channel mix that spends the same extra bytes
  raising layers (INT4 → INT8, or INT2 → INT4 / INT8), greedily by noise removed per byte;
  the mix is then measured like every scheme.

    python bench/bench_group_scales.py [--models mobilenetv2_bn efficientnet_lite0_bn]
        [--bits 4 2] [--groups 8 16 32 64 128] [--limit 1300] [--sqnr-images 64]
        [--calib-limit 64] [--no-bias-correction] [--depthwise float] [--batch 32]
        [--threads 1] [--cache /tmp/irc-group-scales] [--json out.json]

FP32 logits and the per-layer noise are cached under ``--cache`` (keyed by model and
settings); the tables are printed as Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from irc.build import build
from irc.calibration import load_labelled_folder
from irc.matching import constant_array
from irc.precision import layer_name
from irc.quant import round_levels, weight_scales
from irc.specialize import specialize
from irc.stages import calibrate, float_graph
from irc.support import quantizable_layers

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}
SCALE_BYTES = 2  # a float16 scale
FP16_TINY = np.float16(2.0**-24)  # the smallest positive float16: a scale never rounds to 0
MIX_CHOICES = {4: (8,), 2: (4, 8)}  # per-channel bits a mix may raise a layer to


@dataclass
class Layer:
    """One quantizable layer: its weight as [O, C, S] (output channels, input channels
    per conv group, kernel taps), its bias and its input's per-channel means."""

    name: str
    weight: np.ndarray  # float32 as the graph holds it
    rows: np.ndarray  # float64 [O, C, S]
    transposed: bool  # a gemm with trans_b = 0: the graph holds [K, O]
    depthwise: bool
    conv_group: int
    bias: np.ndarray | None
    mean: np.ndarray | None

    @property
    def size(self) -> int:
        return self.weight.size


# ------------------------------------------------------------------ quantization
def group_fake_quant(rows: np.ndarray, bits: int, group: int | None) -> tuple[np.ndarray, int]:
    """``rows`` [O, C, S] fake-quantized at ``bits`` with one float16 scale per output
    channel (``group`` None) or per ``group`` consecutive input channels of each output
    channel; returns the dequantized weights (float64, same shape) and the scale count."""
    out, channels, taps = rows.shape
    step = channels if group is None else group
    result = np.empty_like(rows)
    count = 0
    for start in range(0, channels, step):
        block = rows[:, start : start + step, :].reshape(out, -1)
        scales = float16_scales(weight_scales(block, bits, "mse"))
        levels = round_levels(block / scales[:, None], bits)
        result[:, start : start + step, :] = (levels * scales[:, None]).reshape(out, -1, taps)
        count += out
    return result, count


def float16_scales(scales: np.ndarray) -> np.ndarray:
    """``scales`` as stored at 2 bytes: rounded to float16, never 0 (float64)."""
    half = np.maximum(np.asarray(scales, np.float32).astype(np.float16), FP16_TINY)
    return half.astype(np.float64)


def packed_bytes(layer: Layer, bits: int, scales: int) -> int:
    """Stored bytes of ``layer`` at ``bits``: rows packed to whole bytes, 2 per scale."""
    out = layer.rows.shape[0]
    per_row = layer.size // out
    return out * -(-per_row * bits // 8) + SCALE_BYTES * scales


def scale_count(layer: Layer, group: int | None) -> int:
    """How many scales ``layer`` stores at ``group`` (None: one per output channel)."""
    out, channels, _ = layer.rows.shape
    return out if group is None else out * -(-channels // group)


def corrected_bias(layer: Layer, fake: np.ndarray) -> np.ndarray | None:
    """``layer``'s bias minus the mean output error of ``fake`` ([O, C, S]) weights, as
    irc's quantize pass corrects it; the bias as it was without means."""
    if layer.bias is None or layer.mean is None:
        return layer.bias
    error = (fake - layer.rows).sum(axis=2)  # [O, C]: a channel's taps all see its mean
    out, channels = error.shape
    mu_of = layer.mean.reshape(layer.conv_group, channels)[
        np.arange(out) // (out // layer.conv_group)
    ]
    shift = np.einsum("oc,oc->o", error, mu_of)
    return (layer.bias.astype(np.float64) - shift).astype(np.float32)


def as_graph_weight(layer: Layer, fake: np.ndarray) -> np.ndarray:
    """Fake-quantized rows [O, C, S] back in the graph's layout (float32)."""
    w = fake.reshape(layer.weight.shape[::-1] if layer.transposed else layer.weight.shape)
    return np.ascontiguousarray(w.T if layer.transposed else w, np.float32)


# ------------------------------------------------------------------ the graph
def layer_table(graph, means) -> list[Layer]:
    """The graph's quantizable layers; ``means`` maps a value name to its channel means
    (None: no bias correction)."""
    layers = []
    for op in quantizable_layers(graph):
        w = constant_array(op.operands[1])
        transposed = op.kind == "gemm" and not op.attrs["trans_b"]
        oriented = w.T if transposed else w
        group = op.attrs["group"] if op.kind == "conv2d" else 1
        rows = np.asarray(oriented, np.float64).reshape(oriented.shape[0], oriented.shape[1], -1)
        bias = constant_array(op.operands[2]) if len(op.operands) > 2 else None
        mean = None if means is None else means(op.operands[0].name)
        if mean is not None and mean.shape != (rows.shape[1] * group,):
            mean = None
        layers.append(Layer(layer_name(op), w, rows, transposed, group > 1 and rows.shape[1] == 1,
                            group, None if bias is None else bias.reshape(-1), mean))  # fmt: skip
    return layers


def with_weights(graph, replacements: dict[str, tuple[np.ndarray, np.ndarray | None]]):
    """A copy of ``graph`` whose named layers take (weight, bias) from ``replacements``."""
    copy = graph.clone()
    for op in quantizable_layers(copy):
        if layer_name(op) not in replacements:
            continue
        weight, bias = replacements[layer_name(op)]
        set_constant(op.operands[1], weight)
        if bias is not None and len(op.operands) > 2:
            set_constant(op.operands[2], bias.reshape(constant_array(op.operands[2]).shape))
    return copy


def set_constant(value, array: np.ndarray) -> None:
    """Give the constant producing ``value`` (used once) the data ``array``."""
    if len(value.uses) != 1:
        raise ValueError(f"constant %{value.name} has {len(value.uses)} uses; expected one")
    value.producer.attrs["value"] = array


def run_logits(graph, images: np.ndarray, batch: int, threads: int) -> np.ndarray:
    """The graph's first output on ``images``, by its compiled float program at ``batch``
    (the last batch padded with zeros)."""
    name = graph.inputs[0].name
    model = build(specialize(graph, {name: (batch, *images.shape[1:])}), num_threads=threads)
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        if len(x) < batch:
            x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), x.dtype)])
        out.append(np.array(model(np.ascontiguousarray(x))[0])[: len(images) - start])
    return np.concatenate(out).astype(np.float64)


# ------------------------------------------------------------------ measures
def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10·log10(Σ ref² / Σ (ref - test)²)."""
    noise = float(np.sum((ref - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 in percent."""
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == labels[: len(logits)]))


@dataclass(frozen=True)
class Setup:
    """What every scheme of a model is measured on."""

    graph: object
    layers: list[Layer]
    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray  # FP32 logits of every image
    sqnr_images: int
    batch: int
    threads: int
    depthwise: str  # "float" or "same"

    def counted(self) -> list[Layer]:
        return [la for la in self.layers if not la.depthwise or self.depthwise == "same"]


def assignment_for(setup: Setup, bits: int, group: int | None) -> dict[str, tuple[int, int | None]]:
    """Every counted layer at ``bits`` and ``group`` (depthwise ones per channel)."""
    return {la.name: (bits, None if la.depthwise else group) for la in setup.counted()}


def replacements_for(setup: Setup, assignment) -> tuple[dict, int, int]:
    """(graph replacements, stored bytes, weights counted) of a layer → (bits, group)
    ``assignment``; layers not in it stay float and are not counted."""
    out, total, weights = {}, 0, 0
    for layer in setup.layers:
        if layer.name not in assignment:
            continue
        bits, group = assignment[layer.name]
        fake, scales = group_fake_quant(layer.rows, bits, group)
        out[layer.name] = (as_graph_weight(layer, fake), corrected_bias(layer, fake))
        total += packed_bytes(layer, bits, scales)
        weights += layer.size
    return out, total, weights


def measure(setup: Setup, assignment, images: int | None = None) -> dict:
    """Bytes, bits per weight, SQNR and top-1 (over ``images``, all by default)."""
    replacements, total, weights = replacements_for(setup, assignment)
    count = len(setup.images) if images is None else images
    logits = run_logits(with_weights(setup.graph, replacements), setup.images[:count],
                        setup.batch, setup.threads)  # fmt: skip
    n = setup.sqnr_images
    row = dict(bytes=total, bits_per_weight=8 * total / max(weights, 1),
               sqnr=sqnr_db(setup.reference[:n], logits[:n]))  # fmt: skip
    if count > n:
        row["top1"] = top1(logits, setup.labels)
    return row


def precision_key(bits: int, group: int | None) -> str:
    """A per-layer precision as text: "4" (per channel) or "4g32" (groups of 32)."""
    return str(bits) if group is None else f"{bits}g{group}"


def parse_precision(key: str) -> tuple[int, int | None]:
    bits, _, group = key.partition("g")
    return int(bits), int(group) if group else None


def layer_noise(setup: Setup, keys, cache: Path) -> dict[str, dict[str, float]]:
    """{layer: {precision key: Σ (ref - test)² over the SQNR images}} with that layer alone
    quantized at that precision, the others float (cached as JSON at ``cache``; missing
    entries are measured and added)."""
    noise = json.loads(cache.read_text()) if cache.exists() else {}
    n = setup.sqnr_images
    ref = setup.reference[:n]
    for layer in setup.counted():
        entry = noise.setdefault(layer.name, {})
        for key in keys:
            if key in entry:
                continue
            bits, group = parse_precision(key)
            group = None if layer.depthwise else group
            replacements, _, _ = replacements_for(setup, {layer.name: (bits, group)})
            logits = run_logits(with_weights(setup.graph, replacements), setup.images[:n],
                                setup.batch, setup.threads)  # fmt: skip
            entry[key] = float(np.sum((ref - logits) ** 2))
        cache.write_text(json.dumps(noise))
    return noise


def mix_choices(base: int, groups) -> list[str]:
    """The precisions a mix over ``base`` bits may give a layer: per channel at ``base``
    and above (``MIX_CHOICES``), and group-wise at ``base`` (and at 4 over INT2) for
    each of ``groups``."""
    keys = [precision_key(base, None)] + [precision_key(b, None) for b in MIX_CHOICES[base]]
    for bits in (base, 4) if base == 2 else (base,):
        keys += [precision_key(bits, g) for g in groups]
    return keys


def greedy_mix(setup: Setup, noise, choices, budget: int) -> dict[str, tuple[int, int | None]]:
    """A precision per layer: every layer at ``choices[0]`` first, then the change (to a
    costlier precision of ``choices``) that removes the most predicted noise (the sum of
    the layers' measured noise) per extra byte, while the total stays within ``budget``."""
    layers = {la.name: la for la in setup.counted()}
    now = {name: choices[0] for name in layers}

    def cost(name: str, key: str) -> int:
        bits, group = parse_precision(key)
        group = None if layers[name].depthwise else group
        return packed_bytes(layers[name], bits, scale_count(layers[name], group))

    total = sum(cost(name, choices[0]) for name in layers)
    while True:
        best, best_ratio = None, 0.0
        for name, key in now.items():
            for other in choices:
                extra = cost(name, other) - cost(name, key)
                gain = noise[name][key] - noise[name][other]
                if extra > 0 and total + extra <= budget and gain / extra > best_ratio:
                    best, best_ratio = (name, other, extra), gain / extra
        if best is None:
            return {name: parse_precision(key) for name, key in now.items()}
        now[best[0]] = best[1]
        total += best[2]


def scheme_bytes(setup: Setup, bits: int, group: int | None) -> int:
    """Stored bytes of every counted layer at ``bits`` and ``group``, without measuring."""
    return sum(packed_bytes(la, b, scale_count(la, g))
               for la in setup.counted()
               for b, g in [assignment_for(setup, bits, group)[la.name]])  # fmt: skip


def mix_label(mix, base: int, scheme: str) -> str:
    """How a mix names itself: its budget and how many layers take each precision."""
    counts: dict[str, int] = {}
    for bits, group in mix.values():
        key = precision_key(bits, group)
        counts[key] = counts.get(key, 0) + 1
    spread = ", ".join(f"{n}× {k}" for k, n in sorted(counts.items()) if k != str(base))
    return f"mix at {scheme} bytes ({spread or 'none raised'})"


# ------------------------------------------------------------------ driver
def load_images(preset: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` images of imagenet-val1300 (preprocessed) and their labels."""
    images, labels = [], []
    for batch, label in load_labelled_folder(SHARED / "data" / "imagenet-val1300", preset, limit):
        images.append(batch)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def cache_key(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def prepare(name: str, args) -> Setup:
    """Graph, layers (with calibrated means), images and cached FP32 logits of a model."""
    preset = PRESETS[name]
    graph = float_graph(SHARED / "models" / f"{name}.onnx")
    means = None
    if args.bias_correction:
        calibration = calibrate(graph, SHARED / "data" / "imagenet-calib256", preprocess=preset,
                                limit=args.calib_limit, num_threads=args.threads)  # fmt: skip
        means = calibration.channel_mean
    images, labels = load_images(preset, args.limit)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ref_path = cache / f"{name}-fp32-{cache_key(args.limit, args.batch)}.npy"
    if ref_path.exists():
        reference = np.load(ref_path)
    else:
        reference = run_logits(graph, images, args.batch, args.threads)
        np.save(ref_path, reference)
    return Setup(graph, layer_table(graph, means), images, labels, reference, args.sqnr_images,
                 args.batch, args.threads, args.depthwise)  # fmt: skip


def scheme_label(group: int | None) -> str:
    return "per channel" if group is None else f"G = {group}"


def run_model(name: str, args) -> list[dict]:
    """Every row of one model: the group schemes, then the equal-bytes mixes."""
    start = time.perf_counter()
    setup = prepare(name, args)
    fp32 = top1(setup.reference, setup.labels)
    fp32_bytes = 4 * sum(la.size for la in setup.counted())
    rows = [dict(model=name, bits=32, scheme="fp32", top1=fp32, sqnr=float("inf"),
                 bytes=fp32_bytes, bits_per_weight=32.0)]  # fmt: skip
    log(f"{name}: prepared in {time.perf_counter() - start:.0f} s; fp32 top-1 {fp32:.2f}")
    key = cache_key(args.sqnr_images, args.bias_correction, args.calib_limit, args.depthwise)
    keys = dict.fromkeys(k for bits in args.bits for k in mix_choices(bits, args.mix_groups))
    noise = layer_noise(setup, list(keys), Path(args.cache) / f"{name}-noise-{key}.json")
    log(f"{name}: per-layer noise after {time.perf_counter() - start:.0f} s")
    for bits in args.bits:
        for group in [None, *args.groups]:
            if args.mixes_only:
                continue
            row = measure(setup, assignment_for(setup, bits, group))
            rows.append(dict(model=name, bits=bits, scheme=scheme_label(group), **row))
            log(f"{name} int{bits} {scheme_label(group)}: {fmt_row(row)}")
        budgets = [(scheme_label(g), scheme_bytes(setup, bits, g)) for g in args.groups]
        variants = [args.mix_groups] if args.mixes_only and args.mix_groups else [[]]
        if args.mix_groups and not args.mixes_only:
            variants.append(args.mix_groups)
        for groups in variants:
            for scheme, budget in budgets:
                mix = greedy_mix(setup, noise, mix_choices(bits, groups), budget)
                row = measure(setup, mix)
                label = mix_label(mix, bits, scheme)
                rows.append(dict(model=name, bits=bits, scheme=label, **row))
                log(f"{name} int{bits} {label}: {fmt_row(row)}")
    return rows


def fmt_row(row: dict) -> str:
    return (f"{row['bits_per_weight']:.3f} b/w, {row['bytes'] / 1e6:.3f} MB, "
            f"SQNR {row['sqnr']:.2f} dB, top-1 {row.get('top1', float('nan')):.2f}")  # fmt: skip


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def markdown(rows: list[dict]) -> str:
    """One table per model and bit width."""
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        fp32 = next(r for r in rows if r["model"] == name and r["bits"] == 32)
        for bits in sorted({r["bits"] for r in rows if r["model"] == name} - {32}, reverse=True):
            out += [f"\n{name}, INT{bits} weights (FP32 top-1 {fp32['top1']:.2f}, "
                    f"counted weights {fp32['bytes'] / 4e6:.3f} M)\n",
                    "| scheme | bits/weight | weight MB | SQNR dB | top-1 |",
                    "|---|---:|---:|---:|---:|"]  # fmt: skip
            for r in rows:
                if r["model"] == name and r["bits"] == bits:
                    out.append(f"| {r['scheme']} | {r['bits_per_weight']:.3f} | "
                               f"{r['bytes'] / 1e6:.3f} | {r['sqnr']:.2f} | "
                               f"{r.get('top1', float('nan')):.2f} |")  # fmt: skip
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--bits", nargs="+", type=int, default=[4, 2], choices=[4, 2])
    parser.add_argument("--groups", nargs="+", type=int, default=[8, 16, 32, 64, 128])
    parser.add_argument("--limit", type=int, default=1300, help="top-1 images (val1300)")
    parser.add_argument("--sqnr-images", type=int, default=64, help="the first N images")
    parser.add_argument("--calib-limit", type=int, default=64, help="images for input means")
    parser.add_argument("--no-bias-correction", dest="bias_correction", action="store_false")
    parser.add_argument(
        "--depthwise",
        choices=("float", "same"),
        default="float",
        help="depthwise layers: float (not counted) or per channel at the bits",
    )
    parser.add_argument(
        "--mix-groups",
        nargs="*",
        type=int,
        default=[],
        help="group sizes a mix may also choose per layer",
    )
    parser.add_argument(
        "--mixes-only",
        action="store_true",
        help="skip the uniform schemes (their bytes still set the budgets)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="/tmp/irc-group-scales")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        rows += run_model(name, args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"\n{args.limit} val images (SQNR on the first {args.sqnr_images}); bias correction "
          f"{'on' if args.bias_correction else 'off'}; depthwise {args.depthwise}")  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    main()
