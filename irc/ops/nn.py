"""Float-level (L0) op kinds: the neural-network ops the importers produce.

Layouts follow ONNX: activations NCHW, convolution weights OIHW, ``pads`` as
[begin_0, begin_1, …, end_0, end_1, …]. Axes stored in attributes are non-negative.
"""

from __future__ import annotations

import math

from irc.errors import TypeInferenceError
from irc.opdef import Attr, define
from irc.ops.shape_rules import (
    LAYOUT,
    broadcast_shapes,
    broadcast_to,
    check_pool_pads,
    logical_shape,
    norm_axis,
    physical_shape,
    reshape_target,
    same_dtype,
    static_dim,
    transposed_window_shape,
    window_output_shape,
)
from irc.tensor import tensor_value_type
from irc.types import DType, TensorType

INF = float("inf")

# A fused activation on conv2d / gemm / add (set by the `fuse` pass): applied to the result.
# "relu" is max(x, 0); "clip" clamps to [act_min, act_max]; "hard_swish" as the op.
ACTIVATIONS = ("none", "relu", "clip", "hard_swish")
FUSED_ACTIVATION = {
    "activation": Attr("str", "none", ACTIVATIONS),
    "act_min": Attr("float", -INF),
    "act_max": Attr("float", INF),
}


def _same(types, attrs):
    return [types[0]]


def check_bounds(lo: float, hi: float, what: str) -> None:
    """TypeInferenceError for a NaN clamp bound: one semantics for it (the interpreter's
    ``np.clip``, the kernels' comparisons and onnxruntime each read it otherwise), so
    none: a bound is a number or ±inf."""
    if math.isnan(lo) or math.isnan(hi):
        raise TypeInferenceError(
            f"{what}: a clamp bound is NaN ([{lo}, {hi}]); give a number or ±inf"
        )


def _infer_clip(types, attrs):
    check_bounds(attrs["min"], attrs["max"], "clip")
    return [types[0]]


def _fused_bounds(attrs, what: str) -> None:
    """The fused activation's clamp bounds, checked as ``check_bounds`` does."""
    if "act_min" in attrs:
        check_bounds(attrs["act_min"], attrs["act_max"], f"{what}'s fused activation")


# ------------------------------------------------------------------ elementwise
for _name, _doc in (
    ("relu", "max(x, 0)"),
    ("sigmoid", "1 / (1 + exp(-x))"),
    ("tanh", "tanh(x)"),
    ("hard_swish", "x * max(0, min(1, x/6 + 1/2))"),
    ("sqrt", "sqrt(x) (nan below 0)"),
    ("erf", "the error function erf(x)"),
    ("neg", "-x"),
    ("log", "natural logarithm (-inf at 0, nan below)"),
):
    define(_name, ["x"], {}, _same, doc=_doc, traits=("elementwise",))

define(
    "leaky_relu",
    ["x"],
    {"alpha": Attr("float", 0.01)},
    _same,
    doc="x if x >= 0 else alpha*x",
    traits=("elementwise",),
)
define(
    "gelu",
    ["x"],
    {"approximate": Attr("str", "none", choices=("none", "tanh"))},
    _same,
    doc="x/2 * (1 + erf(x/sqrt(2))); approximate='tanh': "
    "x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))",
    traits=("elementwise",),
)
define(
    "hard_sigmoid",
    ["x"],
    {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)},
    _same,
    doc="max(0, min(1, alpha*x + beta))",
    traits=("elementwise",),
)
define(
    "clip",
    ["x"],
    {"min": Attr("float", -INF), "max": Attr("float", INF)},
    _infer_clip,
    doc="min(max(x, min), max); bounds are cast to x's element type (never NaN)",
    traits=("elementwise",),
)


def _infer_binary(types, attrs):
    _fused_bounds(attrs, "elementwise")
    dtype = same_dtype(types, "elementwise")
    return [TensorType(dtype, broadcast_shapes([t.shape for t in types]))]


for _name in ("sub", "mul", "div", "pow"):
    define(
        _name,
        ["a", "b"],
        {},
        _infer_binary,
        doc=f"elementwise {_name}, numpy broadcasting",
        traits=("elementwise",),
    )
