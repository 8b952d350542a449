"""Which of Redis's error replies mean it cannot serve now, and which refuse only the call they answer.

redis-py raises ResponseError (or a subclass) for both. A call's own error — a script's bug or an argument it
refused (`ERR user_script:...`), WRONGTYPE, NOPERM, CROSSSLOT — fails that call only: the link stays up, or one bad
call would send every request to local state until the next ping. A condition of the server fails every call alike
until it ends, so the link goes down (local state) and the watcher brings it back once the resync can write again:

    OOM          maxmemory reached (writes refused; a script's first write too)
    BUSY         a script past busy-reply-threshold (every command refused)
    READONLY     a replica, after a failover (writes refused)
    MASTERDOWN   a replica lost its primary (replica-serve-stale-data no)
    CLUSTERDOWN  a Cluster slot not served
    MISCONF      a failed RDB save (stop-writes-on-bgsave-error: writes refused)
    NOREPLICAS   min-replicas-to-write unmet (writes refused)

Redis 6.2 and older wrap the condition a script's redis.call met in ERR (`Error running script ...: @user_script:1:
-OOM ...`): a condition all the same. -LOADING and -NOAUTH come out of redis-py as ConnectionError subclasses
already (down either way); NOSCRIPT is neither (the script is loaded and the call sent again).
"""

from __future__ import annotations

import functools
import re

__all__ = ["unusable"]

#: Every code, as the text of a plain ResponseError starts with it: redis-py has no class for BUSY, MISCONF and
#: NOREPLICAS, and which others have one depends on its version (MASTERDOWN and CLUSTERDOWN none before 6.x).
_UNUSABLE_CODES = ("OOM ", "BUSY ", "READONLY ", "MASTERDOWN ", "CLUSTERDOWN ", "MISCONF ", "NOREPLICAS ")
#: Redis <= 6.2 wraps what a script's redis.call met in ERR: `Error running script (call to f_<sha>): @user_script:1:
#: @user_script: 1: -OOM command not allowed ...` (the code after a dash; a command's own error has none).
_IN_A_SCRIPT = re.compile(r"user_script: ?\d+: -(?:" + "|".join(code.strip() for code in _UNUSABLE_CODES) + ") ")


@functools.cache
def _unusable_classes() -> tuple[type[Exception], ...]:
    """redis-py's classes for OOM, READONLY, CLUSTERDOWN and MASTERDOWN (a ClusterDownError, from 6.x on; its message
    without the code), imported once."""
    from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError

    return (OutOfMemoryError, ReadOnlyError, ClusterDownError)


def unusable(reply: BaseException) -> bool:
    """Whether an error reply is a condition of the server (the link goes down), not the refusal of one call.

    A code redis-py parsed (its `status_code`, where its version keeps one) is the reply's own: a script's
    `error_reply('ERR BUSY ...')` — ERR, its text `BUSY ...` once redis-py strips the code — refuses that call only.
    Without one (a code redis-py does not know, or an older redis-py) the text starts with the code, and such an ERR
    cannot be told apart. A Redis 6 script's ERR is a server condition when it wraps one (`_IN_A_SCRIPT`).
    """
    if isinstance(reply, _unusable_classes()):
        return True
    text = str(reply)
    if getattr(reply, "status_code", None) is None and text.startswith(_UNUSABLE_CODES):
        return True
    return _IN_A_SCRIPT.search(text) is not None
