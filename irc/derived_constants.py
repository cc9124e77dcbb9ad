"""Constants a model file need not store, and those it stores narrower than they compute.

Not stored: the per-channel arrays an integer layer's own scales determine.

An L2/L3 integer layer (``qconv2d`` / ``qgemm`` with bias, multiplier and shift operands)
carries three per-output-channel arrays that are functions of scales the graph already
holds: the int32 bias's scales s_x·s_w[c] (``irc.quant.bias_scales``) and the
requantization multiplier and shift of s_x·s_w[c]/s_y (``irc.quant.layer_multipliers``).
As TFLite computes its multipliers when a model is prepared, a model file leaves them out
and ``irc.load`` recomputes them, so per output channel a file holds the weight scale and
the int32 bias (8 bytes) rather than 20. The report counts what a file stores, so it
leaves them out too.

A payload is derived only where recomputing it gives back exactly what the graph holds
(a hand-edited multiplier is stored) and its constant feeds that one layer alone. On a
graph whose constants are elided, the structure alone decides.

    >>> derived = derived_payloads(graph)        # {(id(constant op), attribute), ...}
    >>> rederive(graph)                          # fill elided derived payloads back in

Stored narrower (``narrowed``; ``widened`` gives back the very bits): an int32
``qconstant``'s levels (an integer layer's bias) in the narrowest of int8, int16 and int32
that holds them all, and a ``qconstant``'s per-channel float32 scales as float16 times a
power of two (one ``exponent`` for the tensor, 0 unless a scale is below float16's normal
range) when every scale has a float16's significand, as ``irc.quant.weight_scales`` makes
them; any other payload as it is. Widening is exact, so a loaded model computes with the
same numbers.

    >>> array, exponent = narrowed(op, "value", op.attrs["value"])   # int16 bias, 0
    >>> widened(array, np.dtype(np.int32), exponent)                 # the int32 levels
    >>> stored_nbytes(op, "scales", op.attrs["scales"])              # 2 per scale
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np

from irc import quant
from irc.ir import Graph, Op
from irc.opdef import has_trait
from irc.tensor import ElidedTensor

NARROW_INTS = (np.dtype(np.int8), np.dtype(np.int16))  # an int32 payload's narrower forms
HALF_MIN_EXPONENT = -14  # float16's smallest normal is 2^-14
# (stored, computed) dtypes a file may hold a payload in and the graph widens it to
WIDENINGS = {(n, np.dtype(np.int32)) for n in NARROW_INTS} | {
    (np.dtype(np.float16), np.dtype(np.float32))
}


def _constant(value, kind: str) -> Op | None:
    """The ``kind`` op producing ``value`` when this one use is its only one."""
    op = value.producer
    if op is None or op.kind != kind or len(value.uses) != 1:
        return None
    return op


def derivations(graph: Graph) -> Iterator[tuple[Op, str, Op, Callable[[], np.ndarray]]]:
    """(constant op, attribute, the layer's weight qconstant, recompute) of every payload
    an integer layer determines. ``recompute()`` reads the layer's input scale, its
    weight's scales (which must have data by then) and its ``out_scale``."""
    for op in graph.ops:
        if not has_trait(op.kind, "integer-layer") or len(op.operands) != 5:
            continue
        x, weight, bias, multiplier, shift = op.operands
        weight_op = weight.producer
        if x.type.quant is None or weight_op is None or weight_op.kind != "qconstant":
            continue
        bias_op = _constant(bias, "qconstant")
        m_op, s_op = _constant(multiplier, "constant"), _constant(shift, "constant")

        def scales(x=x, weight_op=weight_op):
            return x.type.quant.scales[0], np.asarray(weight_op.attrs["scales"], np.float32)

        @functools.cache  # multiplier and shift come from one computation
        def requant(op=op, scales=scales):
            x_scale, w_scales = scales()
            return quant.layer_multipliers(x_scale, w_scales, op.attrs["out_scale"])

        if bias_op is not None and bias_op.attrs.get("axis", 0) >= 0:
            yield bias_op, "scales", weight_op, lambda scales=scales: quant.bias_scales(*scales())
        if m_op is not None and s_op is not None:
            yield m_op, "value", weight_op, lambda requant=requant: requant()[0]
            yield s_op, "value", weight_op, lambda requant=requant: requant()[1]


def _elided(value) -> bool:
    return isinstance(value, ElidedTensor)


def derived_payloads(graph: Graph) -> set[tuple[int, str]]:
    """(id(op), attribute) of every payload a model file leaves out: derivable, and equal
    to its derivation (assumed when the graph's constants are elided)."""
    derived = set()
    for op, key, weight_op, recompute in derivations(graph):
        value = op.attrs.get(key)
        if _elided(value) or _elided(weight_op.attrs.get("scales")):
            derived.add((id(op), key))
            continue
        expected = recompute()
        if (isinstance(value, np.ndarray) and value.dtype == expected.dtype
                and value.shape == expected.shape and np.array_equal(value, expected)):  # fmt: skip
            derived.add((id(op), key))
    return derived


def rederive(graph: Graph) -> list[tuple[Op, str]]:
    """Recompute every derivable payload the graph holds elided (a model file's), in place;
    returns what was filled. ValueError when one's dtype or shape is not its type's."""
    filled = []
    for op, key, _, recompute in derivations(graph):
        value = op.attrs.get(key)
        if not _elided(value):
            continue
        array = recompute()
        want = value.type
        if array.dtype != want.dtype.numpy or tuple(array.shape) != tuple(want.shape):
            raise ValueError(
                f"{op.label()} {key}: recomputed as {array.dtype}{list(array.shape)}, "
                f"the graph says {want}"
            )
        op.attrs[key] = array
        filled.append((op, key))
    return filled


# ------------------------------------------------------------------ narrow storage
def _narrow_levels(op: Op, key: str, value) -> bool:
    """Whether the payload is an int32 qconstant's levels (an integer layer's bias)."""
    return op.kind == "qconstant" and key == "value" and value.dtype == np.int32


def _narrow_scales(op: Op, key: str, value) -> bool:
    """Whether the payload is a qconstant's per-channel float32 scales."""
    return (op.kind == "qconstant" and key == "scales" and op.attrs.get("axis", 0) >= 0
            and value.dtype == np.float32)  # fmt: skip


def narrowest_int(levels: np.ndarray) -> np.ndarray:
    """int32 ``levels`` in the narrowest of int8, int16 and int32 that holds them all."""
    if levels.size:
        lo, hi = int(levels.min()), int(levels.max())
        for dtype in NARROW_INTS:
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return levels.astype(dtype)
    return levels


def half_scales(scales: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(float16 h, exponent e) with ``scales`` exactly h·2^e (float32 bits), e = 0 unless
    a nonzero scale is below float16's normal range (then the smallest maps to its
    lowest binade); None when no such pair gives back every bit."""
    scales = np.asarray(scales, np.float32)
    magnitudes = np.abs(scales[scales != 0])
    exponent = 0
    if magnitudes.size and magnitudes.min() < 2.0**HALF_MIN_EXPONENT:
        exponent = int(np.frexp(magnitudes.min())[1]) - 1 - HALF_MIN_EXPONENT
    with np.errstate(over="ignore", invalid="ignore"):
        half = np.ldexp(scales, -exponent).astype(np.float16)
    back = widened(half, np.dtype(np.float32), exponent)
    exact = np.array_equal(back.view(np.uint32), scales.view(np.uint32))
    return (half, exponent) if exact else None


def narrowed(op: Op, key: str, value: np.ndarray) -> tuple[np.ndarray, int]:
    """(array, exponent) a model file stores for ``op``'s payload ``key``: narrower where
    exact (see the module docstring), else ``value`` itself with exponent 0."""
    if _narrow_levels(op, key, value):
        return narrowest_int(value), 0
    if _narrow_scales(op, key, value):
        half = half_scales(value)
        if half is not None:
            return half
    return value, 0


def widened(array: np.ndarray, dtype: np.dtype, exponent: int = 0) -> np.ndarray:
    """A stored payload back at the graph's ``dtype``: ``array`` · 2^``exponent``."""
    out = np.asarray(array).astype(dtype)
    if exponent and np.issubdtype(dtype, np.floating):
        out = np.ldexp(out, exponent).astype(dtype)
    return out


def stored_nbytes(op: Op, key: str, value) -> int:
    """Bytes a model file stores for ``op``'s payload ``key``: those of ``narrowed``; of
    its type for an elided one (its values unknown)."""
    if isinstance(value, ElidedTensor):
        t = value.type
        return t.num_elements * t.dtype.numpy.itemsize
    return int(narrowed(op, key, np.asarray(value))[0].nbytes)


__all__ = [
    "WIDENINGS",
    "derivations",
    "derived_payloads",
    "half_scales",
    "narrowed",
    "narrowest_int",
    "rederive",
    "stored_nbytes",
    "widened",
]
