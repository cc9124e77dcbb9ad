"""The Resize converter: irc's ``resize`` from an ONNX Resize node of any opset (10 to 19)."""

from __future__ import annotations

import numpy as np

from irc.errors import ConversionError
from irc.frontends.onnx_converters import (
    attributes,
    constant_input,
    converter,
    emit,
    node_label,
    operand,
    unsupported,
)

_COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
)


@converter("Resize")
def convert_resize(ctx, node):
    """One ``resize`` op with the node's attributes."""
    x = operand(ctx, node, 0)
    return [emit(ctx, node, "resize", [x], resize_attributes(ctx, node, x))]


def resize_attributes(ctx, node, x) -> dict:
    """``mode``, per-axis ``scales`` and ``sizes`` and the coordinate rules of the node."""
    a = attributes(node)
    rank = x.type.rank
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise unsupported(ctx, node, f"mode '{mode}'; irc supports nearest and linear")
    if ctx.opset < 11:
        scales = constant_input(ctx, node, 1, "scales")
        coordinate_mode, nearest_mode, sizes_given, axes = "asymmetric", "floor", None, None
    else:
        coordinate_mode = a.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = a.get("nearest_mode", "round_prefer_floor")
        scales = constant_input(ctx, node, 2, "scales")
        sizes_given = constant_input(ctx, node, 3, "sizes")
        axes = a.get("axes")
    if coordinate_mode not in _COORDINATE_MODES:
        raise unsupported(ctx, node, f"coordinate_transformation_mode '{coordinate_mode}'")
    if scales is not None and scales.size == 0:
        scales = None
    if sizes_given is not None and sizes_given.size == 0:
        sizes_given = None
    if (scales is None) == (sizes_given is None):
        raise ConversionError(f"{node_label(node)}: give exactly one of scales and sizes")
    axes = list(range(rank)) if axes is None else [ax % rank for ax in axes]
    full_scales = [1.0] * rank
    sizes = [-1] * rank
    if scales is not None:
        for ax, s in zip(axes, scales.reshape(-1).tolist()):
            full_scales[ax] = float(s)
    else:
        wanted = [int(v) for v in sizes_given.reshape(-1)]
        dims = [_static(node, x, ax) for ax in axes]
        ratios = [w / d for w, d in zip(wanted, dims)]
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            common = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [common] * len(axes)
            wanted = [int(v) for v in np.round(np.array(dims) * common)]
        for ax, ratio, w in zip(axes, ratios, wanted):
            full_scales[ax], sizes[ax] = ratio, w
    if a.get("antialias", 0) and mode == "linear" and any(s < 1 for s in full_scales):
        raise unsupported(ctx, node, "antialiased downscaling")
    out = {
        "mode": mode,
        "scales": tuple(full_scales),
        "coordinate_transformation_mode": coordinate_mode,
        "nearest_mode": nearest_mode,
    }
    if any(s >= 0 for s in sizes):
        out["sizes"] = tuple(sizes)
    return out


def _static(node, x, axis) -> int:
    d = x.type.shape[axis]
    if isinstance(d, str):
        raise ConversionError(f"{node_label(node)}: resizing symbolic axis {axis} by sizes")
    return d
