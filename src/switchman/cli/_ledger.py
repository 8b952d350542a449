"""The `switchman spend` and `switchman keys create|list|revoke` commands, as plain functions.

The CLI module wires them to Typer; each takes the ledger URL (None: $SWITCHMAN_LEDGER_URL, else
the SQLite file in the user data directory) and prints with Rich. Errors print one line to stderr
and exit with status 1.

Virtual keys authenticate clients of the gateway. Separately, the gateway accepts a master key
from the environment variable named by ``server.master_key_env`` (default
``SWITCHMAN_MASTER_KEY``) for admin use; it is never stored in the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, cast

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from .._money import usd
from ..ledger import (
    KeyInfo,
    KeyStore,
    Ledger,
    Period,
    SpendBy,
    SpendRow,
    parse_since,
    require_existing,
    resolve_url,
    unreadable,
)

__all__ = ["keys_create", "keys_list", "keys_revoke", "keys_update", "spend_command"]

_BY = ("agent", "model", "key", "route")


@contextmanager
def _errors(console: Console | None, url: str) -> Iterator[None]:
    """Turn a bad argument or an unreachable database into one line on stderr and exit status 1."""
    console = console or Console(stderr=True)
    try:
        yield
    except ValueError as exc:
        _fail(console, str(exc))
    except SQLAlchemyError as exc:
        _fail(console, unreadable(url, exc))


@contextmanager
def _key_store(url: str, *, existing: bool = True) -> Iterator[KeyStore]:
    """The key store at `url`, closed after; `existing`: refuse a database that is not there (only a create makes it)."""
    if existing:
        require_existing(url)
    store = KeyStore(url)
    try:
        yield store
    finally:
        store.close()


def _fail(console: Console, message: str) -> NoReturn:
    """One line (never wrapped, never read as markup: it quotes what the user typed) and exit status 1."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise SystemExit(1)


def _saving(row: SpendRow) -> str:
    pct = row.saving_pct
    return "—" if pct is None else f"{pct:.1f}%"


def spend_table(rows: list[SpendRow], *, by: str, since_text: str) -> Table:
    """The spend report as a Rich table, with a total row."""
    table = Table(title=f"Spend by {by} since {since_text}", show_footer=False)
    table.add_column(by.capitalize())
    for column in ("Requests", "Tokens in", "Tokens out", "Cost", "Baseline", "Saving"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            escape(row.group) if row.group is not None else "(none)",  # a client-chosen agent or model name
            f"{row.requests:,}",
            f"{row.input_tokens:,}",
            f"{row.output_tokens:,}",
            usd(row.cost_usd),
            usd(row.baseline_cost_usd),
            _saving(row),
        )
    total = SpendRow(
        "Total",
        sum(r.requests for r in rows),
        sum(r.input_tokens for r in rows),
        sum(r.output_tokens for r in rows),
        sum(r.cost_usd for r in rows),
        sum(r.baseline_cost_usd for r in rows),
    )
    table.add_section()
    table.add_row(
        "[bold]Total[/bold]",
        f"{total.requests:,}",
        f"{total.input_tokens:,}",
        f"{total.output_tokens:,}",
        usd(total.cost_usd),
        usd(total.baseline_cost_usd),
        _saving(total),
    )
    return table


def spend_command(
    by: str = "model", since: str = "7d", ledger_url: str | None = None, *, console: Console | None = None
) -> None:
    """Print spend per agent, model, key or route, and the saving against each route's priciest model."""
    url = resolve_url(ledger_url)
    with _errors(console, url):
        if by not in _BY:
            raise ValueError(f"cannot group spend by {by!r}: use one of {', '.join(_BY)}")
        start = parse_since(since)
        require_existing(url)
        ledger = Ledger(url)
        try:
            rows = ledger.query_spend(cast(SpendBy, by), since=start)
        finally:
            ledger.close_sync()
    console = console or Console()
    console.print(spend_table(rows, by=by, since_text=start.strftime("%Y-%m-%d %H:%M UTC")))


def _agents_text(info: KeyInfo) -> str:
    if info.agents is None:
        return "any" if info.default_agent is None else f"any (default {info.default_agent})"
    default = f" (default {info.default_agent})" if info.default_agent else ""
    return ", ".join(info.agents) + default


