"""An upstream that answers whatever a test scripts, byte for byte: a real HTTP/1.1 server on loopback.

The fake upstream (`switchman.testing.FakeUpstream`) speaks the providers' formats correctly and
injects faults at the transport; this one sends answers of the wrong shape (a usage count of -5, a
chunk whose `choices` is a string), as a broken or hostile OpenAI-compatible server would.
"""

from __future__ import annotations

from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import orjson
from server_support import serving_handler

__all__ = ["RawUpstream", "sse"]


def sse(*events: object) -> list[bytes]:
    """SSE events (`data: <json>`, or the bytes as given) as the chunks of a streamed answer."""
    return [b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events]


class RawUpstream:
    """Answers every POST with `status`, `content_type` and `body` (bytes: one body; a list: chunked pieces)."""

    def __init__(self) -> None:
        self.status, self.content_type = 200, "application/json"
        self.body: bytes | list[bytes] = b"{}"
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = upstream.body
                self.send_response(upstream.status)
                self.send_header("content-type", upstream.content_type)
                if isinstance(body, list):
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for piece in body:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        self._handler = Handler
        self._serving = ExitStack()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, body: object, *, stream: bool = False) -> None:
        """Answer with this JSON body, or (`stream`) with these SSE pieces."""
        if stream:
            assert isinstance(body, list)
            self.content_type, self.body = "text/event-stream", body
        else:
            self.content_type, self.body = "application/json", orjson.dumps(body)

    def __enter__(self) -> RawUpstream:
        self.port = self._serving.enter_context(serving_handler(self._handler))
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.close()
