"""ONNX → irc Graph: load, check, sort, infer shapes, convert node by node, fold constants.

The user's ModelProto is never modified: the importer works on a copy. Each node goes
through the converter registered for its op type (``irc.frontends.onnx_converters``);
ops whose operands are all constants are evaluated through the reference at once, so
Shape/Gather/Cast/Concat chains that compute static shapes vanish at import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from irc.constant_folding import fold_constants
from irc.errors import (
    ConversionError,
    CycleError,
    IrcError,
    ModelLoadError,
    UnsupportedOpError,
)
from irc.ir import Graph, Value
from irc.matching import constant_array
from irc.opdef import build
from irc.types import DType, TensorType

MIN_OPSET = 7


class NeedsConstantError(ConversionError):
    """A converter needs the value of an input that is only known at run time."""

    def __init__(self, message: str, input_name: str):
        super().__init__(message)
        self.input_name = input_name


def load_onnx_model(source) -> onnx.ModelProto:
    """A ModelProto from a path, bytes or a ModelProto, with clear errors for bad files."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "the given bytes"
    else:
        path = os.fspath(source)
        label = f"'{path}'"
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file {label} does not exist")
        with open(path, "rb") as f:
            data = f.read()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelLoadError(
            f"{label} is not a valid ONNX model (truncated or corrupt): {e}"
        ) from None
    if not model.HasField("graph") or not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{label} is not an ONNX model: it holds no graph")
    if not isinstance(source, (bytes, bytearray)) and _has_external_data(model):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    return model


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ('' / ai.onnx) domain the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelLoadError("model imports no version of the default ONNX operator set")


