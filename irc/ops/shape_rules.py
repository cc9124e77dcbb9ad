"""Shape arithmetic shared by the op table's type rules; symbolic dims allowed where sound."""

from __future__ import annotations

from collections import Counter

from irc.errors import TypeInferenceError
from irc.opdef import Attr
from irc.types import Dim, DType, TensorType

# How an op that has a ``layout`` attribute stores its activations (rank 4): as ONNX does,
# or channels last; its value types hold the stored shape.
LAYOUTS = ("nchw", "nhwc")
LAYOUT = {"layout": Attr("str", "nchw", LAYOUTS)}
TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)  # transpose perms between the two layouts


def logical_shape(shape, attrs, what: str) -> tuple:
    """``shape`` in NCHW order: permuted from NHWC when the op's layout is ``nhwc``."""
    if attrs["layout"] == "nchw":
        return tuple(shape)
    if len(shape) != 4:
        raise TypeInferenceError(f"{what}: layout nhwc needs a rank-4 value, got {list(shape)}")
    return tuple(shape[i] for i in TO_NCHW)


def physical_shape(shape, attrs) -> tuple:
    """The stored shape of an NCHW-order ``shape`` in the op's layout."""
    return tuple(shape) if attrs["layout"] == "nchw" else tuple(shape[i] for i in TO_NHWC)


def same_dtype(types: list[TensorType], what: str) -> DType:
    """The common element type of ``types``; TypeInferenceError if they differ."""
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        names = ", ".join(t.dtype.short for t in types)
        raise TypeInferenceError(f"{what} operands must share one element type, got {names}")
    return types[0].dtype


