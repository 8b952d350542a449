"""A caller's context value (agent, session, task, tag) as switchman keeps it, wherever it was given: a gateway's
`X-Switchman-*` header or metadata key, or an SDK keyword (`Router.chat`, `Router.route`). One cleaning for all, so
a session named " s1 " is the same session `s1` to each. Light (no gateway import): `Router.route` uses it."""

from __future__ import annotations

from ._exceptions import InvalidRequestError

__all__ = ["MAX_VALUE", "clean_value"]

#: The longest value kept (a longer one is refused, not cut: two ids cut alike would be one session).
MAX_VALUE = 256


def clean_value(value: object, where: str) -> str | None:
    """`value` stripped (None when absent or empty); InvalidRequestError naming `where` when it is not a string, is
    longer than `MAX_VALUE` or holds control characters (they would reach logs and the ledger)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{where} must be a string", param=where, code="invalid_value")
    value = value.strip()
    if len(value) > MAX_VALUE:
        raise InvalidRequestError(f"{where} is longer than {MAX_VALUE} characters", param=where,
                                  code="invalid_value")
    if not value.isprintable():
        raise InvalidRequestError(f"{where} contains control characters", param=where, code="invalid_value")
    return value or None
