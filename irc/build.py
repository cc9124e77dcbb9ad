"""The last compile stage: an L3 graph (or a float one) into a ``CompiledModel``.

    >>> graph = load("mobilenetv2.onnx")          # a graph this compile owns
    >>> model = build(graph, pipeline=DEFAULT_FLOAT_PIPELINE, num_threads=1)
    >>> model = load_model("model.ircm")          # irc.load: a saved model, built again

``build`` specialises a symbolic leading (batch) dimension to 1, runs ``pipeline`` (``""``
for a graph that is final), the ``plan-memory`` pass (whose plan the backend lays its driver
over), binds a kernel per op and generates the driver (``irc.backends.numba.codegen``).
``num_threads`` fixes the thread count of every call; ``None`` lets each call choose between
1 and all of Numba's threads from the times of the model's recent calls
(``CompiledModel.adaptive_threads``). Programs are cached in the process by a hash of the
graph's text, its constant bytes and the pipeline, so building the same graph again while a
model of it is alive skips everything; the cache holds programs weakly, so a dropped model's
constants are freed with it. Numba's ``cache=True`` keeps the kernels' machine code on disk,
so a second process does not compile them again. ``kernel_isa()`` names the instruction set
the integer kernels use here (for the cost model's cache keys).
"""

from __future__ import annotations

import hashlib
import os
import weakref

import numba
import numpy as np

from irc.backends.numba.codegen import generate_program
from irc.backends.numba.isa import kernel_isa  # noqa: F401 - for clients of this stage
from irc.backends.numba.kernel_table import BackendError
from irc.compiled import CompiledModel
from irc.errors import ConversionError
from irc.frontends.onnx_importer import import_onnx
from irc.ir import Graph
from irc.loader import load_graph
from irc.pass_manager import PassContext, PassManager
from irc.printer import print_graph
from irc.serialize import read_graph_file
from irc.specialize import open_batch, specialize

# graph key -> program, held only while a CompiledModel uses it (each holds its constants)
_CACHE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_STATS: dict[str, list] = {}  # graph key -> the passes' statistics of its cached program


def load(model, input_shapes=None) -> Graph:
    """A graph of ``model`` (an ONNX path, ModelProto or bytes, a text IR path, or a
    Graph) that the caller owns: a copy when ``model`` is a Graph."""
    if isinstance(model, Graph):
        return specialize(model, input_shapes) if input_shapes else model.clone()
    if isinstance(model, (str, os.PathLike)):
        return load_graph(model, input_shapes)
    return import_onnx(model, input_shapes)


def load_batch_open(model, input_shapes=None) -> Graph:
    """``load(model, input_shapes)``, except that an input whose model leaves its batch
    (leading) dim symbolic keeps it symbolic, so calibration and statistics run at any
    batch (``build_plan`` fixes it last); the batch too when the model's shape arithmetic
    needs it (a Reshape to ``[batch, -1]``, say): then this is ``load`` itself."""
    if not input_shapes:
        return load(model)
    try:
        graph = load(model, open_batch(input_shapes))
    except ConversionError:  # a value the model computes needs the batch (or a bad shape)
        return load(model, input_shapes)
    fixed = {
        v.name: input_shapes[v.name]
        for v in graph.inputs
        if v.name in input_shapes and v.type.rank and isinstance(v.type.shape[0], int)
    }
    return specialize(graph, fixed) if fixed else graph  # checks a static batch given


def static_graph(graph: Graph) -> Graph:
    """``graph`` with every symbolic leading dimension of an input specialised to 1;
    BackendError naming an input with any other symbolic dimension."""
    shapes = {}
    for v in graph.inputs:
        shape = tuple(1 if i == 0 and isinstance(d, str) else d for i, d in enumerate(v.type.shape))
        if any(isinstance(d, str) for d in shape):
            given = "input_shapes={'" + v.name + "': (...)} / --input-shape " + v.name + "=..."
            raise BackendError(
                f"input '{v.name}' has symbolic dimensions {v.type}; the Numba backend needs "
                f"static shapes: give {given}"
            )
        if shape != v.type.shape:
            shapes[v.name] = shape
    return specialize(graph, shapes) if shapes else graph


def check_threads(num_threads: int | None) -> int:
    """The most threads a program runs with (default: all of Numba's threads)."""
    limit = numba.config.NUMBA_NUM_THREADS
    threads = limit if num_threads is None else num_threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise BackendError(f"num_threads must be a whole number, got {num_threads!r}")
    if not 1 <= threads <= limit:
        raise BackendError(f"num_threads must be between 1 and {limit}, got {num_threads}")
    return int(threads)


def build(graph: Graph, *, pipeline: str = "", num_threads: int | None = None,
          cache: bool = True, warmup: bool = True, stats=()) -> CompiledModel:  # fmt: skip
    """The ``CompiledModel`` of ``graph`` (never modified), after ``pipeline``; see the
    module docstring. ``stats``: earlier stages' pass statistics, kept on the model before
    this stage's own. ``warmup`` runs the model once on zeros, so Numba compiles (or loads
    from its cache) every kernel here rather than on the first call."""
    threads = check_threads(num_threads)
    graph = static_graph(graph)  # a copy when any shape changes
    key = graph_key(graph, pipeline) if cache else ""
    program = _CACHE.get(key) if cache else None
    own_stats = _STATS.get(key) if program is not None else None
    hit = own_stats is not None
    if not hit:
        ctx = PassContext()
        graph = graph.clone()  # the program owns its graph (annotations are written on it)
        if pipeline:
            PassManager(pipeline, ctx).run(graph)
        PassManager("plan-memory", ctx).run(graph)
        program, own_stats = generate_program(graph, ctx.analyses["memory_plan"]), ctx.statistics
        if cache:
            _CACHE[key], _STATS[key] = program, own_stats
            weakref.finalize(program, _STATS.pop, key, None)
    model = CompiledModel(program, [*stats, *own_stats], threads, cache_hit=hit,
                          adaptive_threads=num_threads is None)  # fmt: skip
    if warmup and not program.warmed:  # kernels compiled once are compiled in the process
        model.warm_up()
        program.warmed = True
    return model


def load_model(path, num_threads: int | None = None, warmup: bool = True) -> CompiledModel:
    """A ``CompiledModel`` from a file written by ``CompiledModel.save`` (``irc.load``).

    The saved graph is final, so it is built with no pass pipeline. ``num_threads`` and
    ``warmup`` are as for ``build``. The file's metadata is ``model.metadata``.
    """
    graph, meta = read_graph_file(path)
    model = build(graph, num_threads=num_threads, warmup=warmup)
    model.metadata = meta
    return model


def clear_cache() -> None:
    """Forget every cached program (their constants are freed with the last model)."""
    _CACHE.clear()
    _STATS.clear()


def cached_programs() -> int:
    """How many programs the cache holds (those a live model still uses)."""
    return len(_CACHE)


def graph_key(graph: Graph, pipeline: str) -> str:
    """The cache key: the graph's text with constants elided, their bytes, the pipeline."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(pipeline.encode() + b"\0" + print_graph(graph, full=False).encode())
    for op in graph.ops:
        for value in op.attrs.values():
            if isinstance(value, np.ndarray):
                digest.update(f"{value.dtype.str}{value.shape}".encode())
                digest.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    return digest.hexdigest()