define(
    "add",
    ["a", "b"],
    dict(FUSED_ACTIVATION),
    _infer_binary,
    doc="elementwise add, numpy broadcasting, then the fused activation",
    traits=("elementwise",),
)


def _infer_equal(types, attrs):
    same_dtype(types, "equal")
    return [TensorType(DType.BOOL, broadcast_shapes([t.shape for t in types]))]


define(
    "equal",
    ["a", "b"],
    {},
    _infer_equal,
    doc="a == b elementwise, numpy broadcasting; the result is bool",
    traits=("elementwise",),
)


def _infer_where(types, attrs):
    cond, x, y = types
    if cond.dtype != DType.BOOL:
        raise TypeInferenceError(f"where: the condition must be bool, got {cond.dtype.short}")
    dtype = same_dtype([x, y], "where")
    return [TensorType(dtype, broadcast_shapes([t.shape for t in types]))]


define(
    "where",
    ["cond", "x", "y"],
    {},
    _infer_where,
    doc="x where cond else y, numpy broadcasting of all three",
    traits=("elementwise",),
)


def _infer_cast(types, attrs):
    return [types[0].with_dtype(DType.from_short(attrs["to"]))]


define(
    "cast",
    ["x"],
    {"to": Attr("str")},
    _infer_cast,
    doc="convert to element type `to`",
    traits=("elementwise",),
)


# ------------------------------------------------------------------ linear algebra
def _infer_conv(types, attrs):
    _fused_bounds(attrs, "conv2d")
    """The output of a grouped 2-D convolution, stored in the op's layout; the bias must be
    exactly [O]."""
    x, w = types[0], types[1]
    same_dtype(types, "conv2d")
    if x.rank == 4:
        x = TensorType(x.dtype, logical_shape(x.shape, attrs, "conv2d input"))
    if x.rank != 4 or w.rank != 4:
        raise TypeInferenceError(
            f"conv2d takes 4-D input and weight, got {x.rank}-D and {w.rank}-D"
        )
    group = attrs["group"]
    cin = static_dim(x.shape[1], "conv2d input channels")
    cout, cin_g = static_dim(w.shape[0], "conv2d weight"), static_dim(w.shape[1], "conv2d weight")
    if group < 1 or cin != cin_g * group or cout % group:
        raise TypeInferenceError(
            f"conv2d: input channels {cin}, weight {list(w.shape)} and group {group} disagree"
        )
    if len(types) == 3 and types[2].shape != (cout,):
        raise TypeInferenceError(
            f"conv2d bias must have shape [{cout}], got {list(types[2].shape)}"
        )
    spatial = window_output_shape(
        x, w.shape[2:], attrs["strides"], attrs["pads"], attrs["dilations"], 0, "conv2d"
    )
    return [TensorType(x.dtype, physical_shape((x.shape[0], cout) + spatial, attrs))]


define(
    "conv2d",
    ["x", "w", "b?"],
    {
        "strides": Attr("ints", (1, 1)),
        "pads": Attr("ints", (0, 0, 0, 0)),
        "dilations": Attr("ints", (1, 1)),
        "group": Attr("int", 1),
        **FUSED_ACTIVATION,
        **LAYOUT,
    },
    _infer_conv,
    doc="2-D convolution (cross-correlation), NCHW (or, layout nhwc, NHWC) input, OIHW "
    "weight, optional bias [O], then the fused activation",
    traits=("layer",),
)


def _infer_gemm(types, attrs):
    _fused_bounds(attrs, "gemm")
    """[M, N] from op(a) [M, K] and op(b) [K, N]; the bias C must broadcast *to* [M, N]
    (unidirectionally, as ONNX Gemm says) and hold at least one element."""
    a, b = types[0], types[1]
    same_dtype(types, "gemm")
    if a.rank != 2 or b.rank != 2:
        raise TypeInferenceError(f"gemm takes 2-D operands, got {list(a.shape)}, {list(b.shape)}")
    m, ka = (a.shape[1], a.shape[0]) if attrs["trans_a"] else a.shape
    kb, n = (b.shape[1], b.shape[0]) if attrs["trans_b"] else b.shape
    if ka != kb and not (isinstance(ka, str) or isinstance(kb, str)):
        raise TypeInferenceError(f"gemm: inner dimensions {ka} and {kb} differ")
    if len(types) == 3:
        broadcast_to(types[2].shape, (m, n), "gemm bias C")
    return [TensorType(a.dtype, (m, n))]


