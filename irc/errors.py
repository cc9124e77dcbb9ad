"""The errors irc raises for people: each names the node, value or argument at fault.

Every error irc raises on bad input derives from ``IrcError``; the CLI prints its message
on one line and exits with code 2. Anything else escaping is a bug in irc.
"""

from __future__ import annotations


class IrcError(Exception):
    """Base class of every error caused by the user's input."""


class ModelLoadError(IrcError):
    """The model file cannot be read: missing, truncated, not a model, or invalid."""


class UnsupportedOpError(IrcError):
    """A node of the model has no irc converter (or uses an unsupported form of its op)."""

    def __init__(self, node: str, op_type: str, opset: int, reason: str = "", supported=()):
        self.node, self.op_type, self.opset = node, op_type, opset
        msg = f"node '{node}' ({op_type}, opset {opset}) is not supported"
        if reason:
            msg += f": {reason}"
        if supported:
            msg += "; supported: " + ", ".join(sorted(supported))
        super().__init__(msg)


class ConversionError(IrcError):
    """A supported node has inputs or attributes irc cannot convert; names the node."""


class CycleError(IrcError):
    """The graph has a cycle; the message lists the nodes or values on it."""


class ParseError(IrcError):
    """The text IR is malformed; the message gives line and column."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        self.line, self.col = line, col
        where = f"line {line}, column {col}: " if line is not None else ""
        super().__init__(where + message)


class VerifyError(IrcError):
    """The graph breaks an IR invariant; the message lists every problem found.

    Its first line carries the first problem in full and counts the others, which follow
    one a line: ``graph failed verification: op 'conv_3' (qconv2d): shift 70 outside
    [1, 62] (and 2 more problems)`` (a one-line report, as the CLI prints, names a cause).
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        first, *rest = self.problems or ["(no problem given)"]
        head = f"graph failed verification: {first}"
        if rest:
            head += f" (and {len(rest)} more problem{'s' if len(rest) > 1 else ''})"
        super().__init__("\n  ".join([head, *rest]))


class TypeInferenceError(IrcError):
    """An op's operands do not fit its definition (shapes, dtypes, attributes)."""


class InputError(IrcError):
    """Inputs given to a model at run time do not match its signature."""


class ElidedConstantError(IrcError):
    """A graph parsed from an elided dump cannot run: its large constants were not printed."""


class ConstantTooLargeError(IrcError):
    """A constant irc would materialise (at import or by constant folding) is larger than
    the limit, ``irc.constant_folding.MAX_CONSTANT_BYTES`` or ``$IRC_MAX_CONSTANT_BYTES``."""
