"""Test doubles that ship with switchman: a fake provider to point a gateway at, and synthetic traffic.

    from switchman.testing import FakeUpstream, synthetic_records
"""

from ._fake_upstream import FakeUpstream, Fault, FaultKind, RecordedRequest
from ._ledger_traffic import SYNTHETIC_PRICES, SYNTHETIC_ROUTES, synthetic_records

__all__ = ["FakeUpstream", "Fault", "FaultKind", "RecordedRequest", "SYNTHETIC_PRICES", "SYNTHETIC_ROUTES",
           "synthetic_records"]
