"""Keep the cyclic garbage collector's passes off the heap a server builds at startup.

After startup a gateway holds ~96k-124k objects the collector tracks (the price catalog alone 13k,
configuration models, router files, imported modules) that live as long as the process. Every
full collection walked all of them: 31-41 ms with the event loop stopped, the p99 of a busy gateway.
`settle_heap` collects once and then freezes what is alive (`gc.freeze`: moved to a permanent
generation that passes skip), so a full pass walks only what requests made since. The young
generation's threshold stays at CPython's 700: at 10,000 the collector's total time halved but its
longest pass grew to twice the longest at 700 (docs/benchmarks.md, "Hot path"), and the tail is what
this is for. The process's own choice: `switchman serve` calls it once the gateway has started; an
app embedded elsewhere leaves the collector as its host set it.
"""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


def settle_heap() -> int:
    """Collect, then freeze every object alive now out of later passes; returns how many froze."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