define(
    "gemm",
    ["a", "b", "c?"],
    {
        "alpha": Attr("float", 1.0),
        "beta": Attr("float", 1.0),
        "trans_a": Attr("int", 0, (0, 1)),
        "trans_b": Attr("int", 0, (0, 1)),
        **FUSED_ACTIVATION,
    },
    _infer_gemm,
    doc="alpha * op(a) @ op(b) + beta * c, op = transpose when trans_* is 1, c broadcasts to "
    "[M, N], then the fused activation",
    traits=("layer",),
)


def _infer_matmul(types, attrs):
    a, b = types
    same_dtype(types, "matmul")
    if a.rank == 0 or b.rank == 0:
        raise TypeInferenceError("matmul operands must have rank >= 1")
    sa = a.shape if a.rank > 1 else (1,) + a.shape
    sb = b.shape if b.rank > 1 else b.shape + (1,)
    if sa[-1] != sb[-2] and not (isinstance(sa[-1], str) or isinstance(sb[-2], str)):
        raise TypeInferenceError(f"matmul: inner dimensions {sa[-1]} and {sb[-2]} differ")
    batch = broadcast_shapes([sa[:-2], sb[:-2]])
    out = batch + (sa[-2] if a.rank > 1 else None, sb[-1] if b.rank > 1 else None)
    return [TensorType(a.dtype, tuple(d for d in out if d is not None))]


define("matmul", ["a", "b"], {}, _infer_matmul, doc="numpy matmul semantics")


def _infer_conv_transpose(types, attrs):
    """NCHW output of a 2-D transposed convolution: weight [C, O/group, kh, kw], each
    spatial length stride·(in-1) + output_padding + dilated kernel - pads."""
    x, w = types[0], types[1]
    same_dtype(types, "conv_transpose2d")
    if x.rank != 4 or w.rank != 4:
        raise TypeInferenceError(
            f"conv_transpose2d takes 4-D input and weight, got {x.rank}-D and {w.rank}-D"
        )
    group = attrs["group"]
    cin = static_dim(x.shape[1], "conv_transpose2d input channels")
    if group < 1 or cin != w.shape[0] or cin % group:
        raise TypeInferenceError(
            f"conv_transpose2d: input channels {cin}, weight {list(w.shape)} and group "
            f"{group} disagree"
        )
    cout = static_dim(w.shape[1], "conv_transpose2d weight") * group
    if len(types) == 3 and types[2].shape != (cout,):
        raise TypeInferenceError(
            f"conv_transpose2d bias must have shape [{cout}], got {list(types[2].shape)}"
        )
    spatial = transposed_window_shape(
        x, w.shape[2:], attrs["strides"], attrs["pads"], attrs["dilations"],
        attrs["output_padding"], "conv_transpose2d",
    )  # fmt: skip
    return [TensorType(x.dtype, (x.shape[0], cout) + spatial)]


define(
    "conv_transpose2d",
    ["x", "w", "b?"],
    {
        "strides": Attr("ints", (1, 1)),
        "pads": Attr("ints", (0, 0, 0, 0)),
        "dilations": Attr("ints", (1, 1)),
        "output_padding": Attr("ints", (0, 0)),
        "group": Attr("int", 1),
    },
    _infer_conv_transpose,
    doc="2-D transposed convolution (ONNX ConvTranspose), NCHW input, weight [C, O/group, "
    "kh, kw], optional bias [O]; pads crop the full output, output_padding extends its end",
)


def _infer_layer_norm(types, attrs):
    x = types[0]
    same_dtype(types, "layer_norm")
    axis = norm_axis(attrs["axis"], x.rank)
    for what, t in zip(("scale", "bias"), types[1:]):
        broadcast_to(t.shape, x.shape[axis:], f"layer_norm {what}")
    return [x]


