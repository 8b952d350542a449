"""Test doubles that ship with switchman: a fake provider to point a gateway at, and synthetic traffic.

    from switchman.testing import FakeUpstream, RedisServer, exception_text, synthetic_records
"""

from ._fake_upstream import FakeUpstream, Fault, FaultKind, RecordedRequest
from ._leaks import exception_text
from ._redis_server import RedisClusterServer, RedisServer, forget_prefix, unique_prefix
from ._ledger_traffic import SYNTHETIC_PRICES, SYNTHETIC_ROUTES, synthetic_records

__all__ = ["FakeUpstream", "Fault", "FaultKind", "RecordedRequest", "RedisClusterServer", "RedisServer", "SYNTHETIC_PRICES",
           "SYNTHETIC_ROUTES", "exception_text", "forget_prefix", "synthetic_records", "unique_prefix"]