def sort_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes in a topological order; CycleError naming the nodes on a cycle."""
    produced = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    deps = [
        {produced[x] for x in n.input if x in produced and produced[x] != i}
        for i, n in enumerate(graph.node)
    ]
    self_loops = [i for i, n in enumerate(graph.node) if any(produced.get(x) == i for x in n.input)]
    if self_loops:
        raise CycleError(
            f"graph has a cycle: node {_node_label(graph.node[self_loops[0]])} "
            "consumes its own output"
        )
    users: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):
        import networkx as nx

        g = nx.DiGraph([(j, i) for i, d in enumerate(deps) for j in d])
        cycle = nx.find_cycle(g)
        names = " -> ".join(_node_label(graph.node[a]) for a, _ in cycle)
        raise CycleError(f"graph has a cycle: {names} -> {_node_label(graph.node[cycle[0][0]])}")
    return [graph.node[i] for i in order]


def _node_label(node: onnx.NodeProto) -> str:
    return f"'{node.name or node.output[0]}' ({node.op_type})"


def onnx_dtype(elem_type: int, where: str) -> DType:
    """The irc DType of an ONNX TensorProto element type."""
    try:
        return DType.from_numpy(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "undefined"
        raise ConversionError(f"{where}: element type {name} is not supported") from None


def _symbol(dim_param: str, fallback: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", dim_param) or fallback
    return name if re.match(r"[A-Za-z_]", name) else "d_" + name


def _input_type(vi: onnx.ValueInfoProto, given: tuple | None) -> TensorType:
    where = f"input '{vi.name}'"
    if not vi.type.HasField("tensor_type"):
        raise ConversionError(f"{where} is not a tensor; irc imports tensor inputs only")
    tt = vi.type.tensor_type
    dtype = onnx_dtype(tt.elem_type, where)
    dims = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(_symbol(d.dim_param, f"{_symbol(vi.name, 'x')}_{i}"))
    if given is not None:
        given = tuple(int(g) for g in given)
        if tt.HasField("shape") and len(given) != len(dims):
            raise ConversionError(
                f"{where} has rank {len(dims)}, the given shape {list(given)} has rank {len(given)}"
            )
        for i, (d, g) in enumerate(zip(dims, given)):
            if isinstance(d, int) and d != g:
                raise ConversionError(
                    f"{where} has static dimension {d} at axis {i}; "
                    f"the given shape {list(given)} says {g}"
                )
        dims = list(given)
    elif not tt.HasField("shape"):
        raise ConversionError(f"{where} has no shape; give one (input_shapes=...)")
    return TensorType(dtype, tuple(dims))


def import_onnx(
    source,
    input_shapes: Mapping[str, tuple] | None = None,
    frozen_inputs: Mapping[str, np.ndarray] | None = None,
    check: bool = True,
) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) as an irc Graph at level L0.

    ``input_shapes`` specialises symbolic input dimensions; ``frozen_inputs`` gives values
    for graph inputs that are to be treated as constants (a static-shape compiler needs,
    e.g., a Reshape's target shape at compile time).
    """
    # onnx_converters imports ImportContext from this module: a top-level import would cycle
    from irc.frontends.onnx_converters import CONVERTERS, convert_node

    original = load_onnx_model(source)
    model = onnx.ModelProto()
    model.CopyFrom(original)
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ModelLoadError(
            f"model uses ONNX opset {opset}; irc imports opset {MIN_OPSET} "
            "and newer (convert it with onnx.version_converter)"
        )
    nodes = sort_nodes(model.graph)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if check:
        _check(model)
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
            raise UnsupportedOpError(
                node.name or node.output[0],
                node.op_type,
                opset,
                ""
                if node.domain in ("", "ai.onnx")
                else f"domain '{node.domain}' is not supported",
                supported=CONVERTERS,
            )

    ctx = ImportContext(model.graph.name or "main", opset)
    ctx.consumed = {x for n in nodes for x in n.input} | {o.name for o in model.graph.output}
    inits = {t.name: t for t in model.graph.initializer}
    input_shapes = dict(input_shapes or {})
    frozen = dict(frozen_inputs or {})
    real_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    unknown = set(input_shapes) | set(frozen)
    unknown -= {vi.name for vi in real_inputs}
    if unknown:
        raise ConversionError(
            f"no model input is called {sorted(unknown)}; inputs are "
            f"{[vi.name for vi in real_inputs]}"
        )
    for vi in real_inputs:
        if vi.name in frozen:
            ctx.set_constant(vi.name, np.asarray(frozen[vi.name]))
        else:
            ctx.env[vi.name] = ctx.graph.add_input(
                vi.name, _input_type(vi, input_shapes.get(vi.name))
            )
    for name, tensor in inits.items():
        ctx.set_constant(name, onnx.numpy_helper.to_array(tensor))
    for node in nodes:
        convert_node(ctx, node)
    for vi in model.graph.output:
        ctx.graph.outputs.append(ctx.value(vi.name, f"graph output '{vi.name}'"))
    ctx.graph.remove_dead_ops()
    return ctx.graph


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise ModelLoadError(f"the ONNX checker rejects this model: {first}") from None
    except ValueError as e:  # over 2 GB: the checker needs a path; skip it
        if "2GB" not in str(e):
            raise ModelLoadError(f"the ONNX checker rejects this model: {e}") from None
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelLoadError(f"ONNX shape inference rejects this model: {first}") from None


class ImportContext:
    """What converters see: the graph being built, ONNX names → values, the opset."""

    def __init__(self, name: str, opset: int):
        self.graph = Graph(name)
        self.opset = opset
        self.env: dict[str, Value] = {}
        self.consumed: set[str] = set()  # ONNX names read by some node or graph output

    # -------------------------------------------------------------- values
    def set_constant(self, onnx_name: str, array: np.ndarray) -> Value:
        """Bind ``onnx_name`` to a constant op holding ``array``."""
        try:
            op = build(
                self.graph,
                "constant",
                [],
                {"value": np.asarray(array, order="C")},
                result_names=[onnx_name],
            )
        except (ValueError, IrcError) as e:
            raise ConversionError(f"constant '{onnx_name}': {e}") from None
        self.env[onnx_name] = op.result
        return op.result

    def value(self, onnx_name: str, where: str) -> Value:
        try:
            return self.env[onnx_name]
        except KeyError:
            raise ConversionError(f"{where}: value '{onnx_name}' is not defined") from None

    @staticmethod
    def constant_of(value: Value) -> np.ndarray | None:
        """The array a value holds if it is produced by a constant op with data."""
        return constant_array(value)

    # -------------------------------------------------------------- folding
    def fold_new_ops(self, first_index: int) -> dict[int, Value]:
        """Evaluate ops appended since ``first_index`` whose operands are all constants.

        Returns the replacements made, keyed by ``id`` of the replaced value (the
        ``constant-fold`` pass's core, ``irc.constant_folding.fold_constants``).
        """
        return fold_constants(self.graph, first_index)