define(
    "layer_norm",
    ["x", "scale", "bias?"],
    {"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5)},
    _infer_layer_norm,
    doc="(x - mean) / sqrt(var + epsilon) * scale + bias, mean and variance over the axes "
    "from `axis` on; scale and bias broadcast to those axes (ONNX LayerNormalization)",
)


def _infer_batchnorm(types, attrs):
    x = types[0]
    same_dtype(types, "batchnorm")
    if x.rank < 2:
        raise TypeInferenceError("batchnorm needs an input of rank >= 2")
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            raise TypeInferenceError(
                f"batchnorm parameters must have shape [{x.shape[1]}], got {list(t.shape)}"
            )
    return [x]


define(
    "batchnorm",
    ["x", "scale", "bias", "mean", "var"],
    {"epsilon": Attr("float", 1e-5)},
    _infer_batchnorm,
    doc="inference batch normalisation over axis 1",
)


# ------------------------------------------------------------------ windows
def _window_attrs(average: bool):
    attrs = {
        "kernel": Attr("ints"),
        "strides": Attr("ints", (1, 1)),
        "pads": Attr("ints", (0, 0, 0, 0)),
        "ceil_mode": Attr("int", 0, (0, 1)),
        "dilations": Attr("ints", (1, 1)),
    }
    if average:
        attrs["count_include_pad"] = Attr("int", 0, (0, 1))
    return attrs


def _infer_pool(types, attrs):
    """NC<spatial> output of max / average pooling; no window may hold padding only (its
    max would be -inf, its mean 0/0): each pad is smaller than the kernel, as onnxruntime
    requires (than the dilated window, with dilations; see ``check_pool_pads``)."""
    x = types[0]
    if x.quant is not None and "count_include_pad" in attrs:
        raise TypeInferenceError(f"avg_pool takes float values, got {x}; dequantize first")
    kernel, strides, pads = attrs["kernel"], attrs["strides"], attrs["pads"]
    dilations = attrs.get("dilations", (1,) * len(kernel))
    ceil_mode = attrs["ceil_mode"]
    spatial = window_output_shape(x, kernel, strides, pads, dilations, ceil_mode, "pool")
    sizes = [static_dim(d, "pool spatial dimension") for d in x.shape[2:]]
    check_pool_pads(sizes, kernel, strides, pads, dilations, ceil_mode, "pool")
    return [x.with_shape(x.shape[:2] + spatial)]


define(
    "max_pool",
    ["x"],
    _window_attrs(average=False),
    _infer_pool,
    doc="max over windows; pads are -inf (each smaller than the kernel); on qi8 levels the "
    "result keeps the input's type and pads are the lowest level, -128",
)
define("avg_pool", ["x"], _window_attrs(average=True), _infer_pool, doc="mean over windows")


def _infer_global_pool(types, attrs):
    x = types[0]
    if x.rank < 3:
        raise TypeInferenceError("global pooling needs an input of rank >= 3")
    return [x.with_shape(x.shape[:2] + (1,) * (x.rank - 2))]


define("global_avg_pool", ["x"], {}, _infer_global_pool, doc="mean over all spatial axes")
define("global_max_pool", ["x"], {}, _infer_global_pool, doc="max over all spatial axes")


def _infer_lrn(types, attrs):
    if types[0].rank < 3:
        raise TypeInferenceError("lrn needs an input of rank >= 3")
    return [types[0]]


define(
    "lrn",
    ["x"],
    {
        "size": Attr("int"),
        "alpha": Attr("float", 1e-4),
        "beta": Attr("float", 0.75),
        "bias": Attr("float", 1.0),
    },
    _infer_lrn,
    doc="local response normalisation across channels (ONNX LRN)",
)


# ------------------------------------------------------------------ data movement
def _infer_concat(types, attrs):
    dtype = same_dtype(types, "concat")
    rank = types[0].rank
    axis = norm_axis(attrs["axis"], rank)
    for t in types:
        if t.rank != rank:
            raise TypeInferenceError("concat operands must share one rank")
        for i in range(rank):
            if i != axis and t.shape[i] != types[0].shape[i]:
                raise TypeInferenceError(
                    f"concat: shapes {[list(t.shape) for t in types]} differ off axis {axis}"
                )
    shape = list(types[0].shape)
    shape[axis] = sum(static_dim(t.shape[axis], "concat axis") for t in types)
    return [TensorType(dtype, tuple(shape))]


define("concat", ["xs*"], {"axis": Attr("int")}, _infer_concat, doc="join along axis")


def _infer_reshape(types, attrs):
    return [types[0].with_shape(reshape_target(types[0].shape, attrs["shape"]))]


define(
    "reshape",
    ["x"],
    {"shape": Attr("ints")},
    _infer_reshape,
    doc="reshape; a 0 entry copies the input dimension, one -1 entry is inferred",
    traits=("view",),
)


def _infer_transpose(types, attrs):
    x = types[0]
    perm = attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise TypeInferenceError(
            f"transpose perm {list(perm)} is not a permutation of rank {x.rank}"
        )
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


define("transpose", ["x"], {"perm": Attr("ints")}, _infer_transpose, doc="permute axes")


def _infer_pad(types, attrs):
    x = types[0]
    pads = attrs["pads"]
    if len(pads) != 2 * x.rank:
        raise TypeInferenceError(f"pad: {len(pads)} pads for rank {x.rank}")
    shape = []
    for i, d in enumerate(x.shape):
        before, after = pads[i], pads[i + x.rank]
        if before == 0 and after == 0:
            shape.append(d)
        else:
            n = static_dim(d, f"pad axis {i}") + before + after
            if n < 0:
                raise TypeInferenceError(f"pad: axis {i} would have negative length {n}")
            shape.append(n)
    return [x.with_shape(tuple(shape))]


define(
    "pad",
    ["x"],
    {
        "pads": Attr("ints"),
        "mode": Attr("str", "constant", ("constant", "reflect", "edge", "wrap")),
        "value": Attr("float", 0.0),
    },
    _infer_pad,
    doc="pad (negative pads crop); pads = [begin per axis…, end per axis…]",
)


def _infer_slice(types, attrs):
    x = types[0]
    starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs["axes"], attrs["steps"]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise TypeInferenceError("slice: starts, ends, axes and steps differ in length")
    shape = list(x.shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(a, x.rank)
        if st == 0:
            raise TypeInferenceError("slice: a step may not be 0")
        size = static_dim(x.shape[a], f"slice axis {a}")
        shape[a] = len(range(*slice(s, e, st).indices(size)))
    return [x.with_shape(tuple(shape))]


define(
    "slice",
    ["x"],
    {"starts": Attr("ints"), "ends": Attr("ints"), "axes": Attr("ints"), "steps": Attr("ints")},
    _infer_slice,
    doc="python slice semantics per listed axis (ends clamp)",
)


def _infer_gather(types, attrs):
    data, idx = types
    if idx.dtype not in (DType.I64, DType.I32):
        raise TypeInferenceError(f"gather indices must be i32 or i64, got {idx.dtype.short}")
    axis = norm_axis(attrs["axis"], data.rank)
    return [data.with_shape(data.shape[:axis] + idx.shape + data.shape[axis + 1 :])]


define(
    "gather",
    ["data", "indices"],
    {"axis": Attr("int", 0)},
    _infer_gather,
    doc="take along axis (numpy.take; negative indices count from the end)",
)


def _infer_expand(types, attrs):
    x = types[0]
    if any(d < 0 for d in attrs["shape"]):
        raise TypeInferenceError(f"expand: shape {list(attrs['shape'])} has a negative entry")
    return [x.with_shape(broadcast_shapes([x.shape, attrs["shape"]]))]


define(
    "expand",
    ["x"],
    {"shape": Attr("ints")},
    _infer_expand,
    doc="broadcast x and `shape` against each other (numpy rules, ONNX Expand)",
)


def _infer_tile(types, attrs):
    x, repeats = types[0], attrs["repeats"]
    if len(repeats) != x.rank or any(r < 0 for r in repeats):
        raise TypeInferenceError(
            f"tile: repeats {list(repeats)} must be {x.rank} non-negative counts"
        )
    shape = [
        d if r == 1 else static_dim(d, f"tile axis {i}") * r
        for i, (d, r) in enumerate(zip(x.shape, repeats))
    ]
    return [x.with_shape(tuple(shape))]


define("tile", ["x"], {"repeats": Attr("ints")}, _infer_tile, doc="repeat x along each axis")


def _infer_range(types, attrs):
    dtype = same_dtype(types, "range")
    if any(t.rank != 0 for t in types):
        raise TypeInferenceError("range: start, limit and delta must be scalars (rank 0)")
    if attrs["count"] < 0:
        raise TypeInferenceError(f"range: count {attrs['count']} is negative")
    return [TensorType(dtype, (attrs["count"],))]


define(
    "range",
    ["start", "limit", "delta"],
    {"count": Attr("int")},
    _infer_range,
    doc="start + i·delta for i < count; count = max(ceil((limit - start) / delta), 0), "
    "fixed when the op is built (from constant operands: shapes are static)",
)


def _infer_shape(types, attrs):
    rank = types[0].rank
    start, end = attrs["start"], attrs["end"]
    return [TensorType(DType.I64, (len(range(rank)[start:end]),))]


define(
    "shape",
    ["x"],
    {"start": Attr("int", 0), "end": Attr("int", 2**31 - 1)},
    _infer_shape,
    doc="the input's shape as i64, dims [start:end]",
)


# ------------------------------------------------------------------ reductions, softmax
def _infer_softmax(types, attrs):
    norm_axis(attrs["axis"], types[0].rank)
    return [types[0]]


define("softmax", ["x"], {"axis": Attr("int", -1)}, _infer_softmax, doc="softmax along axis")


def _infer_reduce(types, attrs):
    x = types[0]
    axes = {norm_axis(a, x.rank) for a in attrs["axes"]} or set(range(x.rank))
    if attrs["keepdims"]:
        return [x.with_shape(tuple(1 if i in axes else d for i, d in enumerate(x.shape)))]
    return [x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in axes))]


