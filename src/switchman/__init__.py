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
    ConfigError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    DatasetError,
    NoCapableModelError,
    RateLimitError,
    RoutingError,
    SwitchmanError,
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
    "ConfigError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "DatasetError",
    "Decision",
    "ModelSpec",
    "NoCapableModelError",
    "RateLimitError",
    "RouteRequest",
    "Router",
    "RoutingError",
    "SwitchmanError",
    "UnknownModelError",
    "UpstreamBadRequestError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamServerError",
    "UpstreamTimeout",
    "__version__",
]
