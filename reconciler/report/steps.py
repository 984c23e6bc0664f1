"""Setup steps as `plan` and the demo print them: what would run in a container, in order."""

from __future__ import annotations

from reconciler.model.setup import Setup
from reconciler.model.vocab import Transport


def setup_lines(setup: Setup, transport: Transport, indent: str = "    ") -> list[str]:
    """One line per step (and one for node-side features), headed by how setup reaches the node."""
    if not setup.steps:
        return []
    if transport == Transport.OFF:
        head = "setup is off (provision.transport: off); with ssh or local it would run:"
    else:
        head = f"then set up through pct ({transport}):"
    lines = [f"{indent}{head}"]
    if setup.node_features and transport != Transport.OFF:
        lines.append(
            f"{indent}  0. on the node, before the first start: pct set --features {','.join(setup.node_features)}"
        )
    lines += [f"{indent}  {n}. {s.name}: {s.summary}" for n, s in enumerate(setup.steps, 1)]
    return lines
