"""The batcher with plain-Python backends: batches form, order, isolation, deadlines, backpressure."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded, Reason
from core.model.batcher import Batcher
from tests.conftest import wait_until

pytestmark = pytest.mark.unit


class RecordingModel:
    """run_batch that doubles numbers, records every batch and can be held or made to fail."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.batches: list[tuple[object, list]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, key, payloads):
        self.started.set()
        self.release.wait()
        self.batches.append((key, list(payloads)))
        if self.delay_s:
            time.sleep(self.delay_s)
        if "boom" in payloads:
            raise RuntimeError("boom in batch")
        if "die" in payloads:
            raise SystemExit("model thread killed")
        if "short" in payloads:
            return [0]
        return [ValueError(f"bad item {p}") if p == "bad" else (p * 2 if isinstance(p, int) else p)
                for p in payloads]


def make(model, **kwargs) -> Batcher:
    options = dict(max_batch_size=8, max_wait_ms=20, max_queue=64)
    options.update(kwargs)
    batcher = Batcher(model, **options).start()
    wait_until(lambda: batcher.state == "ready", 5)
    return batcher


def test_batches_form_under_concurrency_and_results_match_inputs():
    model = RecordingModel(delay_s=0.05)
    batcher = make(model, max_batch_size=8, max_wait_ms=50)

    def request(n):
        return Batcher.gather([batcher.submit(n)], timeout_s=30)[0]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(request, range(32)))
    assert results == [n * 2 for n in range(32)]
    sizes = [len(payloads) for _, payloads in model.batches]
    assert sum(sizes) == 32
    assert max(sizes) > 1, "concurrent requests should share model calls"
    assert max(sizes) <= 8
    assert len(model.batches) < 32
    assert batcher.stats.items == 32 and batcher.stats.batches == len(model.batches)


def test_order_within_a_request_is_kept():
    batcher = make(RecordingModel())
    futures = batcher.submit_many(list(range(20)))
    assert Batcher.gather(futures, 10) == [n * 2 for n in range(20)]


def test_batch_closes_when_full_without_waiting_for_max_wait():
    model = RecordingModel()
    batcher = make(model, max_batch_size=4, max_wait_ms=60_000)
    started = time.monotonic()
    assert Batcher.gather(batcher.submit_many([1, 2, 3, 4]), 30) == [2, 4, 6, 8]
    assert time.monotonic() - started < 30  # did not sit out the 60 s window
    assert [len(p) for _, p in model.batches] == [4]


def test_lonely_item_runs_after_max_wait():
    batcher = make(RecordingModel(), max_batch_size=64, max_wait_ms=30)
    assert Batcher.gather([batcher.submit(21)], 10) == [42]


def test_keys_never_share_a_batch():
    model = RecordingModel(delay_s=0.02)
    batcher = make(model, max_batch_size=16, max_wait_ms=50)
    futures = []
    for n in range(24):
        key = "image" if n % 2 else "text"
        futures.append((key, n, batcher.submit(f"{key}-{n}", key=key)))
    for key, n, future in futures:
        assert future.result(10) == f"{key}-{n}"
    for key, payloads in model.batches:
        assert all(p.startswith(key) for p in payloads), (key, payloads)


def test_a_failing_batch_fails_only_its_items_and_the_batcher_keeps_serving():
    model = RecordingModel()
    batcher = make(model, max_batch_size=4, max_wait_ms=5)
    model.release.clear()
    blocker = batcher.submit(0)  # occupies the model while we queue the next batches
    wait_until(model.started.is_set, 5)
    doomed = batcher.submit_many(["boom", 1, 2, 3], group="one request")  # one group: FIFO order
    fine = batcher.submit_many([4, 5, 6, 7], group="one request")
    model.release.set()
    assert blocker.result(10) == 0
    for future in doomed:
        with pytest.raises(InferenceFailed, match="boom"):
            future.result(10)
    assert [f.result(10) for f in fine] == [8, 10, 12, 14]
    assert Batcher.gather([batcher.submit(50)], 10) == [100]
    assert batcher.health() == (True, None)
    assert batcher.stats.failed_batches == 1


def test_wrong_number_of_results_fails_the_batch():
    batcher = make(RecordingModel())
    with pytest.raises(InferenceFailed, match="1 results for 2 inputs"):
        Batcher.gather(batcher.submit_many(["short", 1]), 10)


def test_a_per_item_exception_fails_only_that_item():
    model = RecordingModel()
    batcher = make(model, max_batch_size=4, max_wait_ms=5)
    model.release.clear()
    blocker = batcher.submit(0)
    wait_until(model.started.is_set, 5)
    futures = batcher.submit_many([1, "bad", 3])
    model.release.set()
    blocker.result(10)
    assert futures[0].result(10) == 2 and futures[2].result(10) == 6
    with pytest.raises(ValueError, match="bad item"):
        futures[1].result(10)


