"""A client-side tool with the official openai SDK: the client defines ``get_order_status``,
the agent decides to call it, the client runs it (here: a dict of fake orders) and sends the
output back, and the agent speaks the answer. Against any Realtime server; here Castwork:

    .venv/bin/castwork voice &                     # ws://127.0.0.1:8765/v1/realtime
    .venv/bin/python -m examples.order_status.sdk_client "Where is my order A100?"

It asks in text (``conversation.item.create``) to keep the example short; audio works the same
way (``input_audio_buffer.append``, see ``castwork talk``). ``--tool-choice required`` makes
the model call a tool on the first answer, for models that do not decide well on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from examples.order_status import orders

TOOL: Any = {
    "type": "function",
    "name": "get_order_status",
    "description": "Look up where an order is, by its number (like A100).",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "like A100"}},
        "required": ["order_id"],
    },
}


def run_tool(name: str, arguments: str) -> str:
    """What the client does when the agent calls: its own code, its own data."""
    if name != "get_order_status":
        return f"unknown tool {name}"
    try:
        return orders.order_status(json.loads(arguments)["order_id"])
    except (ValueError, KeyError, orders.OrderError) as exc:
        return f"error: {exc}"


async def main(url: str, question: str, tool_choice: Any) -> list[dict[str, Any]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="local", websocket_base_url=url)
    events: list[dict[str, Any]] = []
    async with client.realtime.connect(model="castwork") as conn:
        await conn.session.update(
            session={"type": "realtime", "tools": [TOOL], "tool_choice": tool_choice}
        )
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": question}],
            }
        )
        await conn.response.create()
        answered = False
        async for event in conn:
            events.append(event.to_dict())
            if event.type == "response.function_call_arguments.done":
                output = run_tool(event.name, event.arguments)
                print(f"tool  {event.name}({event.arguments}) -> {output}")
                await conn.conversation.item.create(
                    item={
                        "type": "function_call_output",
                        "call_id": event.call_id,
                        "output": output,
                    }
                )
                answered = True
            elif event.type == "response.output_audio_transcript.done":
                print(f"agent {event.transcript}")
            elif event.type == "error":
                print(f"error {event.error.message}")
            elif event.type == "response.done":
                if not answered:
                    break
                answered = False
                # The tool's output is in the conversation: now the agent answers with it.
                await conn.response.create(response={"tool_choice": "auto"})
    await client.close()
    return events


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("question", nargs="?", default="Where is my order A100?")
    ap.add_argument("--url", default="ws://127.0.0.1:8765/v1")
    ap.add_argument("--tool-choice", default="auto", choices=["auto", "required"])
    args = ap.parse_args()
    asyncio.run(main(args.url, args.question, args.tool_choice))
