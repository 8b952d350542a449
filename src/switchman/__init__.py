"""switchman: a model router for AI agents.

Send each LLM call to the cheapest model that still does the job::

    from switchman import Router
    router = Router.from_config("switchman.yaml")
    decision = router.route([{"role": "user", "content": "Classify: ..."}], agent="triage")
"""

from .__version__ import __version__
from ._catalog import ModelSpec
from ._exceptions import (
    ArtifactError,
    BudgetExceededError,
    BudgetLimitError,
    ConfigError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    DatasetError,
    DeploymentLimitError,
    EmbedderUnavailableError,
    InvalidRequestError,
    LedgerUnavailableError,
    LocalModelError,
    NoCapableModelError,
    PolicyDeniedError,
    RateLimitError,
    RoutingError,
    SwitchmanError,
    UnknownEmbedderError,
    UnknownModelError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)
from ._router import Router
from .routing import Decision, RouteRequest

__all__ = [
    "ArtifactError",
    "BudgetExceededError",
    "BudgetLimitError",
    "ConfigError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "DatasetError",
    "Decision",
    "DeploymentLimitError",
    "EmbedderUnavailableError",
    "InvalidRequestError",
    "LedgerUnavailableError",
    "LocalModelError",
    "ModelSpec",
    "NoCapableModelError",
    "PolicyDeniedError",
    "RateLimitError",
    "RouteRequest",
    "Router",
    "RoutingError",
    "SwitchmanError",
    "UnknownEmbedderError",
    "UnknownModelError",
    "UpstreamBadRequestError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamServerError",
    "UpstreamTimeout",
    "__version__",
]
