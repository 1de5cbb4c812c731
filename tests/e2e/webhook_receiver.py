"""A downstream webhook consumer, as a separate process: ``python webhook_receiver.py PORT OUT``.

It verifies every request with the ``standardwebhooks`` library (secret from
``RECEIVER_SECRET``), answers ``500`` to the first ``RECEIVER_FAILS`` requests of each
``webhook-id`` (then 2xx), or sleeps ``RECEIVER_HANG`` seconds before answering, and
appends one JSON line per request to OUT: the headers' id, the status it answered and the
payload. The test reads OUT as the consumer's view of what arrived.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = os.environ["RECEIVER_SECRET"]
FAILS = int(os.environ.get("RECEIVER_FAILS", "0"))
HANG = float(os.environ.get("RECEIVER_HANG", "0"))
seen: dict[str, int] = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if HANG:
            time.sleep(HANG)
        try:
            payload = Webhook(SECRET).verify(body, dict(self.headers.items()))
        except WebhookVerificationError:
            self._answer(401, {"id": self.headers.get("webhook-id"), "status": 401})
            return
        message_id = self.headers["webhook-id"]
        with lock:
            seen[message_id] = seen.get(message_id, 0) + 1
            status = 500 if seen[message_id] <= FAILS else 204
        self._answer(status, {"id": message_id, "status": status, "payload": payload})

    def _answer(self, status: int, record: dict[str, object]) -> None:
        with lock, open(sys.argv[2], "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
