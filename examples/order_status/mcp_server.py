"""The order desk as an MCP server, written with the MCP SDK's ``MCPServer``.

python -m examples.order_status.mcp_server              # stdio (Castwork spawns it)
python -m examples.order_status.mcp_server --http 8931  # streamable HTTP at /mcp
"""

from __future__ import annotations

import argparse

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from examples.order_status import orders

mcp: MCPServer = MCPServer("order-status", log_level="WARNING")


# readOnlyHint tells Castwork the lookup changes nothing, so it may run it freely; a tool
# without it (cancel_order) counts as having side effects.
@mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
def get_order_status(order_id: str) -> str:
    """Look up where an order is, by its number (like A100)."""
    try:
        return orders.order_status(order_id)
    except orders.OrderError as exc:
        raise ToolError(str(exc)) from exc  # the model reads this message


@mcp.tool()
def cancel_order(order_id: str) -> str:
    """Cancel an order that has not shipped yet, by its number (like A101)."""
    try:
        return orders.cancel_order(order_id)
    except orders.OrderError as exc:
        raise ToolError(str(exc)) from exc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT")
    args = ap.parse_args()
    if args.http is None:
        mcp.run()
    else:
        mcp.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