def keys_create(
    name: str,
    *,
    budget_usd: float | None = None,
    budget_period: str = "day",
    agents: Sequence[str] | None = None,
    default_agent: str | None = None,
    ledger_url: str | None = None,
    console: Console | None = None,
) -> None:
    """Create a virtual key and print its secret, once."""
    url = resolve_url(ledger_url)
    with _errors(console, url):
        if budget_period not in ("day", "month"):
            raise ValueError(f"unknown budget period {budget_period!r}: use 'day' or 'month'")
        with _key_store(url, existing=False) as store:
            info, secret = store.create(name, budget_usd=budget_usd, budget_period=cast(Period, budget_period),
                                        agents=list(agents) if agents else None, default_agent=default_agent)
    console = console or Console()
    budget = "" if info.budget_usd is None else f" with a budget of {usd(info.budget_usd)} per {info.budget_period}"
    console.print(f"Created key [bold]{escape(info.id)}[/bold] ({escape(info.name)}){budget}, "
                  f"acting as {escape(_agents_text(info))}.")
    console.print(secret, soft_wrap=True, highlight=False, markup=False)
    console.print("[yellow]Store this secret now: it is not kept and cannot be shown again.[/yellow]")


def keys_update(
    key_id: str,
    *,
    budget_usd: float | None = None,
    no_budget: bool = False,
    budget_period: str | None = None,
    agents: Sequence[str] | None = None,
    any_agent: bool = False,
    default_agent: str | None = None,
    ledger_url: str | None = None,
    console: Console | None = None,
) -> None:
    """Change a key's budget or agents; a running gateway applies it within its key refresh interval."""
    url = resolve_url(ledger_url)
    with _errors(console, url):
        changes: dict[str, Any] = {}
        if no_budget or budget_usd is not None:
            changes["budget_usd"] = None if no_budget else budget_usd
        if budget_period is not None:
            changes["budget_period"] = budget_period
        if any_agent or agents:
            changes["agents"] = None if any_agent else list(agents or ())
        if default_agent is not None:
            changes["default_agent"] = default_agent or None
        if not changes:
            raise ValueError("nothing to change: give --budget, --no-budget, --period, --agent, --any-agent or "
                             "--default-agent")
        with _key_store(url) as store:
            info = store.update(key_id, **changes)
    console = console or Console()
    budget = "no budget" if info.budget_usd is None else f"{usd(info.budget_usd)} per {info.budget_period}"
    console.print(f"Updated key [bold]{escape(info.id)}[/bold] ({escape(info.name)}): {budget}, "
                  f"acting as {escape(_agents_text(info))}.")


def keys_list(*, ledger_url: str | None = None, console: Console | None = None) -> None:
    """Print every virtual key (never a secret)."""
    url = resolve_url(ledger_url)
    with _errors(console, url):
        with _key_store(url) as store:
            keys = store.list()
    console = console or Console()
    table = Table(title="Virtual keys")
    table.add_column("Id", no_wrap=True)
    for column in ("Name", "Key", "Created (UTC)", "Status", "Budget", "Agents"):
        table.add_column(column)
    for info in keys:
        table.add_row(  # names and agents are the user's text: shown as typed, never read as markup
            escape(info.id),
            escape(info.name),
            escape(info.prefix),
            info.created.strftime("%Y-%m-%d %H:%M"),
            "[red]revoked[/red]" if info.revoked else "[green]active[/green]",
            "—" if info.budget_usd is None else f"{usd(info.budget_usd)}/{info.budget_period}",
            escape(_agents_text(info)),
        )
    console.print(table)


def keys_revoke(
    key_id: str, *, ledger_url: str | None = None, console: Console | None = None, redis_url: str | None = None,
    redis_prefix: str = "sm:",
) -> None:
    """Revoke a virtual key; exits with status 1 if no active key has that id.

    With `redis_url` (the gateways' `server.redis_url`) the revocation is also broadcast, so every
    replica refuses the key at once instead of at its next key refresh.
    """
    url = resolve_url(ledger_url)
    with _errors(console, url):
        with _key_store(url) as store:
            revoked = store.revoke(key_id)
        if not revoked:
            raise ValueError(f"no active key with id {key_id!r} (see `switchman keys list`)")
    console = console or Console()
    if redis_url:
        from ..state import publish_revocation

        if publish_revocation(redis_url, redis_prefix, key_id):
            console.print(f"Revoked key [bold]{escape(key_id)}[/bold] (broadcast: every gateway replica refuses it now).")
            return
        console.print("[yellow]could not reach Redis to broadcast the revocation[/yellow]")
    console.print(f"Revoked key [bold]{escape(key_id)}[/bold] (a running gateway stops accepting it at its next key "
                  "refresh: server.key_refresh_s, 5 s by default).")
