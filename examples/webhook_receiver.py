"""A tiny webhook receiver: verify each delivery's Standard Webhooks signature, print the event.

    python -m examples.webhook_receiver --port 8400 --secret whsec_...

Then register ``http://127.0.0.1:8400/`` with ``POST /v1/webhook-endpoints``
(README.md, "Webhooks"). Each verified event is printed as one line,
``<type> <data.id> <data.status> <data.failure_code>``, and answered 204; a
request whose signature does not verify is answered 400 and printed as
``rejected: <reason>``. A redelivery (the same ``webhook-id``) is answered 204
and printed as ``duplicate: <webhook-id>``: delivery is at least once.
Standard library and ``standardwebhooks`` only.
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def make_handler(secret: str) -> type[BaseHTTPRequestHandler]:
    """Return a request handler class that verifies with ``secret`` (``whsec_...``)."""
    webhook = Webhook(secret)
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            try:
                event = webhook.verify(body, dict(self.headers.items()))
            except WebhookVerificationError as error:
                print(f"rejected: {error}", flush=True)
                self.send_response(400)
                self.end_headers()
                return
            message_id = self.headers["webhook-id"]
            with lock:
                duplicate = message_id in seen
                seen.add(message_id)
            if duplicate:
                print(f"duplicate: {message_id}", flush=True)
            else:
                data = event.get("data") or {}
                print(
                    event["type"], data.get("id"), data.get("status"), data.get("failure_code"),
                    flush=True,
                )  # fmt: skip
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Keep the output to one line per event."""

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--secret", required=True, help="the endpoint's whsec_... secret")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.secret))
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
