"""OpenAI's Responses API inbound, the stateless subset: a `/v1/responses` body → a chat body, and back.

Supported: `input` as a string or items (messages with input_text / input_image / output_text parts,
function_call, function_call_output; reasoning items are dropped), `instructions`, function tools,
`tool_choice`, `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`, `text.format`
(json_object / json_schema), `metadata`, `user`, `stream`, `store` (nothing is stored: the response
says `store: false`). What needs server-side state or a hosted tool (`previous_response_id`,
`conversation`, `background`, item references, file inputs, web/file search, ...) is a 400 naming it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from ..._exceptions import InvalidRequestError
from .._context import OWN_METADATA_KEYS
from .._wire import Usage
from ._chat_body import finished_chat, text_field
from ._chunks import first_answer, usage_from

__all__ = ["answer", "chat_from_responses", "response_object", "response_usage", "status_for"]

#: Fields that need what a stateless gateway does not keep, with what to do instead.
_STATEFUL = {
    "previous_response_id": "switchman does not store responses; send the whole conversation in `input` "
                            "(and store: false)",
    "conversation": "switchman does not keep conversations; send the whole conversation in `input`",
    "background": "background responses are not supported; send the request and wait for it (or stream it)",
    "prompt": "stored prompt templates are not supported; send `instructions` and `input`",
}
_IGNORED_ITEMS = {"reasoning"}
#: Fields read for their truth or echoed back: of another type they are a 400, as the chat schema makes them (a
#: `stream: "no"` would otherwise answer a stream to a client that reads JSON).
_TYPED = (("stream", bool, "a boolean"), ("store", bool, "a boolean"), ("parallel_tool_calls", bool, "a boolean"),
          ("metadata", dict, "an object"))


#: A chat body's field (as the chat schema names it in a 400) → the Responses request's field it was built from.
#: `text.format` is flat (type, name, schema, strict), the chat body's `response_format` nests all but its type in
#: `json_schema`: `response_format.json_schema.schema` was `text.format.schema`.
_FIELDS = ((re.compile(r"max_tokens$"), "max_output_tokens"), (re.compile(r"tools\.(\d+)\.function\."), r"tools.\1."),
           (re.compile(r"tool_choice\.function\."), "tool_choice."),
           (re.compile(r"response_format(?:\.json_schema)?\b"), "text.format"), (re.compile(r"messages\b.*"), "input"))


def _in_responses_terms(error: InvalidRequestError) -> InvalidRequestError:
    """The chat schema's 400 naming the Responses field (`max_output_tokens`, not the `max_tokens` it became)."""
    param = error.param or ""
    for pattern, field in _FIELDS:
        if pattern.match(param):
            named = pattern.sub(field, param, count=1)
            message = str(error).replace(repr(param), repr(named), 1)
            return InvalidRequestError(message, status=error.status, param=named, code=error.code, kind=error.kind)
    return error


def _unsupported(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def _part(part: Any, where: str) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise InvalidRequestError(f"{where} must be an object", param=where, code="invalid_value")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": text_field(part, "text", where)}
    if kind == "refusal":
        return {"type": "text", "text": text_field(part, "refusal", where)}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    what = "file_id images" if kind == "input_image" else f"content type {kind!r}"
    raise _unsupported(f"{where}: {what} not supported through switchman (input_text, output_text and "
                       "input_image with an image_url are)", where)


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequestError(f"{where}.role must be user, assistant, system or developer", param=f"{where}.role",
                                  code="invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content must be a string or a list of parts", param=f"{where}.content",
                                  code="invalid_value")
    parts = [_part(p, f"{where}.content.{j}") for j, p in enumerate(content)]
    if role != "user" or all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p.get("text", "") for p in parts) if role != "user" else parts}
    return {"role": role, "content": parts}


