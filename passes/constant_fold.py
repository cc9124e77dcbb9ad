"""constant-fold: evaluate every op whose operands are all constants
(``irc.constant_folding``) and drop the constants left unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from irc.constant_folding import fold_constants
from irc.ir import Graph
from irc.matching import erase_dead_producers
from irc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class ConstantFold(Pass):
    """Replace every op computed from constants alone by the constant it computes."""

    name: ClassVar[str] = "constant-fold"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        operands = [v for op in graph.ops if op.kind != "constant" for v in op.operands]
        folded = fold_constants(graph)
        # constants that only fed folded ops are garbage now; other dead code is not ours
        operands = [folded.get(id(v), v) for v in operands]
        erased = erase_dead_producers(graph, operands) if folded else 0
        return {"folded": len(folded), "erased": erased}
