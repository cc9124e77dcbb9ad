"""The op table's entries, by family: ``nn`` holds the float-level ops, ``quant`` the
quantized ones (boundaries, quantized constants, integer layers).

Importing this package registers every op kind in ``irc.opdef.OPS``.
"""

from irc.ops import nn, quant  # noqa: F401
