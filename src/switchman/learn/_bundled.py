"""The router that ships inside the package: learned routing with no training of one's own.

Trained on all of the development outcome data (RouterBench's three tasks and AlpacaEval 2, both
splits) by `scripts/build_bundled_router.py`, and stored as parameters and per-cluster aggregates
only — no prompt text, no per-prompt label, no per-prompt embedding. Its ability model places any
model with a public or configured score; `learn/data/NOTICE` names the training data and their
licences.
"""

from __future__ import annotations

import functools
from importlib import resources

from .._exceptions import ArtifactError
from ._artifact import TrainedRouter

__all__ = ["BUNDLED", "bundled_notice", "bundled_router"]

#: The `router:` value (and the default) that names the bundled router.
BUNDLED = "bundled"
_FILE = "data/router.safetensors"


@functools.cache
def bundled_router() -> TrainedRouter:
    """The bundled router, loaded once per process."""
    resource = resources.files("switchman.learn").joinpath(_FILE)
    with resources.as_file(resource) as path:
        if not path.is_file():
            raise ArtifactError(f"the bundled router ({path}) is missing from this installation; reinstall switchman "
                                "or set the route's `router:` to a file written by `switchman train`")
        return TrainedRouter.load(path)


def bundled_notice() -> str:
    """What the bundled router was trained on, and under which licences."""
    return resources.files("switchman.learn").joinpath("data/NOTICE").read_text(encoding="utf-8")