def test_expired_items_get_504_and_never_reach_the_model():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1)
    model.release.clear()
    blocker = batcher.submit(0)
    wait_until(model.started.is_set, 5)
    late = batcher.submit(99, timeout_s=0.05)
    time.sleep(0.2)
    model.release.set()
    blocker.result(10)
    with pytest.raises(DeadlineExceeded):
        late.result(10)
    assert all(99 not in payloads for _, payloads in model.batches)
    assert batcher.stats.expired_items == 1


def test_a_waiter_that_gives_up_cancels_its_items():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1)
    model.release.clear()
    blocker = batcher.submit(0)
    wait_until(model.started.is_set, 5)
    with pytest.raises(DeadlineExceeded):
        Batcher.gather(batcher.submit_many([77, 78]), timeout_s=0.1)
    model.release.set()
    blocker.result(10)
    assert Batcher.gather([batcher.submit(5)], 10) == [10]
    assert all(77 not in p and 78 not in p for _, p in model.batches)


def test_full_queue_answers_overloaded_with_retry_after_and_takes_nothing():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1, max_queue=3)
    model.release.clear()
    blocker = batcher.submit(0)
    wait_until(model.started.is_set, 5)
    queued = batcher.submit_many([1, 2])
    with pytest.raises(Overloaded) as refused:
        batcher.submit_many([3, 4])  # only one slot left: all or nothing
    assert refused.value.status == 429 and refused.value.retry_after >= 1
    assert batcher.queue_depth() == 2
    model.release.set()
    assert blocker.result(10) == 0 and [f.result(10) for f in queued] == [2, 4]
    assert batcher.stats.rejected_items == 2


def test_startup_failure_shows_in_health_and_refuses_work():
    def broken_startup():
        raise OSError("weights missing at /models/clip/x")

    batcher = Batcher(RecordingModel(), max_batch_size=2, max_wait_ms=1, max_queue=4,
                      startup=broken_startup).start()
    wait_until(lambda: batcher.state == "failed", 5)
    ok, reason = batcher.health()
    assert not ok and reason.code == "load_failed" and "weights missing" in str(reason)
    with pytest.raises(NotReady) as refused:
        batcher.submit(1)
    assert refused.value.reason == "load_failed"


def test_requests_during_startup_get_not_ready():
    gate = threading.Event()
    batcher = Batcher(RecordingModel(), max_batch_size=2, max_wait_ms=1, max_queue=4,
                      startup=gate.wait).start()
    assert batcher.health() == (False, Reason("loading", "model is loading"))
    with pytest.raises(NotReady) as refused:
        batcher.submit(1)
    assert refused.value.retry_after and refused.value.reason == "loading"
    gate.set()
    wait_until(lambda: batcher.state == "ready", 5)
    assert Batcher.gather([batcher.submit(1)], 10) == [2]


def test_a_dead_thread_turns_health_red_and_fails_every_waiter():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1)
    model.release.clear()
    dying = batcher.submit("die")
    wait_until(model.started.is_set, 5)
    waiting = batcher.submit(1)
    model.release.set()
    with pytest.raises(InferenceFailed):
        dying.result(10)
    with pytest.raises(NotReady) as failed:
        waiting.result(10)
    assert failed.value.reason == "inference_thread_dead"
    wait_until(lambda: batcher.state == "dead", 5)
    ok, reason = batcher.health()
    assert not ok and reason.code == "inference_thread_dead" and "dead" in str(reason)
    with pytest.raises(NotReady) as refused:
        batcher.submit(2)
    assert refused.value.reason == "inference_thread_dead"


def test_repeated_batch_failures_turn_health_red_until_a_batch_succeeds():
    batcher = make(RecordingModel(), max_batch_size=1, unhealthy_after_failures=3)
    for _ in range(3):
        with pytest.raises(InferenceFailed):
            Batcher.gather([batcher.submit("boom")], 10)
    ok, reason = batcher.health()
    assert not ok and reason.code == "batches_failing" and "last 3 batches failed" in str(reason)
    assert Batcher.gather([batcher.submit(1)], 10) == [2]
    assert batcher.health() == (True, None)


def test_a_hung_batch_turns_health_red():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1, stuck_after_s=0.1)
    model.release.clear()
    batcher.submit(1)
    wait_until(model.started.is_set, 5)
    time.sleep(0.2)
    ok, reason = batcher.health()
    assert not ok and reason.code == "batch_hung" and "running for over" in str(reason)
    model.release.set()
    wait_until(lambda: batcher.health()[0], 5)


