"""``onnx.backend.base.Backend`` for irc, so onnx's own conformance cases can drive irc.

irc compiles static graphs. Where a model computes a shape-like operand (a Reshape target,
Slice bounds, Pad amounts, …) from a graph input, the adapter specialises the model to the
value given at run time: that input is frozen into a constant and the model re-imported.
Each distinct specialisation is imported once and cached.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from irc.frontends.onnx_importer import NeedsConstantError, import_onnx
from irc.interpreter import run_graph


def _real_inputs(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


class IrcBackendRep(BackendRep):
    """A prepared model: imports per input specialisation, runs in the reference."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.input_names = _real_inputs(model)
        self._frozen_names: set[str] = set()
        self._graphs: dict[tuple, object] = {}

    def _graph_for(self, feeds: dict[str, np.ndarray]):
        while True:
            frozen = {n: feeds[n] for n in sorted(self._frozen_names)}
            shapes = {n: a.shape for n, a in feeds.items() if n not in frozen}
            key = tuple(
                (n, a.dtype.str, a.shape, hashlib.sha1(a.tobytes()).hexdigest())
                for n, a in frozen.items()
            ) + tuple(sorted(shapes.items()))
            if key in self._graphs:
                return self._graphs[key]
            try:
                graph = import_onnx(self.model, input_shapes=shapes, frozen_inputs=frozen)
            except NeedsConstantError as e:
                if e.input_name in feeds and e.input_name not in self._frozen_names:
                    self._frozen_names.add(e.input_name)
                    continue
                raise
            self._graphs[key] = graph
            return graph

    def run(self, inputs, **kwargs):
        """Run on ``inputs`` (a list in input order, or a dict by name); returns a tuple."""
        if isinstance(inputs, dict):
            feeds = {n: np.asarray(inputs[n]) for n in self.input_names}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = {n: np.asarray(a) for n, a in zip(self.input_names, inputs)}
        graph = self._graph_for(feeds)
        return tuple(run_graph(graph, {v.name: feeds[v.name] for v in graph.inputs}))


class IrcBackend(Backend):
    """The irc reference interpreter behind onnx's backend interface (CPU only)."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> IrcBackendRep:
        """Check the model (importing it once where no input needs freezing) and wrap it."""
        super().prepare(model, device, **kwargs)
        try:
            import_onnx(model)
        except NeedsConstantError:
            pass  # resolved per run, once the input values are known
        return IrcBackendRep(model)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one node on ``inputs`` by wrapping it in a single-node model."""
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        arrays = [np.asarray(a) for a in inputs]
        graph_inputs = [
            onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape
            )
            for name, a in zip(node.input, arrays)
            if name
        ]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        model = onnx.helper.make_model(
            onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs),
            opset_imports=[onnx.helper.make_opsetid("", opset)],
        )
        return cls.run_model(model, [a for n, a in zip(node.input, arrays) if n], device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")


prepare = IrcBackend.prepare
run_model = IrcBackend.run_model
run_node = IrcBackend.run_node
supports_device = IrcBackend.supports_device
