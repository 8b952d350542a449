"""`switchman init --from-litellm litellm_config.yaml`: a LiteLLM proxy configuration as a switchman one.

What maps: each `model_list` entry becomes a model (entries sharing a `model_name` become one model's
`deployments`, with their `rpm`/`tpm`/`weight`); `litellm_params.model`'s provider prefix and
`api_base` become a provider, and `api_key: os.environ/NAME` its `api_key_env`; `model_info` gives
prices, context window and capabilities; `router_settings` (or `litellm_settings`) fallbacks,
context-window and content-policy fallbacks, retries, timeouts, cooldowns and the routing strategy
become routes and server settings. Everything else is reported, never dropped in silence, and a
secret written into the LiteLLM file is never copied: only `os.environ/NAME` references are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._catalog import lookup_catalog_price
from .._hosts import is_loopback

__all__ = ["Import", "from_litellm"]

#: LiteLLM provider prefix → (switchman provider kind, default base URL, LiteLLM's default key variable).
_PROVIDERS: dict[str, tuple[str, str | None, str | None]] = {
    "openai": ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": ("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "groq": ("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "deepseek": ("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "together_ai": ("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "mistral": ("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "fireworks_ai": ("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "xai": ("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "deepinfra": ("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    "gemini": ("openai", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
    # Servers on one's own hardware: OpenAI-compatible under /v1, no key, priced at $0.
    "ollama": ("openai", "http://localhost:11434", None),
    "ollama_chat": ("openai", "http://localhost:11434", None),
    "lm_studio": ("openai", "http://localhost:1234/v1", None),
    "hosted_vllm": ("openai", None, None),
}
_SELF_HOSTED = {"ollama", "ollama_chat", "lm_studio", "hosted_vllm"}
#: LiteLLM prefixes of APIs switchman does not speak (reported by name).
_OTHER_APIS = {"azure", "azure_ai", "bedrock", "vertex_ai", "huggingface", "cohere", "replicate", "sagemaker", "vllm",
               "text-completion-openai", "watsonx", "databricks", "cloudflare", "ai21", "nlp_cloud", "petals"}
#: LiteLLM routing strategies → a model's `balance` between its deployments.
_BALANCE = {"simple-shuffle": "weighted", "least-busy": "least_busy", "latency-based-routing": "latency",
            "usage-based-routing": "usage", "usage-based-routing-v2": "usage"}
_CAPABILITIES = {"supports_function_calling": "tools", "supports_vision": "vision", "supports_response_schema": "json"}
#: litellm_params keys this import reads (the rest are reported).
_READ_PARAMS = {"model", "api_base", "api_key", "rpm", "tpm", "weight", "timeout"}


@dataclass
class Import:
    """The switchman configuration (shaped like the YAML file) and what could not be carried over."""

    config: dict[str, Any]
    not_mapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unpriced: dict[str, Any] = field(default_factory=dict)  # model entries left out until given prices


def _env_name(value: Any) -> str | None:
    return value.removeprefix("os.environ/") if isinstance(value, str) and value.startswith("os.environ/") else None


def _split_model(model: str) -> tuple[str, str]:
    """(LiteLLM provider prefix, upstream model name); an unprefixed name is OpenAI's or Anthropic's."""
    prefix, _, rest = model.partition("/")
    if rest and prefix in _PROVIDERS.keys() | _OTHER_APIS:
        return prefix, rest
    if not rest and model.startswith("claude"):
        return "anthropic", model
    if not rest:
        return "openai", model
    return prefix, rest  # an unknown prefix: reported


class _Importer:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.result = Import(config={})
        self.providers: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}

    def say(self, line: str) -> None:
        self.result.not_mapped.append(line)

    def provider(self, prefix: str, params: Mapping[str, Any], where: str) -> tuple[str, bool] | None:
        """The switchman provider name for this deployment's endpoint (made on first use), and if self-hosted."""
        kind, default_base, default_key = _PROVIDERS[prefix]
        base = params.get("api_base") or default_base
        if base is None:
            self.say(f"{where}: {prefix}/ needs an api_base; not imported")
            return None
        base = str(base).rstrip("/")
        if prefix in ("ollama", "ollama_chat") and not base.endswith("/v1"):
            base += "/v1"  # Ollama's OpenAI-compatible API
        key = params.get("api_key")
        key_env = _env_name(key) or (None if key is not None else default_key)
        if key is not None and _env_name(key) is None:
            self.say(f"{where}: api_key is written in the LiteLLM file; not copied (put it in an environment "
                     "variable and set the provider's api_key_env)")
        entry = {"kind": kind, "base_url": base, **({"api_key_env": key_env} if key_env else {})}
        for name, existing in self.providers.items():
            if existing == entry:
                return name, prefix in _SELF_HOSTED or is_loopback(httpx.URL(base).host)
        # The LiteLLM prefix names its usual endpoint; another endpoint is named by its host.
        name = prefix if base == (default_base or "").rstrip("/") or prefix in _SELF_HOSTED else httpx.URL(base).host
        taken, n = name, 1
        while name in self.providers:
            n += 1
            name = f"{taken}-{n}"
        self.providers[name] = entry
        return name, prefix in _SELF_HOSTED or is_loopback(httpx.URL(base).host)

    def deployment(self, entry: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str, bool] | None:
        """One model_list entry → a deployment (provider, model, limits), its upstream name, and if self-hosted."""
        params = entry.get("litellm_params") or {}
        model = params.get("model")
        if not isinstance(model, str) or not model:
            self.say(f"{where}: no litellm_params.model; not imported")
            return None
        prefix, upstream = _split_model(model)
        if prefix not in _PROVIDERS:
            reason = ("Azure OpenAI's deployment URLs and api-key header" if prefix.startswith("azure") else
                      f"the {prefix!r} API")
            self.say(f"{where}: {model}: switchman speaks OpenAI-compatible and Anthropic APIs, not {reason}; "
                     "not imported (an OpenAI-compatible endpoint in front of it can be added as a provider)")
            return None
        found = self.provider(prefix, params, where)
        if found is None:
            return None
        provider, self_hosted = found
        deployment: dict[str, Any] = {"provider": provider, "model": upstream}
        for key in ("rpm", "tpm"):
            value = params.get(key, entry.get(key))
            if value is not None:
                deployment[key] = int(value)
        if params.get("weight") is not None:
            deployment["weight"] = float(params["weight"])
        if params.get("timeout") is not None:
            deployment["timeouts"] = {"total": float(params["timeout"])}
        extra = sorted(set(params) - _READ_PARAMS)
        if extra:
            self.say(f"{where}: litellm_params {', '.join(extra)} not mapped (switchman forwards the caller's "
                     "parameters and does not add defaults)")
        return deployment, upstream, self_hosted

    def model_info(self, name: str, entry: Mapping[str, Any], model: dict[str, Any]) -> str:
        """Prices, context window and capabilities from model_info; returns the mode (chat, embedding, ...)."""
        info = entry.get("model_info") or {}
        if info.get("input_cost_per_token") is not None and info.get("output_cost_per_token") is not None:
            model["input_price"] = round(float(info["input_cost_per_token"]) * 1e6, 6)
            model["output_price"] = round(float(info["output_cost_per_token"]) * 1e6, 6)
        if info.get("max_input_tokens"):
            model["context_window"] = int(info["max_input_tokens"])
        capabilities = [c for key, c in _CAPABILITIES.items() if info.get(key)]
        if capabilities or any(key in info for key in _CAPABILITIES):
            model["capabilities"] = capabilities
        mode = str(info.get("mode") or "chat")
        if mode == "embedding":
            model["capabilities"] = []
        return mode

    def add(self, name: str, entries: list[Mapping[str, Any]]) -> None:
        deployments: list[dict[str, Any]] = []
        upstreams: list[str] = []
        self_hosted = False
        model: dict[str, Any] = {}
        mode = "chat"
        for i, entry in enumerate(entries):
            built = self.deployment(entry, f"model_list[{name}]" + (f" #{i + 1}" if len(entries) > 1 else ""))
            if built is None:
                continue
            deployments.append(built[0])
            upstreams.append(built[1])
            self_hosted = self_hosted or built[2]
            mode = self.model_info(name, entry, model)
        if not deployments:
            return
        if mode not in ("chat", "embedding"):
            self.say(f"model_list[{name}]: mode {mode!r} is not routed by switchman (chat and embeddings are); "
                     "not imported")
            return
        if len(deployments) == 1:
            only = deployments[0]
            model = {"provider": only["provider"], **({"model": only["model"]} if only["model"] != name else {}),
                     **{k: v for k, v in only.items() if k in ("rpm", "tpm", "timeouts")}, **model}
        else:
            for d in deployments:
                same = [x for x in deployments if x["provider"] == d["provider"]]
                if len(same) > 1:
                    d["name"] = f"{d['provider']}-{same.index(d) + 1}"
            model = {"deployments": deployments, **model}
        if "input_price" not in model:
            known = lookup_catalog_price(upstreams[0])
            if known is None and self_hosted:
                model.update(input_price=0.0, output_price=0.0)
                self.result.notes.append(f"{name}: runs on your own hardware, priced at $0")
            elif known is None:
                self.result.unpriced[name] = model
                self.say(f"model_list[{name}]: genai-prices has no price for {upstreams[0]!r} and model_info gives "
                         "none; left out until you add input_price and output_price (USD per 1M tokens), below")
                return
        model["_mode"] = mode
        self.models[name] = model

    # -- settings ----------------------------------------------------------------------------------
    def fallbacks(self, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Routes carrying LiteLLM's per-model fallbacks: `auto:<model>` tries the model, then its fallbacks."""
        routes: dict[str, dict[str, Any]] = {}
        for key, kind in (("fallbacks", "fallbacks"), ("context_window_fallbacks", "fallbacks"),
                          ("content_policy_fallbacks", "content_policy_fallback")):
            for item in settings.get(key) or ():
                for source, targets in (item.items() if isinstance(item, Mapping) else ()):
                    targets = [targets] if isinstance(targets, str) else list(targets or ())
                    known = [t for t in targets if t in self.models]
                    for missing in sorted(set(targets) - set(known)):
                        self.say(f"{key}: {source} → {missing}: {missing} was not imported; left out")
                    if source not in self.models:
                        self.say(f"{key}: {source} was not imported; its fallbacks are left out")
                        continue
                    route = routes.setdefault(source, {"candidates": [source], "strategy": "fixed", "model": source})
                    if kind == "content_policy_fallback" and known:
                        route["content_policy_fallback"] = known[0]
                        if len(known) > 1:
                            self.say(f"{key}: {source}: switchman takes one content-policy fallback; kept {known[0]}")
                    elif known:
                        route.setdefault("fallbacks", [])
                        route["fallbacks"] += [t for t in known if t not in route["fallbacks"] and t != source]
        if routes:
            self.result.notes.append(
                "fallbacks became routes: send model='auto:<name>' (e.g. auto:" + next(iter(routes)) + ") for a model "
                "with its fallbacks; a request naming the model itself goes to that model alone")
        return routes

    def server(self, router: Mapping[str, Any], module: Mapping[str, Any], general: Mapping[str, Any]) -> dict[str, Any]:
        server: dict[str, Any] = {}
        retries = router.get("num_retries", module.get("num_retries"))
        if retries is not None:
            server["retries"] = {"attempts": int(retries)}
            if router.get("retry_after") is not None:
                server["retries"]["backoff_s"] = float(router["retry_after"])
        timeout = router.get("timeout", module.get("request_timeout"))
        if timeout is not None:
            server["timeouts"] = {"total": float(timeout)}
        breaker = {k: v for k, v in (("failures", router.get("allowed_fails")),
                                     ("cooldown_s", router.get("cooldown_time"))) if v is not None}
        if breaker:
            server["circuit_breaker"] = breaker
        master = general.get("master_key")
        if _env_name(master):
            server["master_key_env"] = _env_name(master)
        elif master is not None:
            self.say("general_settings.master_key is written in the LiteLLM file; not copied (set "
                     "SWITCHMAN_MASTER_KEY, or create virtual keys with `switchman keys create`)")
        if general.get("database_url") is not None:
            self.say("general_settings.database_url: not copied (it holds a password); point the ledger at a "
                     "database with SWITCHMAN_LEDGER_URL or server.ledger_url")
        return server

    def report_rest(self, router: Mapping[str, Any], module: Mapping[str, Any], general: Mapping[str, Any]) -> None:
        used_router = {"fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "num_retries",
                       "retry_after", "timeout", "allowed_fails", "cooldown_time", "routing_strategy"}
        used_module = {"fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "num_retries",
                       "request_timeout"}
        for section, values, used in (("router_settings", router, used_router), ("litellm_settings", module, used_module),
                                      ("general_settings", general, {"master_key", "database_url"})):
            rest = sorted(set(values) - used)
            if rest:
                self.say(f"{section}: {', '.join(rest)} not mapped")
        if self.data.get("environment_variables"):
            self.say("environment_variables: not copied; set them in the environment switchman runs in")
        for key in sorted(set(self.data) - {"model_list", "router_settings", "litellm_settings", "general_settings",
                                            "environment_variables"}):
            self.say(f"{key}: not mapped")

    def run(self) -> Import:
        entries = self.data.get("model_list") or []
        grouped: dict[str, list[Mapping[str, Any]]] = {}
        for i, entry in enumerate(entries):
            name = entry.get("model_name") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not name:
                self.say(f"model_list[{i}]: no model_name; not imported")
                continue
            grouped.setdefault(name, []).append(entry)
        for name, group in grouped.items():
            self.add(name, group)
        router = self.data.get("router_settings") or {}
        module = self.data.get("litellm_settings") or {}
        general = self.data.get("general_settings") or {}
        strategy = router.get("routing_strategy")
        if strategy is not None:
            balance = _BALANCE.get(str(strategy))
            if balance is None:
                self.say(f"router_settings.routing_strategy {strategy!r}: not mapped (between models, switchman's "
                         "routes choose; between a model's deployments: weighted, least_busy, latency or usage)")
            for model in self.models.values():
                if balance is not None and "deployments" in model:
                    model["balance"] = balance
        routes = self.fallbacks({**module, **router})
        chat = [n for n, m in self.models.items() if m.pop("_mode") == "chat"]
        config: dict[str, Any] = {"providers": self.providers, "models": self.models}
        if chat:
            config["routes"] = {"default": {"candidates": chat, "strategy": "cheapest"}, **routes}
            self.result.notes.append(f"model='auto' picks the cheapest capable of {len(chat)} models; train a router "
                                     "on your traffic (README) to route by quality")
        server = self.server(router, module, general)
        if server:
            config["server"] = server
        self.report_rest(router, module, general)
        self.result.config = config
        return self.result


def from_litellm(data: Mapping[str, Any]) -> Import:
    """A LiteLLM proxy configuration (parsed YAML) as a switchman configuration and a report of the rest."""
    return _Importer(data).run()
