"""Keep the cyclic garbage collector's passes off the heap a server builds at startup.

After startup a gateway holds ~96k objects the collector tracks (the price catalog alone 13k,
configuration models, router files, imported modules) and that live as long as the process. Every
full collection walked all of them: 31-41 ms with the event loop stopped, the p99 of a busy gateway.
`settle_heap` collects once and then freezes what is alive (`gc.freeze`: moved to a permanent
generation that passes skip), so a full pass walks only what requests made since. The young
generation's threshold is raised too: fewer passes over the objects the requests in flight hold.
The process's own choice: `switchman serve` calls it once the gateway has started; an app embedded
elsewhere leaves the collector as its host set it.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "settle_heap"]

#: Allocations (net of frees) between young-generation passes (CPython's default is 700).
GEN0_THRESHOLD = 10_000


def settle_heap() -> int:
    """Collect, freeze every object alive now out of later passes, raise the young threshold; returns how many froze."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
