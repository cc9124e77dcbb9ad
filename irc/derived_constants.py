"""Constants a model file need not store: the per-channel arrays an integer layer's own
scales determine.

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
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np

from irc import quant
from irc.ir import Graph, Op
from irc.opdef import has_trait
from irc.tensor import ElidedTensor


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


__all__ = ["derivations", "derived_payloads", "rederive"]
