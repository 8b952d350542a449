"""What to add when no model can serve a request: the error says how to fix it, not only what failed.

The embedded default setup with only the local model refuses a request with tools; the message
names the provider keys whose models have the capability and how to configure a model that has it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._catalog import ModelSpec
from ._defaults import KNOWN_PROVIDERS

__all__ = ["capability_advice"]


def capability_advice(missing: frozenset[str], specs: Mapping[str, ModelSpec]) -> str:
    """One or two sentences on how to get a model with the `missing` capabilities."""
    if not missing:
        return ""
    needed = ", ".join(sorted(missing))
    having = sorted(name for name, spec in specs.items() if missing <= spec.capabilities)
    if having:
        return (f" Configured models with {needed}: {', '.join(having)}; add one to the route's candidates "
                f"or ask for it by name (model={having[0]!r}).")
    keys = [known.api_key_env for known in KNOWN_PROVIDERS.values()
            if any(missing <= frozenset(caps) for _, caps in known.models)]
    return (f" No configured model has {needed}. Without a config file, set a provider key "
            f"({', '.join(keys)}) and `switchman serve` adds that provider's models, which have it; with a "
            f"config file, add a model with `capabilities: [{needed}]` under 'models' and to the route's candidates "
            "(`switchman init` writes a config to edit).")
