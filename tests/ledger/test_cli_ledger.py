"""`switchman spend` and `switchman keys`: what they print, and `--since` parsing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

import switchman.ledger as ledger_pkg
from switchman.ledger import KeyStore, Ledger, LedgerRecord, parse_since
from switchman.cli._ledger import keys_create, keys_list, keys_revoke, keys_update, spend_command

NOW = datetime(2025, 7, 10, 12, 0, tzinfo=UTC)


def console() -> Console:
    return Console(record=True, width=160, color_system=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        (" 3D ", NOW - timedelta(days=3)),
        ("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC)),
        ("2025-01-31T08:30", datetime(2025, 1, 31, 8, 30, tzinfo=UTC)),
        ("2025-01-31T08:30:00+02:00", datetime(2025, 1, 31, 6, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "7", "d7", "7y", "yesterday", "2025-13-01", "-3d"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read --since"):
        parse_since(text, now=NOW)


def test_spend_table(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    now = time.time()
    ledger = open_ledger(sqlite_url)
    for model, n, cost, base in [("small", 3, 0.001, 0.01), ("large", 1, 0.02, 0.02)]:
        for _ in range(n):
            ledger.record(
                LedgerRecord(
                    time=now - 60,
                    model=model,
                    input_tokens=1000,
                    output_tokens=100,
                    cost_usd=cost,
                    baseline_cost_usd=base,
                )
            )
    ledger.record(LedgerRecord(time=now - 10 * 86400, model="old", cost_usd=5.0))  # outside the default 7d
    ledger.close_sync()

    out = console()
    spend_command(by="model", since="7d", ledger_url=sqlite_url, console=out)
    text = out.export_text()
    lines = {line.split()[1]: line for line in text.splitlines() if re.match(r"^\s*\S\s+(small|large|Total)\s", line)}
    assert lines.keys() == {"small", "large", "Total"}
    assert re.search(
        r"small\s+│\s+3\s+│\s+3,000\s+│\s+300\s+│\s+\$0\.003\s+│\s+\$0\.03\s+│\s+90\.0%", lines["small"]
    )
    assert re.search(r"large\s+│\s+1\s+│\s+1,000\s+│\s+100\s+│\s+\$0\.02\s+│\s+\$0\.02\s+│\s+0\.0%", lines["large"])
    # total: cost 0.023 of baseline 0.05 → 54.0% saved
    assert re.search(
        r"Total\s+│\s+4\s+│\s+4,000\s+│\s+400\s+│\s+\$0\.023\s+│\s+\$0\.05\s+│\s+54\.0%", lines["Total"]
    )
    assert "old" not in text
    assert text.index("large") < text.index("small")  # most expensive first


def test_spend_shows_what_cheap_calls_cost_and_save(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    """A sub-cent call (a local or cheap model) reads as what it cost, not $0.0000."""
    ledger = open_ledger(sqlite_url)
    for _ in range(2):
        ledger.record(LedgerRecord(time=time.time() - 60, model="tiny", input_tokens=40, output_tokens=10,
                                   cost_usd=0.000006, baseline_cost_usd=0.00042))
    ledger.record(LedgerRecord(time=time.time() - 60, model="local", input_tokens=40, output_tokens=10,
                               cost_usd=0.0, baseline_cost_usd=0.00021))
    ledger.close_sync()
    out = console()
    spend_command(by="model", since="7d", ledger_url=sqlite_url, console=out)
    text = out.export_text()
    assert re.search(r"tiny\s+│\s+2\s+│\s+80\s+│\s+20\s+│\s+\$0\.000012\s+│\s+\$0\.00084\s+│", text)
    assert re.search(r"local\s+│\s+1\s+│\s+40\s+│\s+10\s+│\s+\$0\s+│\s+\$0\.00021\s+│\s+100\.0%", text)
    assert re.search(r"Total\s+│\s+3\s+│\s+120\s+│\s+30\s+│\s+\$0\.000012\s+│\s+\$0\.00105\s+│", text)


def test_spend_on_an_empty_ledger_and_bad_arguments(sqlite_url: str) -> None:
    created = KeyStore(sqlite_url)  # the file, as a gateway's start makes it (a missing one is an error)
    created.list()
    created.close()
    out = console()
    spend_command(by="agent", since="24h", ledger_url=sqlite_url, console=out)
    assert re.search(r"Total\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+\$0\s+│\s+\$0\s+│\s+—", out.export_text())

    for kwargs, message in [
        ({"by": "tenant"}, "cannot group spend by 'tenant'"),
        ({"since": "yesterday"}, "cannot read --since"),
        ({"ledger_url": "postgresql://nobody@127.0.0.1:1/none"}, "cannot read the ledger at postgresql+psycopg"),
    ]:
        err = console()
        with pytest.raises(SystemExit) as exit_info:
            spend_command(**{"ledger_url": sqlite_url, **kwargs}, console=err)  # type: ignore[arg-type]
        assert exit_info.value.code == 1
        assert message in err.export_text()


def test_keys_commands(sqlite_url: str) -> None:
    out = console()
    keys_create("ci-bot", budget_usd=2.5, ledger_url=sqlite_url, console=out)
    created = out.export_text()
    secret = re.search(r"sk-sw-[A-Za-z0-9_-]{43}", created)
    assert secret is not None
    key_id = re.search(r"Created key (key-[0-9a-f]{8})", created)
    assert key_id is not None
    assert "cannot be shown again" in created and "$2.50 per day" in created
    store = KeyStore(sqlite_url)
    assert store.verify(secret.group()) is not None

    out = console()
    keys_list(ledger_url=sqlite_url, console=out)
    listed = out.export_text()
    assert key_id.group(1) in listed and "ci-bot" in listed and "active" in listed and "$2.50/day" in listed
    assert "any" in listed

    out = console()
    keys_update(key_id.group(1), budget_usd=4.0, agents=["triage", "coder"], default_agent="triage",
                ledger_url=sqlite_url, console=out)
    assert "$4.00 per day, acting as triage, coder (default triage)" in out.export_text()
    info = store.verify(secret.group())
    assert info is not None and info.agents == ("triage", "coder") and info.budget_usd == 4.0
    err = console()
    with pytest.raises(SystemExit):
        keys_update(key_id.group(1), default_agent="other", ledger_url=sqlite_url, console=err)
    assert "is not one of the key's agents" in err.export_text()
    assert secret.group()[:10] + "…" in listed
    assert secret.group() not in listed

    out = console()
    keys_revoke(key_id.group(1), ledger_url=sqlite_url, console=out)
    assert f"Revoked key {key_id.group(1)}" in out.export_text()
    assert store.verify(secret.group()) is None
    out = console()
    keys_list(ledger_url=sqlite_url, console=out)
    assert "revoked" in out.export_text()

    err = console()
    with pytest.raises(SystemExit) as exit_info:
        keys_revoke(key_id.group(1), ledger_url=sqlite_url, console=err)
    assert exit_info.value.code == 1
    assert "no active key with id" in err.export_text()
    store.close()


def test_public_api_is_sorted_and_complete() -> None:
    assert ledger_pkg.__all__ == sorted(ledger_pkg.__all__)
    public = {name for name in vars(ledger_pkg) if not name.startswith("_")}
    assert set(ledger_pkg.__all__) == public


def test_cli_wiring(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from switchman.cli import app

    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "from-cli", "--budget", "1.5", "--ledger", sqlite_url])
    assert created.exit_code == 0, created.output
    key_id = re.search(r"key-[0-9a-f]{8}", created.output)
    assert key_id is not None and re.search(r"sk-sw-\S{43}", created.output)
    listed = runner.invoke(app, ["keys", "list", "--ledger", sqlite_url])
    assert listed.exit_code == 0 and key_id.group() in listed.output
    assert runner.invoke(app, ["keys", "revoke", key_id.group(), "--ledger", sqlite_url]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id.group(), "--ledger", sqlite_url]).exit_code == 1
    spent = runner.invoke(app, ["spend", "--by", "key", "--since", "24h", "--ledger", sqlite_url])
    assert spent.exit_code == 0 and "Spend by key" in spent.output
    assert runner.invoke(app, ["spend", "--by", "tenant", "--ledger", sqlite_url]).exit_code == 1


def test_keys_revoke_broadcasts_to_the_replicas_redis(sqlite_url: str, tmp_path: Path) -> None:
    """`keys revoke --config` with `server.redis_url`: the key id goes out on `<prefix>revoked` for every replica."""
    import redis
    from typer.testing import CliRunner

    from switchman.cli import app
    from switchman.testing import unique_prefix

    prefix = unique_prefix()
    config = tmp_path / "switchman.yaml"
    config.write_text(f"server: {{ledger_url: '{sqlite_url}', redis_url: 'redis://127.0.0.1:6379/0', "
                      f"redis: {{key_prefix: '{prefix}'}}}}\n", encoding="utf-8")
    store = KeyStore(sqlite_url)
    info, _ = store.create("broadcast-me")
    store.close()
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{prefix}revoked")
    assert pubsub.get_message(timeout=2.0) is None  # the subscription confirmation, ignored
    result = CliRunner().invoke(app, ["keys", "revoke", info.id, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "every gateway replica refuses it now" in result.output
    message = pubsub.get_message(timeout=5.0)
    assert message is not None and message["data"] == info.id.encode()
    pubsub.close()
    client.close()
