"""Refuse request bodies over the configured size with 413, before or while they arrive; compressed ones with 415."""

from __future__ import annotations

from starlette.types import Message, Receive

from ..._exceptions import InvalidRequestError

__all__ = ["BodyLimit"]


class BodyLimit:
    """413 when Content-Length says too much; counts a body without one and stops it at the limit."""

    def __init__(self, max_body_bytes: int) -> None:
        self.limit = max_body_bytes

    def too_large(self) -> InvalidRequestError:
        """The error for a body over the limit."""
        return InvalidRequestError(f"the request body is larger than the limit of {self.limit} bytes", status=413,
                                   code="request_too_large")

    def check_declared(self, declared: bytes) -> InvalidRequestError | None:
        """The error for a Content-Length header that is not a number or is over the limit, else None."""
        if not declared.isdigit():
            return InvalidRequestError("the Content-Length header is not a number", code="invalid_header")
        return self.too_large() if int(declared) > self.limit else None

    @staticmethod
    def check_encoding(encoding: bytes) -> InvalidRequestError | None:
        """The 415 for a body in a Content-Encoding (nothing decompresses it: no gzip bomb either), else None.

        `encoding` is every Content-Encoding line joined with commas; the refusal names the first coding that is
        not `identity` (empty list items are allowed)."""
        for token in encoding.split(b","):
            if token.strip().lower() not in (b"", b"identity"):
                break
        else:
            return None
        shown = token.strip()[:40].decode("latin-1")
        return InvalidRequestError(f"Content-Encoding {shown!r} is not supported: send the request body uncompressed",
                                   status=415, code="unsupported_content_encoding")

    def counting(self, receive: Receive) -> Receive:
        """`receive` for a body of unknown length: raises the 413 error once more than the limit arrived."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self.too_large()
            return message

        return counting_receive
