"""The bounds a gateway keeps under hostile or slow clients (`server.limits`), with their defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ServerLimits"]


class ServerLimits(BaseModel):
    """What one client may hold or send: the bounds that keep a gateway up under hostile or slow clients.

        server: {limits: {max_connections: 4096, header_timeout_s: 5}}

    Beyond `max_connections` a new connection gets a 503 and is closed; a request head larger than
    `max_header_bytes` gets a 431, one not complete within `header_timeout_s` a 408, and a body not
    complete within `body_timeout_s` of its head a 408. A client that reads nothing of its answer for
    `write_timeout_s` is disconnected (its stream is closed and recorded, never blamed on the upstream).
    A body with more messages, content parts, tool calls or tools than `max_messages`, `max_content_parts`,
    `max_tool_calls` or `max_tools` gets a 400 naming the field, counted before any validation: what parsing,
    validating and counting a body costs grows with its items, and 4 MB of tiny ones cost seconds of CPU. Each
    item counts as what it becomes in the chat body: an Anthropic tool_use block or a Responses function_call item
    a tool call, an Anthropic tool_result block a message.
    A /v1/embeddings request with more inputs than `max_embedding_inputs` gets a 400 too (OpenAI's own limit).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(default=2048, ge=1, description="open client connections; 503 beyond")
    max_connections_per_client: int | None = Field(
        default=None, ge=1, description="open connections from one address; off by default (a proxy is one address)")
    max_header_bytes: int = Field(default=65536, ge=1024, description="request line + headers; 431 beyond")
    header_timeout_s: float = Field(default=10.0, gt=0, description="to receive a request's head; 408 after")
    body_timeout_s: float = Field(default=60.0, gt=0, description="to receive a body after its head; 408 after")
    write_timeout_s: float = Field(default=30.0, gt=0, description="a client that reads nothing this long is dropped")
    keepalive_timeout_s: float = Field(default=75.0, gt=0, description="an idle kept-alive connection is closed")
    keepalive_max_requests: int = Field(default=1000, ge=1, description="requests on one connection, then close")
    max_prompt_chars: int = Field(default=2_000_000, ge=1, description="text characters over all messages; 413 beyond")
    max_json_depth: int = Field(default=64, ge=2, le=200, description="nesting of the request body; 400 beyond")
    max_messages: int = Field(default=10_000, ge=1, description="messages (Responses: input items); 400 beyond")
    max_content_parts: int = Field(default=20_000, ge=1, description="content parts over all messages; 400 beyond")
    max_tool_calls: int = Field(default=10_000, ge=1, description="tool calls over all messages; 400 beyond")
    max_tools: int = Field(default=1024, ge=1, description="tool definitions; 400 beyond (OpenAI takes 128)")
    max_embedding_inputs: int = Field(default=2048, ge=1, description="inputs of one embeddings request; 400 beyond")
    failed_auth_burst: int = Field(default=20, ge=1, description="failed authentications one address may make at once")
    failed_auth_per_s: float = Field(default=1.0, gt=0, description="... and then per second; 429 beyond")

    @property
    def smallest_item_cap(self) -> int:
        """The lowest of the item caps: a body too short to hold that many items is not counted. Computed
        each time (a min of five): a cached value would be copied by `model_copy(update=...)` and go stale."""
        return min(self.max_messages, self.max_content_parts, self.max_tool_calls, self.max_tools,
                   self.max_embedding_inputs)
