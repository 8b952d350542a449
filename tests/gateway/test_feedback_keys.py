"""Feedback is scoped to the key that gave it: two keys that chose the same request id (X-Request-Id) each score
their own request. The other key's request gets neither the score nor its route and model in the feedback row,
and training from the ledger pairs the score with the request the key actually made."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from switchman._config import parse_config
from switchman.evaluate import outcomes_from_ledger
from switchman.gateway import Gateway, build_app
from switchman.ledger import KeyStore, Ledger
from switchman.ledger._db import FEEDBACK
from switchman.testing import FakeUpstream

from .conftest import ENV, ServerThread, config_data


def test_a_key_scores_its_own_request_not_anothers_with_the_same_id(upstream: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    store = KeyStore(url)
    (mine, my_secret), (theirs, their_secret) = store.create("mine"), store.create("theirs")
    store.close()
    data = config_data(upstream, url)
    data["server"]["store_prompts"] = True
    gateway = Gateway.from_config(parse_config(data), env=dict(ENV))
    with ServerThread(build_app(gateway)) as base, httpx.Client(base_url=base, timeout=30) as http:
        def ask(secret: str, request_id: str, model: str, text: str) -> None:
            answer = http.post("/v1/chat/completions",
                               json={"model": model, "messages": [{"role": "user", "content": text}]},
                               headers={"authorization": f"Bearer {secret}", "x-request-id": request_id})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-switchman-request-id"] == request_id

        ask(my_secret, "job-1", "cheap", "my first question")  # mine first, theirs newer
        ask(their_secret, "job-1", "big", "their first question")
        ask(their_secret, "job-2", "big", "their second question")  # theirs first, mine newer
        ask(my_secret, "job-2", "cheap", "my second question")
        assert gateway.ledger is not None
        gateway.ledger.flush_sync(timeout=10)
        for request_id in ("job-1", "job-2"):
            scored = http.post("/v1/feedback", json={"request_id": request_id, "score": 0.0},
                               headers={"authorization": f"Bearer {my_secret}"})
            assert scored.status_code == 200, scored.text
    assert gateway.ledger is not None
    with gateway.ledger._engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(FEEDBACK).order_by(FEEDBACK.c.id))]
    # My requests' model and key, not theirs (the latest row with that id).
    assert [(r["request_id"], r["model"], r["key_id"]) for r in rows] == [("job-1", "cheap", mine.id),
                                                                           ("job-2", "cheap", mine.id)]
    gateway.ledger.close_sync()
    ledger = Ledger(url)
    table = outcomes_from_ledger(ledger.records(), ledger.feedback_by_key(), min_per_model=1)
    ledger.close_sync()
    # Training pairs my score with my prompt, never with theirs.
    assert sorted(table.prompts) == ["my first question", "my second question"]
    assert theirs.id != mine.id


def test_feedback_given_before_the_key_column_gets_its_request_s_key(tmp_path: Path) -> None:
    import sqlite3

    from switchman.ledger import LedgerRecord

    path = tmp_path / "ledger.sqlite3"
    old = Ledger(f"sqlite:///{path}")
    old.record(LedgerRecord(request_id="r1", model="m", key_id="key-0000aaaa"))
    old.flush_sync()
    old.add_feedback("r1", 0.5)
    old.close_sync()
    with sqlite3.connect(path) as conn:  # as an earlier switchman left it
        conn.execute("ALTER TABLE switchman_feedback DROP COLUMN key_id")
    ledger = Ledger(f"sqlite:///{path}")
    assert ledger.feedback_by_key() == {("r1", "key-0000aaaa"): 0.5}
    ledger.close_sync()


def test_two_keys_scoring_their_own_request_with_the_same_id_each_train_with_their_own_score(tmp_path: Path) -> None:
    from switchman.evaluate import ledger_outcomes
    from switchman.ledger import LedgerRecord

    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = Ledger(url)
    for key, model, prompt in (("key-A", "m", "a's question"), ("key-B", "m", "b's question")):
        ledger.record(LedgerRecord(request_id="job-1", model=model, key_id=key, prompt=prompt))
    ledger.flush_sync()
    for key, score in (("key-A", 0.25), ("key-B", 1.0)):  # B scores its own job-1 after A scored A's
        ledger.add_feedback("job-1", score, scored=ledger.find("job-1", key_id=key))
    assert ledger.feedback_by_key() == {("job-1", "key-A"): 0.25, ("job-1", "key-B"): 1.0}
    ledger.close_sync()
    table = ledger_outcomes(url, None)
    labels = dict(zip(table.prompts, table.quality[:, 0].tolist(), strict=True))
    assert labels == {"a's question": 0.25, "b's question": 1.0}
