"""switchman: a model router for AI agents.

Send each LLM call to the cheapest model that still does the job::

    from switchman import Router
    with Router.from_config("switchman.yaml") as router:        # close() writes the ledger, stops the local model
        decision = router.route([{"role": "user", "content": "Classify: ..."}], agent="triage")
        reply = router.chat("Classify: ...", agent="triage")     # reply.request_id, reply.model, reply.cost_usd
"""

from .__version__ import __version__
from ._catalog import ModelSpec
from ._exceptions import (
    ArtifactError,
    BudgetExceededError,
    BudgetLimitError,
    CallerLimitError,
    ConfigError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    DatasetError,
    DeploymentLimitError,
    EmbedderUnavailableError,
    InvalidRequestError,
    LedgerTimeoutError,
    LedgerUnavailableError,
    LocalModelError,
    NoCapableModelError,
    PolicyDeniedError,
    RateLimitError,
    RouterClosedError,
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
from ._router import AsyncReplyStream, Reply, ReplyStream, Router
from .routing import Decision, RouteRequest

__all__ = [
    "ArtifactError",
    "AsyncReplyStream",
    "BudgetExceededError",
    "BudgetLimitError",
    "CallerLimitError",
    "ConfigError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "DatasetError",
    "Decision",
    "DeploymentLimitError",
    "EmbedderUnavailableError",
    "InvalidRequestError",
    "LedgerTimeoutError",
    "LedgerUnavailableError",
    "LocalModelError",
    "ModelSpec",
    "NoCapableModelError",
    "PolicyDeniedError",
    "RateLimitError",
    "Reply",
    "ReplyStream",
    "RouteRequest",
    "Router",
    "RouterClosedError",
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