def test_a_stopped_batcher_says_stopped_and_fails_what_was_queued():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1)
    model.release.clear()
    batcher.submit(1)
    wait_until(model.started.is_set, 5)
    queued = batcher.submit(2)
    batcher.stop(timeout_s=0)
    model.release.set()
    with pytest.raises(NotReady) as failed:
        queued.result(10)
    assert failed.value.reason == "inference_thread_dead"  # the code waiters always got
    wait_until(lambda: batcher.state == "stopped", 5)
    assert batcher.health() == (False, Reason("stopped", "inference thread is stopped"))
    with pytest.raises(NotReady) as refused:
        batcher.submit(3)
    assert refused.value.reason == "stopped"


def test_a_lone_request_does_not_wait_for_company():
    model = RecordingModel()
    batcher = make(model, max_batch_size=8, max_wait_ms=60_000)
    assert Batcher.gather([batcher.submit(1)], timeout_s=10) == [2]  # not held for the 60 s window


def test_a_batch_waits_for_requests_still_being_decoded():
    model = RecordingModel()
    batcher = make(model, max_batch_size=8, max_wait_ms=10_000)
    announced, submitted = threading.Event(), []

    def slow_decoder():
        with batcher.expecting():
            announced.set()
            time.sleep(0.3)  # decoding an image
            submitted.append(batcher.submit(20))

    thread = threading.Thread(target=slow_decoder)
    thread.start()
    announced.wait(5)
    first = batcher.submit(10)
    thread.join()
    assert first.result(10) == 20 and submitted[0].result(10) == 40
    assert [payloads for _, payloads in model.batches] == [[10, 20]]


def test_batches_are_filled_round_robin_so_a_short_request_is_not_stuck_behind_a_long_one():
    model = RecordingModel()
    batcher = make(model, max_batch_size=4, max_wait_ms=5)
    model.release.clear()
    blocker = batcher.submit("blocker")
    wait_until(model.started.is_set, 5)
    long = batcher.submit_many([f"long{n}" for n in range(40)], group="hour-long recording")
    short = batcher.submit("clip", group="8 s clip")
    model.release.set()
    assert short.result(10) == "clip" and blocker.result(10) == "blocker"
    Batcher.gather(long, 10)
    first_after = model.batches[1][1]
    assert "clip" in first_after, model.batches[:3]  # FIFO would run it in the 11th batch
    assert first_after.count("clip") == 1 and len(first_after) == 4  # the long one fills the rest


def test_round_robin_keeps_each_request_in_order():
    model = RecordingModel()
    batcher = make(model, max_batch_size=3, max_wait_ms=5)
    model.release.clear()
    batcher.submit(0)
    wait_until(model.started.is_set, 5)
    a = batcher.submit_many([1, 2, 3, 4], group="a")
    b = batcher.submit_many([10, 20], group="b")
    model.release.set()
    assert Batcher.gather(a, 10) == [2, 4, 6, 8] and Batcher.gather(b, 10) == [20, 40]
    assert [p for _, p in model.batches[1:]] == [[1, 10, 2], [20, 3, 4]]


def test_max_queue_also_bounds_items_set_aside_for_another_key():
    # On the old FIFO queue, items of another key taken out while a batch was being built sat in
    # an unbounded side list, freeing queue slots: a stream of them was never refused.
    model = RecordingModel()
    batcher = make(model, max_batch_size=8, max_wait_ms=5_000, max_queue=4)
    accepted, refused = 0, 0
    with batcher.expecting():  # the batch being built keeps its window open
        batcher.submit("a-first", key="a")
        time.sleep(0.1)  # the model thread has taken it and is collecting more of key "a"
        for n in range(10):
            try:
                batcher.submit(f"b{n}", key="b")
                accepted += 1
            except Overloaded:
                refused += 1
            time.sleep(0.02)
            assert batcher.queue_depth() <= 4
    assert accepted <= 4 and refused >= 6


def test_discard_drops_a_requests_waiting_items_without_model_time():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1)
    model.release.clear()
    blocker = batcher.submit(0)
    wait_until(model.started.is_set, 5)
    abandoned = batcher.submit_many([66, 67, 68], group="gone")
    assert batcher.discard("gone") == 3 and batcher.queue_depth() == 0
    model.release.set()
    blocker.result(10)
    assert all(f.cancelled() for f in abandoned)
    assert Batcher.gather([batcher.submit(1)], 10) == [2]
    assert all(66 not in p for _, p in model.batches)


def test_expired_items_leave_the_queue_and_free_their_slots():
    model = RecordingModel()
    batcher = make(model, max_batch_size=1, max_queue=3)
    model.release.clear()
    blocker = batcher.submit(0)
    wait_until(model.started.is_set, 5)
    late = batcher.submit_many([97, 98, 99], deadline=time.monotonic() + 0.05)
    time.sleep(0.1)
    model.release.set()
    blocker.result(10)
    for future in late:
        with pytest.raises(DeadlineExceeded):
            future.result(10)
    wait_until(lambda: batcher.queue_depth() == 0, 5)
    assert all(p[0] not in (97, 98, 99) for _, p in model.batches)
