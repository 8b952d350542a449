"""Test doubles that ship with switchman: a fake provider to point a gateway at.

    from switchman.testing import FakeUpstream
"""

from ._fake_upstream import FakeUpstream, Fault, FaultKind, RecordedRequest

__all__ = ["FakeUpstream", "Fault", "FaultKind", "RecordedRequest"]