def broadcast_shapes(shapes: list[tuple[Dim, ...]]) -> tuple[Dim, ...]:
    """Numpy-style multidirectional broadcasting, with symbolic dims."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        result: Dim = 1
        for d in dims:
            if d == 1 or d == result:
                continue
            if result == 1:
                result = d
            elif isinstance(d, str) or isinstance(result, str):
                result = result if isinstance(d, str) else d
            else:
                raise TypeInferenceError(f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(result)
    return tuple(out)


def broadcast_to(shape: tuple[Dim, ...], target: tuple[Dim, ...], what: str) -> None:
    """TypeInferenceError naming ``what`` unless ``shape`` broadcasts *to* ``target``
    (unidirectionally: ``target`` does not grow) and holds at least one element.

    Each of ``shape``'s trailing dims must be 1 or equal the target's. A symbolic dim
    matches only the same symbol, and a static dim other than 1 never matches a symbolic
    one: either would hold only for some run-time sizes (give static shapes then).
    """
    if any(d == 0 for d in shape):
        raise TypeInferenceError(
            f"{what} {list(shape)} has zero elements; it must broadcast to {list(target)}"
        )
    fits = len(shape) <= len(target) and all(
        d == 1 or d == t for d, t in zip(reversed(shape), reversed(target))
    )
    if not fits:
        raise TypeInferenceError(f"{what} {list(shape)} does not broadcast to {list(target)}")


def static_dim(d: Dim, what: str) -> int:
    """``d`` as an int; TypeInferenceError naming ``what`` if it is symbolic."""
    if isinstance(d, str):
        raise TypeInferenceError(f"{what} must be static, got symbolic dimension '{d}'")
    return d


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in [0, rank), accepting negative axes."""
    if not -rank <= axis < rank:
        raise TypeInferenceError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def conv_output_size(
    size: int,
    kernel: int,
    stride: int,
    pad_begin: int,
    pad_end: int,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length along one axis of a convolution or pooling window: the number of
    windows, ``(size + pads - dilated kernel) // stride + 1``, as ONNX Conv/MaxPool count
    them.

    With ``ceil_mode`` the division rounds up, keeping a last partial window, unless that
    window would start in the trailing padding (ONNX and PyTorch drop that one). The
    caller checks that one window fits (see ``window_output_shape``).
    """
    room = size + pad_begin + pad_end - (dilation * (kernel - 1) + 1)
    count = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (count - 1) * stride >= size + pad_begin:
        count -= 1
    return count


def window_output_shape(x: TensorType, kernel, strides, pads, dilations, ceil_mode, what):
    """Spatial output dims of a windowed op over NC<spatial> input ``x``."""
    nsp = x.rank - 2
    if nsp < 1:
        raise TypeInferenceError(f"{what} needs an input of rank >= 3, got {list(x.shape)}")
    for name, seq, n in (
        ("kernel", kernel, nsp),
        ("strides", strides, nsp),
        ("dilations", dilations, nsp),
        ("pads", pads, 2 * nsp),
    ):
        if len(seq) != n:
            raise TypeInferenceError(f"{what}: {name} has {len(seq)} entries, expected {n}")
    if any(s <= 0 for s in strides) or any(d <= 0 for d in dilations) or min(kernel) <= 0:
        raise TypeInferenceError(f"{what}: kernel, strides and dilations must be positive")
    if any(p < 0 for p in pads):
        raise TypeInferenceError(f"{what}: pads must be non-negative, got {list(pads)}")
    out = []
    for i in range(nsp):
        size = static_dim(x.shape[2 + i], f"{what} spatial dimension {i}")
        pad_begin, pad_end = pads[i], pads[i + nsp]
        span = dilations[i] * (kernel[i] - 1) + 1
        if size + pad_begin + pad_end < span:
            raise TypeInferenceError(
                f"window of extent {span} does not fit input length {size} "
                f"with padding {pad_begin + pad_end}"
            )
        out.append(
            conv_output_size(
                size, kernel[i], strides[i], pad_begin, pad_end, dilations[i], bool(ceil_mode)
            )
        )
    return tuple(out)


def transposed_window_shape(x: TensorType, kernel, strides, pads, dilations, output_padding,
                            what):  # fmt: skip
    """Spatial output dims of a transposed convolution over NC<spatial> input ``x``:
    stride·(in - 1) + output_padding + dilation·(kernel - 1) + 1 - pads, each positive."""
    nsp = x.rank - 2
    for name, seq, n in (
        ("kernel", kernel, nsp),
        ("strides", strides, nsp),
        ("dilations", dilations, nsp),
        ("output_padding", output_padding, nsp),
        ("pads", pads, 2 * nsp),
    ):
        if len(seq) != n:
            raise TypeInferenceError(f"{what}: {name} has {len(seq)} entries, expected {n}")
    if min(strides) <= 0 or min(dilations) <= 0 or min(kernel) <= 0:
        raise TypeInferenceError(f"{what}: kernel, strides and dilations must be positive")
    if min(pads) < 0 or min(output_padding) < 0:
        raise TypeInferenceError(f"{what}: pads and output_padding must be non-negative")
    out = []
    for i in range(nsp):
        size = static_dim(x.shape[2 + i], f"{what} spatial dimension {i}")
        full = strides[i] * (size - 1) + output_padding[i] + dilations[i] * (kernel[i] - 1) + 1
        n = full - pads[i] - pads[i + nsp]
        if n <= 0:
            raise TypeInferenceError(
                f"{what}: pads {list(pads)} leave no output along spatial axis {i}"
            )
        out.append(n)
    return tuple(out)


def check_pool_pads(sizes, kernel, strides, pads, dilations, ceil_mode, what: str) -> None:
    """TypeInferenceError unless every pooling window holds at least one input element.

    A window of padding only has max -inf and mean 0/0. So each pad must be smaller than
    its axis's window extent, ``dilation * (kernel - 1) + 1`` (the kernel itself when
    undilated, where this is exactly onnxruntime's rule "pads < kernel"; a larger dilated
    pad is what ``auto_pad`` SAME can need). When the window has gaps (dilation > 1) or the
    input is empty, each window along ``sizes`` (static spatial lengths) is checked too.
    """
    nsp = len(kernel)
    for i in range(nsp):
        k, d, stride, size = kernel[i], dilations[i], strides[i], sizes[i]
        extent = d * (k - 1) + 1
        if max(pads[i], pads[i + nsp]) >= extent:
            raise TypeInferenceError(
                f"{what}: pads {list(pads)} must be smaller than the kernel {list(kernel)}"
                + ("" if d == 1 else f" (dilated to {extent} on spatial axis {i})")
                + "; a larger pad makes windows of padding only"
            )
        if d == 1 and size > 0:
            continue  # contiguous windows that start and end by the input hold some of it
        count = conv_output_size(size, k, stride, pads[i], pads[i + nsp], d, bool(ceil_mode))
        for w in range(count):
            start = w * stride - pads[i]
            j = max(0, -(start // d))  # the first window element at index >= 0
            if j >= k or start + j * d >= size:
                raise TypeInferenceError(
                    f"{what}: window {w} along spatial axis {i} holds padding only (input "
                    f"length {size}, kernel {k}, dilation {d}, pads {list(pads)})"
                )


def reshape_target(in_shape: tuple[Dim, ...], target: tuple[int, ...]) -> tuple[Dim, ...]:
    """Output shape of ONNX-style reshape: 0 copies the input dim, -1 is inferred."""
    if sum(1 for t in target if t == -1) > 1:
        raise TypeInferenceError(f"reshape target {list(target)} has more than one -1")
    out: list[Dim] = []
    for i, t in enumerate(target):
        if t == 0:
            if i >= len(in_shape):
                raise TypeInferenceError(
                    f"reshape target {list(target)}: 0 at axis {i} has no "
                    f"input dimension to copy from {list(in_shape)}"
                )
            out.append(in_shape[i])
        elif t < -1:
            raise TypeInferenceError(f"reshape target {list(target)} has a negative dimension")
        else:
            out.append(t)
    in_syms, in_prod = _factor(in_shape)
    if -1 in out:
        known = [d for d in out if d != -1]
        out_syms, out_prod = _factor(known)
        left = in_syms - out_syms
        if out_prod == 0:
            raise TypeInferenceError(
                f"cannot reshape {list(in_shape)} to {list(target)}: -1 beside a "
                "zero-size dimension is ambiguous"
            )
        if out_syms - in_syms or in_prod % out_prod or len(left) > 1:
            raise TypeInferenceError(
                f"cannot reshape {list(in_shape)} to {list(target)}: sizes do not divide"
            )
        ratio = in_prod // out_prod
        if left:
            if ratio != 1:
                raise TypeInferenceError(
                    f"cannot infer -1 reshaping {list(in_shape)} to {list(target)} "
                    "with symbolic dimensions; give a static input shape"
                )
            out[out.index(-1)] = next(iter(left))
        else:
            out[out.index(-1)] = ratio
    out_syms, out_prod = _factor(out)
    if out_syms != in_syms or out_prod != in_prod:
        raise TypeInferenceError(
            f"cannot reshape {list(in_shape)} to {list(target)}: element counts differ"
        )
    return tuple(out)


def _factor(shape) -> tuple[Counter, int]:
    syms: Counter = Counter()
    prod = 1
    for d in shape:
        if isinstance(d, str):
            syms[d] += 1
        else:
            prod *= d
    return syms, prod
