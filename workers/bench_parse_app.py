"""The reference for ``ecrm bench http``: a uvicorn app that only parses the JSON body.

Why it exists: the hub's HTTP ingest is judged against the most a Python ASGI server can do
with the same requests on the same machine, doing nothing but reading the body, parsing it
and answering 200. It runs under uvicorn with the same options as ``ecrm serve``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
_OK = orjson.dumps({"success": True})


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Read the whole body, parse it as JSON, answer ``{"success": true}``."""
    if scope["type"] != "http":
        return
    body = bytearray()
    while True:
        message = await receive()
        body.extend(message.get("body", b""))
        if not message.get("more_body"):
            break
    status = 200
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        status = 400
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": _OK})


def main(port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(int(sys.argv[1]))
