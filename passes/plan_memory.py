"""The ``plan-memory`` pass: the arena plan of a static graph (``irc.memory_plan``).

It leaves the graph unchanged, reports the plan's figures and keeps the plan in the pass
context's analyses (``"memory_plan"``), where the backend takes it from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from irc.ir import Graph
from irc.memory_plan import plan_memory
from irc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class PlanMemory(Pass):
    """Plan the arena, keep the plan as ``ctx.analyses["memory_plan"]`` and report it."""

    name: ClassVar[str] = "plan-memory"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        plan = plan_memory(graph)
        ctx.analyses["memory_plan"] = plan
        return plan.statistics()
