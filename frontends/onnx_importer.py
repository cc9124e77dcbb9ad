"""ONNX → irc Graph: load, check, sort, infer shapes, convert node by node, fold constants.

The user's ModelProto is never modified: the importer works on a copy. Each node goes
through the converter registered for its op type (``irc.frontends.onnx_converters``);
ops whose operands are all constants are evaluated through the reference at once, so
Shape/Gather/Cast/Concat chains that compute static shapes vanish at import.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import onnx

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


@contextmanager
def onnx_errors(where: str):
    """Turn any exception the onnx package (or protobuf, numpy under it) raises in the block
    into a one-line ModelLoadError prefixed by ``where`` (the file, tensor or node).

    Every call into onnx that reads the user's model runs under it: parsing, external data,
    the checker, shape inference and ``numpy_helper.to_array`` (through ``tensor_array``).
    """
    try:
        yield
    except IrcError:
        raise
    except Exception as e:  # onnx raises ValueError, ValidationError, DecodeError, OSError, ...
        raise ModelLoadError(f"{where}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def node_name(node: onnx.NodeProto) -> str:
    """How errors name a node: its name, else its first output, else its op type."""
    return node.name or next((o for o in node.output if o), "") or f"<unnamed {node.op_type}>"


def load_onnx_model(source) -> onnx.ModelProto:
    """A private, validated ModelProto from a path, bytes or a ModelProto (never modified).

    Raises ModelLoadError naming the file and the problem for anything wrong with it: a
    missing, truncated or non-ONNX file; strings that are not UTF-8 (node and graph names
    are decoded with U+FFFD instead, being labels only); external data that cannot be read
    (outside the model's folder, past the end of its file, or given without a path);
    tensors of unknown element type or whose raw data does not match their shape.
    """
    return _load(source)[0]


def _load(source) -> tuple[onnx.ModelProto, str]:
    """``load_onnx_model``, and how errors name the source (``'path'``, the given bytes)."""
    path = None
    if isinstance(source, onnx.ModelProto):
        label = "the given model"
        model = onnx.ModelProto()
        model.CopyFrom(source)
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, label = bytes(source), "the given bytes"
        else:
            path = os.fspath(source)
            label = f"'{path}'"
            if not os.path.isfile(path):
                raise ModelLoadError(f"model file {label} does not exist")
            with onnx_errors(f"cannot read {label}"):
                with open(path, "rb") as f:
                    data = f.read()
        try:
            model = onnx.load_model_from_string(data)
        except Exception as e:  # DecodeError, ValueError, RuntimeError, ...
            raise ModelLoadError(
                f"{label} is not a valid ONNX model (truncated or corrupt): {_first_line(e)}"
            ) from None
    if not model.HasField("graph") or not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{label} is not an ONNX model: it holds no graph")
    _decode_strings(model, "model", label)
    tensors = list(_tensors(model.graph, ""))
    _load_external_data(tensors, path, label)
    for where, tensor in tensors:
        check_tensor(tensor, f"{label}: {where}")
    return model, label


# String fields that only label things: bytes that are not UTF-8 are replaced, not refused.
_LABEL_FIELDS = {
    ("NodeProto", "name"),
    ("GraphProto", "name"),
    ("ModelProto", "domain"),
    ("ModelProto", "producer_name"),
    ("ModelProto", "producer_version"),
}


def _decode_strings(message, path: str, label: str) -> None:
    """Make every string field of ``message`` (recursively) a python str.

    protobuf hands a proto2 string that is not valid UTF-8 back as ``bytes``, which breaks
    whatever prints or compares it later. Labels (node and graph names, doc strings,
    metadata) are decoded with U+FFFD; any other string (a value name, an op type, a
    location) is refused with a ModelLoadError naming its place in the model.
    """
    kind = message.DESCRIPTOR.name
    for field in message.DESCRIPTOR.fields:
        name = field.name
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf before 5.28 has no is_repeated
            repeated = field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_MESSAGE:
            if repeated:
                for i, item in enumerate(getattr(message, name)):
                    _decode_strings(item, f"{path}.{name}[{i}]", label)
            elif message.HasField(name):
                _decode_strings(getattr(message, name), f"{path}.{name}", label)
            continue
        if field.type != field.TYPE_STRING:
            continue
        values = getattr(message, name)
        items = enumerate(values) if repeated else [(None, values)]
        for i, value in items:
            if not isinstance(value, bytes):
                continue
            where = f"{path}.{name}" + ("" if i is None else f"[{i}]")
            is_label = (
                (kind, name) in _LABEL_FIELDS
                or name in ("doc_string", "denotation")
                or ".metadata_props[" in path
            )
            if not is_label:
                shown = value[:60] + (b"..." if len(value) > 60 else b"")
                raise ModelLoadError(
                    f"{label}: {where} is not valid UTF-8 ({shown!r}); ONNX strings are UTF-8"
                )
            text = value.decode("utf-8", errors="replace")
            if i is None:
                setattr(message, name, text)
            else:
                values[i] = text


def _tensors(graph: onnx.GraphProto, prefix: str):
    """(description, TensorProto) of every initializer and tensor attribute, subgraphs too."""
    for t in graph.initializer:
        yield f"{prefix}initializer '{t.name}'", t
    for node in graph.node:
        where = f"{prefix}node '{node_name(node)}' ({node.op_type})"
        for a in node.attribute:
            if a.HasField("t"):
                yield f"{where}: attribute '{a.name}'", a.t
            for k, t in enumerate(a.tensors):
                yield f"{where}: attribute '{a.name}'[{k}]", t
            subgraphs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            for g in subgraphs:
                yield from _tensors(g, f"{where}: attribute '{a.name}': ")


def _load_external_data(tensors, path: str | None, label: str) -> None:
    """Read the external data of ``tensors`` from the folder of the model file ``path``."""
    from onnx.external_data_helper import load_external_data_for_tensor

    for where, tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        if path is None:
            raise ModelLoadError(
                f"{label}: {where} keeps its data in the external file '{location}'; import "
                "the model from its path so irc can find that file"
            )
        with onnx_errors(f"{label}: {where}: cannot read its external data '{location}'"):
            load_external_data_for_tensor(tensor, os.path.dirname(os.path.abspath(path)))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


# Element types narrower than a byte: raw data packs them (bits per element).
_SUB_BYTE_BITS = {
    getattr(onnx.TensorProto, name): bits
    for name, bits in (
        ("INT4", 4),
        ("UINT4", 4),
        ("FLOAT4E2M1", 4),
        ("INT2", 2),
        ("UINT2", 2),
    )
    if hasattr(onnx.TensorProto, name)
}


def check_tensor(tensor: onnx.TensorProto, where: str) -> None:
    """ModelLoadError naming ``where`` unless the tensor has a known element type,
    non-negative dims and (when it has raw data) exactly the bytes its shape needs."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except Exception:  # KeyError / ValueError for an unknown type
        raise ModelLoadError(
            f"{where} has unknown element type {tensor.data_type}; ONNX defines "
            f"{min(onnx.TensorProto.DataType.values())}-{max(onnx.TensorProto.DataType.values())}"
        ) from None
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{where} has a negative dimension in its shape {dims}")
    if tensor.data_type == onnx.TensorProto.STRING or not tensor.HasField("raw_data"):
        return
    count = math.prod(dims)
    bits = _SUB_BYTE_BITS.get(tensor.data_type)
    need = -(-count * bits // 8) if bits else count * dtype.itemsize
    have = len(tensor.raw_data)
    if have != need:
        type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise ModelLoadError(
            f"{where} holds {have} bytes of raw data, but its shape {dims} of {type_name} "
            f"needs {need}"
        )


def tensor_array(tensor: onnx.TensorProto, where: str) -> np.ndarray:
    """The array a TensorProto holds (``numpy_helper.to_array``), checked first; a
    ModelLoadError naming ``where`` (the file and tensor, or the node) if it is malformed."""
    check_tensor(tensor, where)
    with onnx_errors(f"{where}: cannot decode the tensor"):
        array = onnx.numpy_helper.to_array(tensor)
    return np.asarray(array)


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
    return f"'{node_name(node)}' ({node.op_type})"


def onnx_dtype(elem_type: int, where: str) -> DType:
    """The irc DType of an ONNX TensorProto element type."""
    try:
        return DType.from_numpy(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "undefined"
        raise ConversionError(f"{where}: element type {name} is not supported") from None


def _symbol(dim_param: str, fallback: str) -> str:
    """The irc symbol of an ONNX ``dim_param``; ``fallback`` when it names nothing (empty,
    or only punctuation such as ``?``, which would otherwise make two unknown dims one)."""
    if not re.search(r"[A-Za-z0-9]", dim_param):
        return fallback
    name = re.sub(r"[^A-Za-z0-9_]", "_", dim_param)
    return name if re.match(r"[A-Za-z_]", name) else "d_" + name


def declared_dims(vi: onnx.ValueInfoProto) -> list:
    """The dims an input declares: an int for a static dim, a symbol for any other.

    A named dim (``dim_param``) keeps its name (inputs sharing it share a size); an unnamed
    one, a ``dim_value`` of ``-1`` (what Paddle writes for a free batch) or any other
    negative value, is a fresh symbol ``<input>_<axis>``.
    """
    dims = []
    for i, d in enumerate(vi.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(_symbol(d.dim_param, f"{_symbol(vi.name, 'x')}_{i}"))
    return dims


def _given_dims(where: str, dims: list, given) -> list:
    """``dims`` (as declared) specialised to the ``given`` shape; a ``None`` entry keeps the
    declared dim. ConversionError naming the input when ranks or static dims disagree."""
    given = tuple(None if g is None else int(g) for g in given)
    shown = ["?" if g is None else g for g in given]
    if len(given) != len(dims):
        raise ConversionError(
            f"{where} has rank {len(dims)}, the given shape {shown} has rank {len(given)}"
        )
    if any(g is not None and g < 0 for g in given):
        raise ConversionError(f"{where}: the given shape {shown} has a negative dimension")
    for i, (d, g) in enumerate(zip(dims, given)):
        if isinstance(d, int) and g is not None and d != g:
            raise ConversionError(
                f"{where} has static dimension {d} at axis {i}; the given shape {shown} says {g}"
            )
    return [d if g is None else g for d, g in zip(dims, given)]


def _input_type(vi: onnx.ValueInfoProto, given: tuple | None) -> TensorType:
    where = f"input '{vi.name}'"
    if not vi.type.HasField("tensor_type"):
        raise ConversionError(f"{where} is not a tensor; irc imports tensor inputs only")
    tt = vi.type.tensor_type
    dtype = onnx_dtype(tt.elem_type, where)
    dims = declared_dims(vi)
    if given is not None:
        if tt.HasField("shape"):
            dims = _given_dims(where, dims, given)
        elif any(g is None for g in given):
            raise ConversionError(f"{where} has no shape; give every dimension")
        else:
            dims = _given_dims(where, list(given), given)
    elif not tt.HasField("shape"):
        raise ConversionError(f"{where} has no shape; give one (input_shapes=...)")
    return TensorType(dtype, tuple(dims))


def symbolic_hint(graph: Graph, message: str) -> str:
    """What to give so a dim the conversion needed becomes static: the inputs holding the
    symbol ``message`` names (all inputs with a symbolic dim if it names none), as
    ``; input 'x' has symbolic dims ('N', 'H', 'W'): give input_shapes=... / --input-shape
    x=...``; "" when every input is static."""
    named = re.findall(r"symbolic dimension '([^']+)'", message)
    symbolic = [v for v in graph.inputs if not v.type.is_static]
    holding = [v for v in symbolic if any(s in v.type.shape for s in named)]
    hints = []
    for v in holding or symbolic:
        dims = ", ".join(repr(d) for d in v.type.shape if isinstance(d, str))
        hints.append(
            f"input '{v.name}' has symbolic dims ({dims}): give "
            f"input_shapes={{'{v.name}': (...)}} / --input-shape {v.name}=..."
        )
    return "; ".join(hints)


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

    model, label = _load(source)  # a private copy: the user's model is never modified
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ModelLoadError(
            f"model uses ONNX opset {opset}; irc imports opset {MIN_OPSET} "
            "and newer (convert it with onnx.version_converter)"
        )
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelLoadError(
            f"{label} uses ONNX opset {opset}, newer than the installed onnx package "
            f"({onnx.__version__}) knows (up to opset {newest}); update onnx, or convert the "
            "model with onnx.version_converter"
        )
    nodes = sort_nodes(model.graph)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if check:
        _check(model, label)
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
            raise UnsupportedOpError(
                node_name(node),
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
        ctx.set_constant(name, tensor_array(tensor, f"{label}: initializer '{name}'"))
    for node in nodes:
        try:
            convert_node(ctx, node)
        except ConversionError as e:
            raise with_symbolic_hint(ctx.graph, e) from None
    for vi in model.graph.output:
        ctx.graph.outputs.append(ctx.value(vi.name, f"graph output '{vi.name}'"))
    ctx.graph.remove_dead_ops()
    return ctx.graph


def with_symbolic_hint(graph: Graph, error: ConversionError) -> ConversionError:
    """``error`` with ``symbolic_hint``'s advice appended when it failed on a symbolic dim
    (or, while an input has symbolic dims, on a value only known at run time); its class
    (and a NeedsConstantError's ``input_name``) kept. ``error`` itself otherwise."""
    message = str(error)
    needs_value = isinstance(error, NeedsConstantError)
    hint = symbolic_hint(graph, message) if needs_value or "symbolic dim" in message else ""
    if not hint:
        return error
    if needs_value:
        return NeedsConstantError(f"{message}; {hint}", error.input_name)
    return type(error)(f"{message}; {hint}")


def _check(model: onnx.ModelProto, label: str) -> None:
    """onnx's checker and strict shape inference; ModelLoadError with their first line."""
    try:
        onnx.checker.check_model(model)
    except ValueError as e:  # over 2 GB: the checker needs a path; skip it
        if "2GB" not in str(e):
            raise ModelLoadError(f"the ONNX checker rejects {label}: {_first_line(e)}") from None
    except Exception as e:  # ValidationError and whatever else onnx raises
        raise ModelLoadError(f"the ONNX checker rejects {label}: {_first_line(e)}") from None
    with onnx_errors(f"ONNX shape inference rejects {label}"):
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


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
