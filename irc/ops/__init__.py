"""The op table's entries, by family: ``nn`` holds the float-level ops.

Importing this package registers every op kind in ``irc.opdef.OPS``.
"""

from irc.ops import nn  # noqa: F401
