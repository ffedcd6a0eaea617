"""Start the tools configured in castwork.toml here and ask them what a caller might, the
way the voice agent's turn does (check the arguments, call, read the text or the error).

    python -m examples.order_status.http_tool &   # the HTTP tool, on port 8932
    python -m examples.order_status.demo
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from voice.errors import ToolError
from voice.tools import ToolBox
from workers.settings import load_settings

QUESTIONS = [
    ("get_order_status", '{"order_id": "A100"}'),
    ("order_lookup", '{"order_id": "A102"}'),
    ("cancel_order", '{"order_id": "A100"}'),  # shipped: the tool says no
    ("get_order_status", '{"order": "A100"}'),  # refused before any call
]


async def main() -> None:
    settings = load_settings(Path(__file__).with_name("castwork.toml"))
    box = await ToolBox.start(settings.tools)
    try:
        for spec in box.specs():
            tool = box.get(spec.name)
            assert tool is not None
            print(f"offered: {spec.name} ({tool.server_label}, side effects: {tool.side_effects})")
        for name, arguments in QUESTIONS:
            try:
                print(f"{name}({arguments}) -> {await box.run(name, arguments)}")
            except ToolError as exc:
                print(f"{name}({arguments}) -> {exc.code}: {exc}")
    finally:
        await box.aclose()


if __name__ == "__main__":
    asyncio.run(main())
