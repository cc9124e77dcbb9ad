"""irc: a mixed-precision quantizing compiler for neural networks on CPUs.

The foundation API: import a model into the irc graph IR, print and parse its text form,
verify it, and run it in the reference interpreter.

    >>> import irc
    >>> graph = irc.import_onnx("model.onnx")          # or irc.load_graph("model.irc")
    >>> print(irc.print_graph(graph))
    >>> (logits,) = irc.run(graph, [x])
    >>> calibration = irc.calibrate(graph, images)      # ranges, by the compiled program
    >>> model = irc.compile("model.onnx"); model.save("model.ircm")
    >>> model = irc.load("model.ircm")                 # a saved compiled model

The compile stages behind ``irc.compile`` are ``irc.stages``.
"""

from irc.build import load_model as load
from irc.compile import CompiledModel, CompileOptions, compile
from irc.errors import (
    ConversionError,
    CycleError,
    InputError,
    IrcError,
    ModelLoadError,
    ParseError,
    UnsupportedOpError,
    VerifyError,
)
from irc.frontends.onnx_importer import import_onnx
from irc.interpreter import run_graph as run
from irc.ir import Graph, Op, Value
from irc.loader import load_graph
from irc.parser import parse_graph
from irc.printer import print_graph
from irc.serialize import ModelFileError
from irc.specialize import specialize
from irc.stages import calibrate
from irc.verifier import verify_graph
from irc.version import __version__  # noqa: F401 (irc.__version__, not in __all__)

__all__ = [
    "CompileOptions",
    "CompiledModel",
    "ConversionError",
    "CycleError",
    "Graph",
    "InputError",
    "IrcError",
    "ModelFileError",
    "ModelLoadError",
    "Op",
    "ParseError",
    "UnsupportedOpError",
    "Value",
    "VerifyError",
    "calibrate",
    "compile",
    "import_onnx",
    "load",
    "load_graph",
    "parse_graph",
    "print_graph",
    "run",
    "specialize",
    "verify_graph",
]
