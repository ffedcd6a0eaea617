"""An order-status desk the voice agent can call: the same lookup served as an MCP server
(:mod:`.mcp_server`, stdio or streamable HTTP) and as a plain HTTP tool (:mod:`.http_tool`).
See README.md here."""
