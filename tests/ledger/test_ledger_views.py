"""The rollups the writer keeps and the views read from them, checked against the rows themselves.

Every test runs on SQLite and on Postgres.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from switchman.ledger import Ledger, LedgerRecord, RequestFilter
from switchman.testing import synthetic_records

NOW = 1_768_464_000.0  # the traffic ends 2026-01-15 08:00 UTC: in the past, so windows read daily rows too
DAY = 86_400


def _fill(ledger: Ledger, n: int = 3000, **options: object) -> list[LedgerRecord]:
    records = list(synthetic_records(n, days=10, seed=7, now=NOW, **options))  # type: ignore[arg-type]
    for rec in records:
        ledger.record(rec)
    assert ledger.flush_sync(timeout=30)
    return records


def test_totals_equal_sums_over_the_rows(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    records = _fill(ledger)
    since = NOW - 3 * DAY
    hour = since // 3600 * 3600  # windows start at the top of the hour
    window = [r for r in records if r.time >= hour]
    (total,) = ledger.views.totals(since=since)
    assert total.requests == len(window)
    assert total.cost_usd == pytest.approx(sum(r.cost_usd for r in window))
    baseline = sum(r.cost_usd if r.baseline_cost_usd is None else r.baseline_cost_usd for r in window)
    assert total.baseline_cost_usd == pytest.approx(baseline)
    assert total.saving_usd == pytest.approx(baseline - total.cost_usd)
    assert total.errors == sum(r.status in ("error", "stream_error") for r in window)
    assert total.refused == sum(r.status in ("rejected_budget", "bad_request") for r in window)
    assert total.input_tokens == sum(r.input_tokens for r in window)
    assert total.escalations == sum(r.escalated for r in window)
    assert total.fallbacks == sum(max(len(r.fallback_chain) - 1, 0) for r in window)
    assert total.shadow_n == sum(r.shadow_model is not None for r in window)
    by_agent = {t.group["agent"]: t for t in ledger.views.totals(since=since, by=("agent",))}
    assert {a: t.requests for a, t in by_agent.items()} == dict(Counter(r.agent for r in window))
    costs = [t.cost_usd for t in by_agent.values()]
    assert costs == sorted(costs, reverse=True)  # dearest first
    mix = ledger.views.totals(since=since, by=("agent", "model"), where={"agent": "coder"})
    assert {t.group["model"]: t.requests for t in mix} == dict(Counter(r.model for r in window if r.agent == "coder"))


@pytest.mark.parametrize(("back_h", "length_h"), [(240, None), (239.5, 100), (50, 49), (30, 5), (200, 170.25)])
def test_windows_mixing_days_and_hours_count_each_row_once(
    db_url: str, open_ledger: Callable[..., Ledger], back_h: float, length_h: float | None
) -> None:
    ledger = open_ledger(db_url)
    records = _fill(ledger, 2000)
    since = NOW - back_h * 3600
    until = None if length_h is None else since // 3600 * 3600 + length_h // 1 * 3600
    start = since // 3600 * 3600
    inside = [r for r in records if r.time >= start and (until is None or r.time < until)]
    (total,) = ledger.views.totals(since=since, until=until)
    assert total.requests == len(inside)
    assert total.cost_usd == pytest.approx(sum(r.cost_usd for r in inside))
    by_model = ledger.views.totals(since=since, until=until, by=("model",))
    assert sum(t.requests for t in by_model) == len(inside)
    latency = ledger.views.latency(since=since, until=until)[None]
    assert latency.n == sum(r.status == "ok" and r.model is not None for r in inside)


def test_an_empty_window_has_zero_totals(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    (total,) = ledger.views.totals(since=time.time())
    assert (total.requests, total.cost_usd, total.saving_pct, total.error_rate) == (0, 0.0, None, None)
    assert ledger.views.latency(since=time.time())[None].p50_ms is None
    with pytest.raises(ValueError, match="cannot group by"):
        ledger.views.totals(since=0, by=("status",))
    with pytest.raises(ValueError, match="cannot filter"):
        ledger.views.totals(since=0, by=("agent",), where={"model": "m"})


def test_timeline_steps_add_up_to_the_totals(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    records = _fill(ledger)
    since = NOW - 7 * DAY
    points = ledger.views.timeline(since=since, step_s=DAY, until=NOW)
    assert len(points) == 7 and [p.start for p in points] == [since + i * DAY for i in range(7)]
    for point in points:
        inside = [r for r in records if point.start <= r.time < point.start + DAY]
        assert point.requests == len(inside)
        assert point.cost_usd == pytest.approx(sum(r.cost_usd for r in inside))
    with pytest.raises(ValueError, match="whole number of hours"):
        ledger.views.timeline(since=since, step_s=1800)


def test_latency_percentiles_are_within_the_histograms_error(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    records = _fill(ledger)
    answered = sorted(r.latency_ms for r in records if r.status == "ok" and r.model)
    summary = ledger.views.latency(since=NOW - 11 * DAY)[None]
    assert summary.n == len(answered)
    for got, q in ((summary.p50_ms, 0.5), (summary.p95_ms, 0.95)):
        true = statistics.quantiles(answered, n=100)[int(q * 100) - 1]
        assert got is not None and abs(got - true) / true < 0.09
    per_model = ledger.views.latency(since=NOW - 11 * DAY, by_model=True)
    assert sum(per_model[m].n for m in per_model if m is not None) == len(answered)


def test_sessions_and_feedback_per_agent_and_route(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    records = _fill(ledger)
    since = NOW - 2 * DAY
    last: dict[str, LedgerRecord] = {}
    for rec in records:
        if rec.session is not None:
            last[rec.session] = rec
    active = Counter(r.agent for s, r in last.items() if r.time >= since)
    assert {s.agent: s.sessions for s in ledger.views.sessions(since=since)} == dict(active)
    scored = [r for r in records if r.status == "ok"][-40:]
    for i, rec in enumerate(scored):
        ledger.add_feedback(rec.request_id, 0.25 if i % 2 else 0.75)
    found = ledger.views.feedback(since=time.time() - 60)
    assert sum(f.n for f in found) == 40
    assert {(f.route, f.model) for f in found} == {(r.route, r.model) for r in scored}
    assert ledger.views.feedback_for(scored[0].request_id)[0][1] == 0.75


def test_the_log_filters_and_pages_newest_first(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    records = _fill(ledger, 1200)
    mine = [r for r in records if r.agent == "coder" and r.status == "ok"]
    page = ledger.views.search(RequestFilter(agent="coder", status="ok"), limit=50)
    assert [r.request_id for _, r in page.rows] == [r.request_id for r in reversed(mine)][:50]
    seen = [r.request_id for _, r in page.rows]
    while page.next_before is not None:
        page = ledger.views.search(RequestFilter(agent="coder", status="ok"), limit=50, before=page.next_before)
        seen += [r.request_id for _, r in page.rows]
    assert seen == [r.request_id for r in reversed(mine)]
    session = next(r.session for r in records if r.session)
    only = ledger.views.search(RequestFilter(session=session), limit=500).rows
    assert {r.session for _, r in only} == {session} and len(only) == sum(r.session == session for r in records)
    recent = ledger.views.search(RequestFilter(since=NOW - 3600), limit=5000).rows
    assert len(recent) == sum(r.time >= NOW - 3600 for r in records)
    assert ledger.views.search(RequestFilter(model="no-such-model")).rows == []
    values = ledger.views.values(since=NOW - 11 * DAY)
    assert set(values["agent"]) == {r.agent for r in records}


def test_decision_evidence_round_trips(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    rec = LedgerRecord(request_id="r1", model="a", task="code", scores=(("a", 0.9, 0.001), ("b", None, 0.004)),
                       excluded=(("c", "no tools"),), escalated=True)
    ledger.record(rec)
    ledger.record(LedgerRecord(request_id="r2"))
    ledger.flush_sync()
    got = ledger.find("r1")
    assert got is not None
    assert (got.task, got.scores, got.excluded, got.escalated) == ("code", rec.scores, rec.excluded, True)
    plain = ledger.find("r2")
    assert plain is not None and (plain.scores, plain.excluded, plain.escalated) == ((), (), False)


def test_two_writers_on_one_database_count_everything_once(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    first, second = open_ledger(db_url, batch_size=50), open_ledger(db_url, batch_size=50)
    records = list(synthetic_records(2000, days=1, seed=3, now=NOW))
    for i, rec in enumerate(records):
        (first if i % 2 else second).record(rec)
    assert first.flush_sync(timeout=30) and second.flush_sync(timeout=30)
    (total,) = first.views.totals(since=NOW - 2 * DAY)
    assert total.requests == len(records) == first.count()
    assert total.cost_usd == pytest.approx(sum(r.cost_usd for r in records))


def test_an_older_ledger_gets_its_rollups_from_its_rows(sqlite_path: Path, open_ledger: Callable[..., Ledger]) -> None:
    old = Ledger(f"sqlite:///{sqlite_path}")
    records = _fill(old, 800)
    old.close_sync()
    with sqlite3.connect(sqlite_path) as conn:  # as a switchman without rollups left it
        for table in ("switchman_rollup", "switchman_latency", "switchman_sessions"):
            conn.execute(f"DROP TABLE {table}")
        for column in ("task", "scores", "excluded", "escalated"):
            conn.execute(f"ALTER TABLE switchman_requests DROP COLUMN {column}")
    ledger = open_ledger(f"sqlite:///{sqlite_path}")
    (total,) = ledger.views.totals(since=NOW - 11 * DAY)
    assert total.requests == len(records)
    assert total.cost_usd == pytest.approx(sum(r.cost_usd for r in records))
    ledger.record(LedgerRecord(time=NOW, request_id="after", cost_usd=1.0))
    ledger.flush_sync()
    (after,) = ledger.views.totals(since=NOW - 11 * DAY)
    assert after.requests == len(records) + 1 and after.cost_usd == pytest.approx(total.cost_usd + 1.0)


def test_a_rare_match_is_searched_in_ranges_and_continued(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url, batch_size=5000)
    for i in range(60_000):  # one needle among the oldest rows
        ledger.record(LedgerRecord(time=NOW - 60_000 + i, request_id=f"r{i}", agent="needle" if i == 5 else "hay"))
    assert ledger.flush_sync(timeout=60)
    found = ledger.views.search(RequestFilter(agent="needle"))
    assert [r.request_id for _, r in found.rows] == ["r5"] and found.next_before is None and found.complete
    # With no time to spare the search stops early, says so, and the next page goes on from there.
    first = ledger.views.search(RequestFilter(agent="needle"), budget_s=0.0)
    assert first.rows == [] and not first.complete and first.next_before is not None
    pages, page = 1, first
    while page.next_before is not None and not page.rows:
        page = ledger.views.search(RequestFilter(agent="needle"), budget_s=0.0, before=page.next_before)
        pages += 1
    assert [r.request_id for _, r in page.rows] == ["r5"] and pages > 1
    recent = ledger.views.search(RequestFilter(agent="hay", since=NOW - 100), limit=500)
    assert len(recent.rows) == 100 and recent.next_before is None
