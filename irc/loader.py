"""Open a model file of either kind irc reads: ONNX (binary) or irc text IR."""

from __future__ import annotations

import os

from irc.errors import ModelLoadError, ParseError
from irc.frontends.onnx_importer import import_onnx
from irc.ir import Graph
from irc.parser import parse_graph
from irc.specialize import specialize


def is_text_ir(data: bytes) -> bool:
    """True when ``data`` looks like irc text IR rather than an ONNX protobuf."""
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return False
    stripped = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
    return stripped.lstrip().startswith("graph")


def load_graph(path, input_shapes=None) -> Graph:
    """The graph in ``path``: an ``.onnx`` model (imported) or a text IR file (parsed).

    ``input_shapes`` (name → shape) specialises symbolic dimensions of an ONNX model.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file '{path}' does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ModelLoadError(f"'{path}' is empty")
    if is_text_ir(data):
        try:
            graph = parse_graph(data.decode("utf-8"))
        except ParseError as e:
            raise ParseError(f"'{path}': {e}") from None
        if input_shapes:
            graph = specialize(graph, input_shapes)
        return graph
    try:
        data.decode("utf-8")
        looks_textual = True
    except UnicodeDecodeError:
        looks_textual = False
    try:
        return import_onnx(data if not path.endswith(".onnx") else path, input_shapes)
    except ModelLoadError as e:
        if looks_textual and not path.endswith(".onnx"):
            raise ModelLoadError(
                f"'{path}' is neither an ONNX model nor irc text IR (text IR "
                "starts with 'graph @name(')"
            ) from None
        raise ModelLoadError(str(e).replace("the given bytes", f"'{path}'")) from None
