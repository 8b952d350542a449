"""What the dashboard reads, gathered from one gateway: the ledger, keys, budgets, health, configuration.

Pages only read through these public objects; the dashboard holds no state of its own beyond the
logins. A model has one or several deployments (provider, key, region); circuit state and live
TTFT are read from the health board per deployment id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._catalog import ModelSpec
from .._config import Config
from .._urls import shown_url
from ..gateway import Gateway
from ..state import HealthStore
from ..ledger import Budgets, KeyStore, Ledger

__all__ = ["WINDOWS", "DeploymentView", "Sources", "Window", "window_named"]


@dataclass(frozen=True, slots=True)
class Window:
    """A time window a page covers, and the step of its charts."""

    name: str
    label: str
    span_s: int
    step_s: int


WINDOWS: tuple[Window, ...] = (
    Window("24h", "last 24 hours", 86_400, 3_600),
    Window("7d", "last 7 days", 7 * 86_400, 6 * 3_600),
    Window("30d", "last 30 days", 30 * 86_400, 86_400),
)
_DEFAULT_WINDOW = WINDOWS[1]


def window_named(name: str | None) -> Window:
    """The window called `name` (24h, 7d, 30d); the 7-day window when unknown or absent."""
    return next((w for w in WINDOWS if w.name == name), _DEFAULT_WINDOW)


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """One deployment of a model as the models page shows it (never its key)."""

    id: str
    model: str
    provider: str
    endpoint: str
    upstream_model: str
    state: str
    live_ttft_ms: float | None
    weight: float


@dataclass(slots=True)
class Sources:
    """Everything the pages read, looked up through the gateway at each read (see `from_gateway`): a reload swaps
    its configuration, models, budgets and deployments, and the pages (and a new key's budget) follow it, never
    the retired ones."""

    gateway: Gateway
    base_dir: Path
    clock: Callable[[], float] = time.time

    @classmethod
    def from_gateway(cls, gateway: Gateway, *, base_dir: str | Path = ".") -> Sources:
        """Read through the gateway's own objects, as they are at each read."""
        return cls(gateway=gateway, base_dir=Path(base_dir))

    @property
    def config(self) -> Config:
        """The configuration served now."""
        return self.gateway.config

    @property
    def models(self) -> Mapping[str, ModelSpec]:
        """The models of the configuration served now."""
        return self.gateway.decider.models

    @property
    def ledger(self) -> Ledger | None:
        """The gateway's ledger (None: none configured); one for the process, a reload keeps it."""
        return self.gateway.ledger

    @property
    def keys(self) -> KeyStore | None:
        """The virtual keys' database the dashboard creates and revokes keys in (None: no keys database); a reload
        keeps it."""
        return self.gateway.keys

    @property
    def budgets(self) -> Budgets | None:
        """The live dispatcher's budget manager (a reload builds a new one)."""
        return self.gateway.dispatcher.budgets

    def health(self) -> HealthStore:
        """The live dispatcher's health board."""
        return self.gateway.dispatcher.health

    def deployments(self) -> Mapping[str, Any]:
        """The live dispatcher's deployments by model."""
        return self.gateway.dispatcher.deployments

    def deployment_views(self) -> dict[str, list[DeploymentView]]:
        """Each model's deployments with their circuit-breaker state and live TTFT (keyed by deployment id)."""
        board = self.health()
        result: dict[str, list[DeploymentView]] = {}
        for model, found in self.deployments().items():
            items: Sequence[Any] = found if isinstance(found, Sequence) else (found,)
            for deployment in items:
                provider = deployment.provider
                result.setdefault(model, []).append(DeploymentView(
                    id=deployment.id, model=model, provider=provider.name, endpoint=shown_url(provider.base_url),
                    upstream_model=deployment.wire_name, state=board.state(deployment.id),
                    live_ttft_ms=board.ttft_ms.get(deployment.id), weight=deployment.weight,
                ))
        return result

    def eval_report_path(self, route: str) -> Path | None:
        """The `switchman eval --json` report configured for a route, resolved against the config's folder."""
        given = self.config.dashboard.eval_reports.get(route)
        if given is None:
            return None
        path = Path(given)
        return path if path.is_absolute() else self.base_dir / path
