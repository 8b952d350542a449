"""Inbound dialects: the APIs besides chat completions, translated at the edge into the one chat body.

Each dialect parses its request into the body the dispatcher already takes and translates the answer
(and the stream) back, so a rule, a budget or a decision never depends on the API the client spoke.
"""

from ._endpoints import DialectEndpoints

__all__ = ["DialectEndpoints"]
