"""Scripts that use the SDK and never close it exit promptly, with their ledger rows written.

Each case is a real Python process running a real script against the fake upstream. The bound is a
hang detector (a script used to wait forever on the SDK's loop thread), not a speed goal: it is
counted from the script's last line to the process's exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from switchman.ledger import Ledger, LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV

#: Seconds from a script's last line to its exit; a hang waits forever, a clean exit takes well under 1 s.
EXIT_BOUND_S = 20.0
END = "script-end"


def run_script(body: str, config: Path, tmp_path: Path) -> tuple[int, str]:
    """Run `body` (with `router` built from `config`), return (exit status, stderr); fail if it hangs at exit."""
    script = tmp_path / "script.py"
    script.write_text("import asyncio, sys\nfrom switchman import Router\n"
                      "router = Router.from_config(sys.argv[1])\n" + textwrap.dedent(body) + f"\nprint({END!r}, flush=True)\n")
    process = subprocess.Popen([sys.executable, str(script), str(config)], env={**os.environ, **ENV},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == END:
                break
        ended = time.monotonic()
        try:
            status = process.wait(timeout=EXIT_BOUND_S + 60)
        except subprocess.TimeoutExpired:
            pytest.fail("the script's process did not exit: a thread keeps it alive")
        waited = time.monotonic() - ended
        assert process.stderr is not None
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    assert waited < EXIT_BOUND_S, f"exit took {waited:.1f} s after the script's last line\n{stderr}"
    return status, stderr


def rows(tmp_path: Path) -> list[LedgerRecord]:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        return ledger.records()
    finally:
        ledger.close_sync()


@pytest.fixture
def config(tmp_config_file: Callable[..., Path], upstream: FakeUpstream) -> Path:
    upstream.clear()
    return tmp_config_file()


def test_a_script_that_never_closes_exits_with_its_rows_written(config: Path, tmp_path: Path) -> None:
    status, stderr = run_script("""
        reply = router.chat("hello")
        print(reply.request_id, reply.model, flush=True)
    """, config, tmp_path)
    assert status == 0, stderr
    assert [(r.model, r.status) for r in rows(tmp_path)] == [("cheap", "ok")]


def test_an_uncaught_budget_error_ends_the_script(config: Path, tmp_path: Path) -> None:
    status, stderr = run_script("""
        router.chat("hello")
        router.chat("hello", agent="broke")
    """, config, tmp_path)
    assert status == 1
    assert "BudgetLimitError: agent budget 'broke' exceeded" in stderr
    assert sorted(r.status for r in rows(tmp_path)) == ["ok", "rejected_budget"]


def test_a_stream_left_open_at_exit_is_ended_and_recorded(
    config: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.inject("slow_stream", model="cheap", seconds=2.0)
    status, stderr = run_script("""
        stream = router.chat("one two three four five six seven eight nine ten", stream=True)
        print(next(stream)["object"], flush=True)
    """, config, tmp_path)
    assert status == 0, stderr
    assert [(r.model, r.status) for r in rows(tmp_path)] == [("cheap", "client_disconnected")]
    upstream.clear()


def test_an_async_script_that_never_closes_exits(config: Path, tmp_path: Path) -> None:
    status, stderr = run_script("""
        async def main() -> None:
            reply = await router.achat("hello", model="big")
            async for chunk in await router.achat("hello", stream=True):
                pass
            print(reply.model, flush=True)

        asyncio.run(main())
    """, config, tmp_path)
    assert status == 0, stderr
    assert sorted((r.model, r.status) for r in rows(tmp_path)) == [("big", "ok"), ("cheap", "ok")]


#: For a script that forks: `wait_child(pid)` exits the script with 3 if the child hangs, 4 if it failed.
WAIT_CHILD = textwrap.dedent("""
    import os, signal, time

    def wait_child(pid: int) -> None:
        deadline = time.monotonic() + 90  # a hang detector: the child ends at once or never
        while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if ended[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            sys.exit(3)
        if os.waitstatus_to_exitcode(ended[1]) != 0:
            sys.exit(4)
""")

#: The child's part of a forking script that calls the router itself, closes it and exits.
CHILD_CALLS = """
    signal.alarm(60)  # (a hang detector: the call ends at once or never)
    router.chat("from the child", model="big")
    router.close()
    os._exit(0)
"""


def forking_script(before: str, after: str, child: str = CHILD_CALLS) -> str:
    """A script body that runs `before`, forks a child that runs `child` (which must exit), then runs `after` in the
    parent (which waits for the child with `wait_child(pid)`)."""
    fork = "pid = os.fork()\nif pid == 0:\n" + textwrap.indent(textwrap.dedent(child).strip("\n"), "    ") + "\n"
    return WAIT_CHILD + textwrap.dedent(before).lstrip("\n") + fork + textwrap.dedent(after).lstrip("\n")


def test_a_forked_child_exits_without_closing_its_parents_router(config: Path, tmp_path: Path) -> None:
    """A child forked after a call holds a copy of the router without its threads: at its exit it must neither wait
    for them (it hung) nor write the parent's rows a second time."""
    status, stderr = run_script(forking_script(before="""
        router.chat("hello")
    """, child="""
        sys.exit(0)
    """, after="""
        wait_child(pid)
    """), config, tmp_path)
    assert status == 0, f"the child {'hung' if status == 3 else 'failed'}: {stderr}"
    assert [(r.model, r.status) for r in rows(tmp_path)] == [("cheap", "ok")]


def test_a_forked_child_calls_through_its_own_client(config: Path, tmp_path: Path) -> None:
    """A child forked after a call and calling the router itself starts its own client (the parent's has no threads
    in it: the call waited for ever), writes its own row, closes it, and leaves the parent's alone."""
    status, stderr = run_script(forking_script(before="""
        router.chat("hello")
    """, after="""
        wait_child(pid)
        router.chat("hello again")  # the parent's client still works
    """), config, tmp_path)
    assert status == 0, f"the child {'hung' if status == 3 else 'failed'}: {stderr}"
    assert sorted((r.model, r.status) for r in rows(tmp_path)) == [("big", "ok"), ("cheap", "ok"), ("cheap", "ok")]


def test_a_forked_child_scores_through_its_own_ledger(config: Path, tmp_path: Path) -> None:
    """A child forked while its parent's client runs scores a request through a ledger of its own (the configured
    one, opened for the write), not through its copy of the parent's (pooled connections shared with the parent, a
    flush waiting for a writer thread the child does not have), and exits at once."""
    status, stderr = run_script(forking_script(before="""
        reply = router.chat("hello")
        router.feedback(reply.request_id, 0.5)  # (the row written before the fork)
    """, child="""
        signal.alarm(60)  # (a hang detector)
        parents = router._inprocess.dispatcher.ledger  # the copy: touched, the child fails
        parents.find = parents.add_feedback = parents.flush_sync = lambda *_, **__: os._exit(5)
        router.feedback(reply.request_id, 1.0, "from the child")
        os._exit(0)
    """, after="""
        wait_child(pid)
        router.close()
    """), config, tmp_path)
    assert status == 0, f"the child {'hung' if status == 3 else 'failed'}: {stderr}"
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        (record,) = ledger.records()
        assert ledger.feedback(record.request_id) == [(0.5, None), (1.0, "from the child")]
    finally:
        ledger.close_sync()


def test_a_child_forked_while_another_thread_starts_the_client_calls_through_its_own(
        config: Path, tmp_path: Path) -> None:
    """Forked while another thread of its parent held the lock that guards the start of the in-process client, a
    child's copy of that lock stays held for ever (the thread is not in the child): the child gets a lock of its
    own, starts its own client and calls. Before, its first call waited for ever."""
    status, stderr = run_script(forking_script(before="""
        import threading
        router.chat("hello")
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with router._inprocess_lock:
                held.set()
                release.wait()

        thread = threading.Thread(target=hold)
        thread.start()
        held.wait()
    """, after="""
        release.set()
        thread.join()
        wait_child(pid)
    """), config, tmp_path)
    assert status == 0, f"the child {'hung' if status == 3 else 'failed'}: {stderr}"
    assert sorted((r.model, r.status) for r in rows(tmp_path)) == [("big", "ok"), ("cheap", "ok")]
