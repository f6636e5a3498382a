"""serving.batcher.Batcher without Ray: batches form when the worker is free, wait only for
requests announced as on their way, and every caller gets its own answer or the batch's error."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.batcher import Batcher


class Recorder:
    """A batch function that records its batches and can be held busy."""

    def __init__(self):
        self.batches: list[list] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.started.set()
        self.release.wait(5)
        return [f"answer {x}" for x in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_lone_request_goes_at_once_whatever_the_wait():
    fn = Recorder()

    async def main():
        batcher = Batcher(fn, max_size=8, wait_s=2.0)
        started = time.monotonic()
        out = await batcher.submit("a")
        return out, time.monotonic() - started

    (answer, size), took = run(main())
    assert answer == "answer a" and size == 1 and took < 1.0


def test_requests_that_arrive_while_the_worker_is_busy_share_the_next_batch():
    fn = Recorder()

    async def main():
        batcher = Batcher(fn, max_size=4, wait_s=0.0)
        fn.release.clear()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.to_thread(fn.started.wait, 5)  # the worker holds batch [0]
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        fn.release.set()
        return await asyncio.gather(first, *rest)

    answers = run(main())
    assert [a for a, _ in answers] == [f"answer {i}" for i in range(7)]  # each caller its own, in order
    assert fn.batches == [[0], [1, 2, 3, 4], [5, 6]]  # at most max_size, what waited goes next
    assert [s for _, s in answers] == [1, 4, 4, 4, 4, 2, 2]


def test_a_batch_waits_for_announced_requests_only():
    fn = Recorder()

    async def main():
        batcher = Batcher(fn, max_size=8, wait_s=5.0)
        batcher.expect()
        batcher.expect()
        started = time.monotonic()
        first = asyncio.ensure_future(batcher.submit("a", expected=True))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(batcher.submit("b", expected=True))
        await asyncio.sleep(0.1)
        batcher.unexpect()  # the third was refused before it reached the batcher: do not wait for it
        out = await asyncio.gather(first, second)
        return out, time.monotonic() - started, batcher.arriving

    out, took, arriving = run(main())
    assert fn.batches == [["a", "b"]] and [s for _, s in out] == [2, 2]
    assert 0.15 < took < 2.0 and arriving == 0


def test_the_wait_for_announced_requests_is_bounded():
    fn = Recorder()

    async def main():
        batcher = Batcher(fn, max_size=8, wait_s=0.2)
        batcher.expect()
        batcher.expect()  # never comes
        started = time.monotonic()
        await batcher.submit("a", expected=True)
        return time.monotonic() - started

    took = run(main())
    assert fn.batches == [["a"]] and 0.15 < took < 2.0


def test_an_error_reaches_every_caller_of_its_batch_and_the_worker_goes_on():
    calls = []

    def fn(items):
        calls.append(items)
        if "bad" in items:
            raise ValueError("broken batch")
        return items

    async def main():
        batcher = Batcher(fn, max_size=4, wait_s=0.0)
        batcher.expect()
        batcher.expect()
        results = await asyncio.gather(batcher.submit("bad", expected=True), batcher.submit("x", expected=True),
                                       return_exceptions=True)
        after = await batcher.submit("ok")
        return results, after

    results, after = run(main())
    assert all(isinstance(r, ValueError) for r in results) and after == ("ok", 1)


def test_a_cancelled_request_is_left_out_of_its_batch():
    fn = Recorder()

    async def main():
        batcher = Batcher(fn, max_size=4, wait_s=0.0)
        fn.release.clear()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.to_thread(fn.started.wait, 5)
        gone = asyncio.ensure_future(batcher.submit("gone"))
        kept = asyncio.ensure_future(batcher.submit("kept"))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client hung up while it waited
        fn.release.set()
        return await asyncio.gather(first, kept)

    run(main())
    assert fn.batches == [[0], ["kept"]]


def test_a_batch_runs_on_the_loop_only_when_on_loop_says_so():
    # A short batch that would keep the GIL anyway runs on the event loop; any other in a worker.
    threads = []

    def fn(items):
        threads.append(threading.current_thread())
        if "fail" in items:
            raise ValueError("broken batch")
        return [x.upper() for x in items]

    async def main():
        batcher = Batcher(fn, max_size=4, wait_s=0.0, on_loop=lambda items: "slow" not in items)
        quick = await batcher.submit("quick")
        slow = await batcher.submit("slow")
        failed = await asyncio.gather(batcher.submit("fail"), return_exceptions=True)
        return quick, slow, failed, threading.current_thread()

    quick, slow, failed, loop_thread = run(main())
    assert quick == ("QUICK", 1) and slow == ("SLOW", 1) and isinstance(failed[0], ValueError)
    assert threads[0] is loop_thread and threads[1] is not loop_thread and threads[2] is loop_thread


@pytest.mark.parametrize("kwargs", [{"max_size": 0}, {"wait_s": -1}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Batcher(lambda items: items, **kwargs)
