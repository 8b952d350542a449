"""A URL as switchman shows it in messages, logs, /health and the dashboard: never with the credentials in it.

    shown_url("https://user:pw@api.example.com/v1?api-key=k")  # 'https://api.example.com/v1'

Credentials go in a URL's user and password (also sent as a Basic credential) and in its query (Azure-style
`?api-key=`, Google's `?key=`, signatures); the fragment is dropped too. The ledger's URLs are shown by
`ledger.display_url` instead: it keeps the user and the database's own options (`?sslmode=`), which a message
about a database needs, and masks only what names a password.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["NOT_A_URL", "secret_query_name", "shown_url"]

#: A word of a query parameter's name that says its value is a credential (Azure's `api-key`, Google's `key`, a SAS
#: `sig`, `access_token`, `password`, `X-Amz-Signature`, `apiKey`, `subscriptionKey`, `key1`, ...): matched against
#: a whole word of the name (camelCase split into words, a trailing number allowed), so `keyword`, `design` or
#: `country_code` are not credentials. Functions' `code` counts only as the whole name.
_SECRET_WORD = re.compile(
    r"(?:api|access|auth|client|session|refresh|private|secret|id)?"
    r"(?:keys?|tokens?|secrets?|sig|signature|pass|password|passwd|passphrase|pwd|auth|authorization"
    r"|creds?|credentials?)[0-9]*")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NAME_WORDS = re.compile(r"[^a-z0-9]+")
#: What `shown_url` shows of a URL it cannot read safely (it may hold a password where a host is expected).
NOT_A_URL = "<not a URL>"


def secret_query_name(name: str) -> bool:
    """Whether a query parameter of this name (as written or percent-encoded) carries a credential."""
    words = _CAMEL_HUMP.sub("_", urllib.parse.unquote_plus(name)).lower()  # `subscriptionKey`: `subscription_key`
    return words == "code" or any(_SECRET_WORD.fullmatch(word) for word in _NAME_WORDS.split(words))


def shown_url(url: str) -> str:
    """Scheme, host (and port) and path: no user, password, query or fragment; NOT_A_URL when unreadable."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number: `user:pa/ss@host` read as host `user`)
    except ValueError:  # e.g. an unclosed IPv6 bracket: nothing of it is shown, it may hold a password
        return NOT_A_URL
    socket_path = parts.scheme == "unix" and not parts.netloc  # unix:///run/r@1.sock: a file's name, no password
    if not socket_path and ("@" in parts.path or ";" in parts.path or (not parts.scheme and "@" in url)):
        # A password holding `/`, `?` or `#` unescaped ends the host early and leaves `user:pa` + `ss@host` in the
        # path; `;key=...` path parameters carry secrets too; without a scheme the whole URL is the path.
        return NOT_A_URL
    host = parts.netloc.rpartition("@")[2]
    if not host and parts.scheme and url[len(parts.scheme) + 1:].startswith("//"):
        return f"{parts.scheme}://{parts.path}"  # unix:///run/redis.sock: urlunsplit drops an empty host's `//`
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
