"""Server-side tools the voice agent may call: operator-configured HTTP endpoints and MCP
servers (``[tools]`` in the settings). The chat model only asks (:class:`~voice.engines.contracts.
ToolCallDelta`); this package runs what it asked, within bounds:

- :class:`ToolBox` starts every configured source and finds a tool by name;
- :class:`ServerTool` is what one tool is (a :class:`~voice.engines.contracts.ToolSpec` and ``call``);
- :func:`validate` checks the model's arguments against the tool's schema before any call.

Failures are :class:`~voice.errors.ToolError` (code ``tool_error``),
:class:`~voice.errors.ToolTimeout` (``tool_timeout``) and
:class:`~voice.errors.ToolArgumentsError` (``tool_invalid_arguments``).
"""

from voice.tools.base import ServerTool, bounded, cap_output
from voice.tools.box import ToolBox
from voice.tools.http import HttpTool
from voice.tools.mcp import McpTool, McpTools
from voice.tools.validate import validate

__all__ = [
    "HttpTool",
    "McpTool",
    "McpTools",
    "ServerTool",
    "ToolBox",
    "bounded",
    "cap_output",
    "validate",
]
