"""The order desk as a plain HTTP tool: Castwork POSTs the model's arguments as JSON, and the
response body is what the model reads.

    python -m examples.order_status.http_tool --port 8932
    curl -d '{"order_id": "A100"}' http://127.0.0.1:8932/order_status
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from examples.order_status import orders


async def order_status(request: Request) -> PlainTextResponse:
    try:
        arguments = await request.json()
    except ValueError:
        return PlainTextResponse("send the arguments as a JSON object", status_code=400)
    order_id = arguments.get("order_id") if isinstance(arguments, dict) else None
    if not isinstance(order_id, str):
        return PlainTextResponse("order_id (a string) is required", status_code=400)
    try:
        return PlainTextResponse(orders.order_status(order_id))
    except orders.OrderError as exc:
        # A 4xx body reaches the model, which can tell the caller.
        return PlainTextResponse(str(exc), status_code=404)


app = Starlette(routes=[Route("/order_status", order_status, methods=["POST"])])


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8932)
    args = ap.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
