"""The scrubber runs on the event loop over text that echoes client input (an unknown model's name): its URL
credential patterns must be linear in the text's length, or one request with a crafted name stalls every other."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import httpx
import pytest

from switchman.gateway import Scrubber

from .conftest import ASK

#: ~100 KB each, one per way the URL-credential patterns could backtrack (query names, schemes, user:password).
HOSTILE = {
    "query name without =": "?" + "a" * 100_000,
    "dotted words": "a." * 50_000,
    "dashed words": "a-" * 50_000,
    "secret names without =": "&key" * 25_000,
    "secret name run": "?key" + "a" * 100_000,
    "empty values": "?key=" * 20_000,
    "schemes": "a://" * 25_000,
    "scheme with a long password, no @": "x://u:" + "b" * 100_000,
    "colons": "x://" + ":" * 100_000,
    "user colon runs": "a://:" * 20_000,
    "words and colons": "a:" * 50_000,
    "camelCase humps": "?" + "aB" * 50_000 + "=v",
}


def test_the_url_credential_patterns_are_linear() -> None:
    """All the hostile texts scrubbed in a child allowed 30 CPU seconds after its imports (linear: ~0.1 s in all;
    quadratic: minutes). CPU seconds, not wall-clock: a loaded machine does not matter; the limit is set in the child
    itself (no preexec_fn in a parent running threads)."""
    code = textwrap.dedent("""
        import json, resource, sys, time
        from switchman.gateway import Scrubber
        used = int(time.process_time()) + 30
        resource.setrlimit(resource.RLIMIT_CPU, (used, used))
        scrub = Scrubber(["sk-configured-0123"])
        for text in json.load(sys.stdin):
            scrub(text)
        print("done")
    """)
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(list(HOSTILE.values())), capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and done.stdout == "done\n", (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize(("text", "kept"), [
    ("?keyword=a&design=b&country_code=c&author=d", "?keyword=a&design=b&country_code=c&author=d"),
    ("?code=v&api_key=v&apiKey=v&X-Amz-Signature=v&password=v&sig=v&access_token=v&client_secret=v",
     "?code=[redacted]&api_key=[redacted]&apiKey=[redacted]&X-Amz-Signature=[redacted]&password=[redacted]"
     "&sig=[redacted]&access_token=[redacted]&client_secret=[redacted]"),
    ("see https://h/p?q=1?key=v and x://u:pw@h", "see https://h/p?q=1?key=[redacted] and x://u:[redacted]@h"),
])
def test_a_query_value_is_redacted_by_the_words_of_its_name(text: str, kept: str) -> None:
    assert Scrubber()(text) == kept


def test_a_huge_unknown_model_name_is_answered_404(http: httpx.Client) -> None:
    """End to end: a 100 KB `a-a-...` model name (echoed in the 404's message) is answered, not stalled on."""
    model = "a-" * 50_000
    with httpx.Client(base_url=str(http.base_url), timeout=httpx.Timeout(20.0)) as client:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": ASK})
    assert response.status_code == 404, response.text[:300]
    assert response.json()["error"]["code"] == "model_not_found"