for _name in ("mean", "sum", "max", "min"):
    define(
        f"reduce_{_name}",
        ["x"],
        {"axes": Attr("ints", ()), "keepdims": Attr("int", 1, (0, 1))},
        _infer_reduce,
        doc=f"{_name} over axes (all axes when empty)",
    )


# ------------------------------------------------------------------ resize
def _infer_resize(types, attrs):
    x = types[0]
    if x.quant is not None and attrs["mode"] != "nearest":
        raise TypeInferenceError(f"{attrs['mode']} resize takes float values, got {x}")
    scales, sizes = attrs["scales"], attrs["sizes"]
    if len(scales) != x.rank or (sizes and len(sizes) != x.rank):
        raise TypeInferenceError(f"resize: scales/sizes must have {x.rank} entries")
    shape = []
    for i, d in enumerate(x.shape):
        if sizes and sizes[i] >= 0:
            shape.append(sizes[i])
        elif scales[i] == 1.0:
            shape.append(d)
        else:
            shape.append(int(math.floor(static_dim(d, f"resize axis {i}") * scales[i])))
    return [x.with_shape(tuple(shape))]


define(
    "resize",
    ["x"],
    {
        "mode": Attr("str", "nearest", ("nearest", "linear")),
        "scales": Attr("floats"),
        "sizes": Attr("ints", ()),
        "coordinate_transformation_mode": Attr(
            "str",
            "half_pixel",
            (
                "half_pixel",
                "half_pixel_symmetric",
                "pytorch_half_pixel",
                "align_corners",
                "asymmetric",
            ),
        ),
        "nearest_mode": Attr(
            "str",
            "round_prefer_floor",
            ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
        ),
    },
    _infer_resize,
    doc="ONNX Resize (nearest / linear); output dims are sizes[i] if given (>= 0), "
    "else floor(dim * scale); coordinates map through `scales`; nearest takes qi8 levels "
    "too (the result keeps the input's type)",
)


# ------------------------------------------------------------------ constants
def _infer_constant(types, attrs):
    return [tensor_value_type(attrs["value"])]


define(
    "constant",
    [],
    {"value": Attr("tensor")},
    _infer_constant,
    doc="a constant tensor",
    traits=("constant",),
)