def _messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise InvalidRequestError("input must be a string or a non-empty list of items", param="input",
                                  code="invalid_value")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input.{i}"
        if not isinstance(item, Mapping):
            raise InvalidRequestError(f"{where} must be an object", param=where, code="invalid_value")
        kind = item.get("type", "message")
        if not isinstance(kind, str):  # a list or an object is no item type (and cannot be looked up in a set)
            raise InvalidRequestError(f"{where}.type must be a string", param=f"{where}.type", code="invalid_value")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call_id = text_field(item, "call_id", where) or text_field(item, "id", where) or f"call_{i}"
            call = {"id": call_id, "type": "function",
                    "function": {"name": text_field(item, "name", where), "arguments": text_field(item, "arguments", where)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # consecutive calls: one assistant turn
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(_part(p, f"{where}.output.{j}").get("text", "") for j, p in enumerate(output))
            else:
                output = text_field(item, "output", where)
            messages.append({"role": "tool", "tool_call_id": text_field(item, "call_id", where), "content": output})
        elif kind in _IGNORED_ITEMS:
            continue
        elif kind == "item_reference":
            raise _unsupported(f"{where}: item references need stored responses, which switchman does not keep; "
                               "send the item itself", where)
        else:
            raise _unsupported(f"{where}: input items of type {kind!r} are not supported through switchman "
                               "(message, function_call and function_call_output are)", where)
    return messages


def _tools(data: Mapping[str, Any], chat: dict[str, Any]) -> None:
    tools = data.get("tools") or []
    if not isinstance(tools, list):
        raise InvalidRequestError("tools must be a list", param="tools", code="invalid_value")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else type(tool).__name__
            raise _unsupported(f"tools.{i}: tool type {kind!r} is a hosted tool, which switchman cannot run; "
                               "only function tools are supported", f"tools.{i}")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequestError(f"missing required parameter: 'tools.{i}.name'", param=f"tools.{i}.name",
                                      code="missing_required_parameter")
        function = {"name": tool["name"], "description": tool.get("description") or "",
                    "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    if out:
        chat["tools"] = out
    choice = data.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        raise _unsupported(f"tool_choice {choice!r} is not supported (auto, none, required or a function)",
                           "tool_choice")
    if data.get("parallel_tool_calls") is False and out:
        chat["parallel_tool_calls"] = False


def _format(data: Mapping[str, Any], chat: dict[str, Any]) -> None:
    text = data.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return
    if fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise _unsupported(f"text.format type {fmt.get('type')!r} is not supported", "text.format")


def chat_from_responses(data: dict[str, Any]) -> dict[str, Any]:
    """The chat body for a Responses API body (InvalidRequestError names what is wrong or unsupported)."""
    for name, advice in _STATEFUL.items():
        if data.get(name):
            raise _unsupported(f"{name} is not supported: {advice}", name)
    for name, kind, what in _TYPED:
        if data.get(name) is not None and not isinstance(data[name], kind):
            raise InvalidRequestError(f"{name} must be {what}", param=name, code="invalid_value")
    if "input" not in data:
        raise InvalidRequestError("missing required parameter: 'input'", param="input",
                                  code="missing_required_parameter")
    messages = _messages(data["input"])
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise InvalidRequestError("instructions must be a string", param="instructions", code="invalid_value")
    chat: dict[str, Any] = {"model": data.get("model"), "messages": messages}
    if data.get("max_output_tokens") is not None:
        chat["max_tokens"] = data["max_output_tokens"]
    for name in ("temperature", "top_p", "user"):
        if data.get(name) is not None:
            chat[name] = data[name]
    _tools(data, chat)
    _format(data, chat)
    metadata = data.get("metadata")
    own = {k: metadata[k] for k in OWN_METADATA_KEYS if k in metadata} if isinstance(metadata, Mapping) else {}
    try:
        return finished_chat(chat, own, stream=bool(data.get("stream")))
    except InvalidRequestError as exc:
        raise _in_responses_terms(exc) from None


def response_usage(usage: Usage | None) -> dict[str, Any]:
    """The Responses API usage object."""
    u = usage or Usage()
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_input_tokens, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def status_for(finish: str | None) -> tuple[str, dict[str, str] | None]:
    """The response's status and incomplete_details for a chat finish reason."""
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    data: Mapping[str, Any], *, response_id: str, model: str, output: list[dict[str, Any]],
    status: str = "completed", incomplete: dict[str, str] | None = None, usage: Usage | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Response object for the request `data` (echoing its settings, as the API does)."""
    tools = [t for t in data.get("tools") or () if isinstance(t, Mapping)]
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
        "model": model, "output": output, "error": error, "incomplete_details": incomplete,
        "instructions": data.get("instructions"), "metadata": data.get("metadata") or {},
        "parallel_tool_calls": data.get("parallel_tool_calls", True) is not False,
        "temperature": data.get("temperature"), "top_p": data.get("top_p"),
        "max_output_tokens": data.get("max_output_tokens"), "tool_choice": data.get("tool_choice") or "auto",
        "tools": tools, "text": data.get("text") or {"format": {"type": "text"}}, "store": False,
        "previous_response_id": None, "reasoning": None, "truncation": data.get("truncation") or "disabled",
        "user": data.get("user"), "usage": response_usage(usage) if status != "in_progress" else None,
    }


def output_items(completion: Mapping[str, Any], response_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """The output items of a chat.completion (a message, then function calls) and its finish reason."""
    found = first_answer(completion)
    items: list[dict[str, Any]] = []
    if found.text:
        part = {"type": "output_text", "text": found.text, "annotations": [], "logprobs": []}
        items.append({"type": "message", "id": f"msg_{response_id}", "status": "completed", "role": "assistant",
                      "content": [part]})
    for i, (call_id, name, arguments) in enumerate(found.calls):
        items.append({"type": "function_call", "id": f"fc_{response_id}_{i}", "call_id": call_id, "name": name,
                      "arguments": arguments, "status": "completed"})
    return items, found.finish


def answer(data: Mapping[str, Any], completion: Mapping[str, Any], *, response_id: str, model: str) -> dict[str, Any]:
    """The Response object for a finished chat.completion."""
    items, finish = output_items(completion, response_id)
    status, incomplete = status_for(finish)
    return response_object(data, response_id=response_id, model=model, output=items, status=status,
                           incomplete=incomplete, usage=usage_from(completion.get("usage")))
