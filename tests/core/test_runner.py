"""ModelRunner: readiness gate, one deadline over every stage of a request, abandoned work dropped."""

from __future__ import annotations

import threading
import time

import pytest

from core import request_context
from core.errors import DeadlineExceeded, NotReady
from core.model.runner import ModelRunner
from core.settings import CoreSettings
from core.web.app import build_app
from tests.conftest import wait_until

pytestmark = pytest.mark.unit


class SlowBackend:
    """Each batch takes ``batch_s``; load waits for ``loaded``; every batch is recorded."""

    name = "slow"

    def __init__(self, batch_s: float = 0.0):
        self.batch_s = batch_s
        self.loaded = threading.Event()
        self.loaded.set()
        self.release = threading.Event()
        self.release.set()
        self.batches: list[tuple] = []

    def load(self):
        self.loaded.wait()

    def default_batch_size(self):
        return 4

    def warmup_batches(self, batch_size):
        return []

    def preprocess(self, kind, raw):
        return raw

    def forward(self, kind, batch):
        self.release.wait()
        self.batches.append((kind, list(batch)))
        time.sleep(self.batch_s)
        return [f"{kind}:{item}" for item in batch]

    def postprocess(self, kind, output):
        return output

    def describe(self):
        return {"model": self.name}


def make(backend, **settings) -> ModelRunner:
    runner = ModelRunner(backend, CoreSettings.from_env({}, **{"max_wait_ms": 1.0, **settings})).start()
    return runner


def test_work_while_loading_is_not_ready_with_retry_after():
    backend = SlowBackend()
    backend.loaded.clear()
    runner = make(backend)
    with pytest.raises(NotReady) as refused:
        runner.run("text", ["a"])
    assert refused.value.status == 503 and refused.value.retry_after
    backend.loaded.set()
    wait_until(lambda: runner.batcher.state == "ready", 5)
    assert runner.run("text", ["a"]) == ["text:a"]


@pytest.mark.parametrize("door", request_context.DOORS)
def test_stages_of_one_request_share_one_deadline_at_every_door(door):
    # /classify embeds the labels, then the images: each stage alone fits in the 1 s timeout, both
    # together do not. With a fresh deadline per stage (the old behaviour) the request took 1.2 s.
    runner = make(SlowBackend(batch_s=0.6), request_timeout_s=1.0)
    wait_until(lambda: runner.batcher.state == "ready", 5)
    with request_context.opened(door):
        assert runner.run("text", ["label"]) == ["text:label"]
        time.sleep(0.5)  # decoding the images
        with pytest.raises(DeadlineExceeded):
            runner.run("image", ["photo"])
    with request_context.opened(door):  # the next request has its own deadline
        assert runner.run("text", ["label"]) == ["text:label"]


def test_an_http_request_opens_its_context_and_the_runner_imports_no_flask():
    import subprocess
    import sys

    code = "import sys, core.model.runner; sys.exit('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    runner = make(SlowBackend(batch_s=0.6), request_timeout_s=1.0)
    wait_until(lambda: runner.batcher.state == "ready", 5)
    app = build_app(__name__, CoreSettings.from_env({}))

    @app.post("/classify")
    def classify():
        runner.run("text", ["label"])
        time.sleep(0.5)
        runner.run("image", ["photo"])
        return {}

    assert app.test_client().post("/classify").status_code == 504


def test_work_that_ends_drops_its_queued_items_without_model_time():
    backend = SlowBackend()
    runner = make(backend, max_batch_size=1)
    wait_until(lambda: runner.batcher.state == "ready", 5)
    backend.release.clear()
    blocker = runner.batcher.submit("blocker", key="text")
    wait_until(lambda: runner.batcher.queue_depth() == 0, 5)
    with pytest.raises(RuntimeError), runner.work() as work:
        work.submit("text", ["abandoned-1", "abandoned-2"])
        assert runner.batcher.queue_depth() == 2
        raise RuntimeError("the client went away")
    assert runner.batcher.queue_depth() == 0
    backend.release.set()
    blocker.result(5)
    assert runner.run("text", ["next"]) == ["text:next"]
    assert all("abandoned" not in str(items) for _, items in backend.batches)


def test_stream_resubmits_a_subset_and_keeps_few_items_in_flight():
    backend = SlowBackend()
    runner = make(backend, max_batch_size=2)
    wait_until(lambda: runner.batcher.state == "ready", 5)
    made = []

    def source():
        for n in range(10):
            made.append(n)
            yield "first", n, n

    def follow_up(tag, output):
        return ("second", tag, tag) if output.startswith("first") and tag % 3 == 0 else None

    seen = []
    with runner.work() as work:
        for tag, output in work.stream(source(), follow_up, max_in_flight=3):
            seen.append((tag, output))
            assert len(made) - len(set(t for t, o in seen if o.startswith("first"))) <= 3
    assert sorted(o for _, o in seen if o.startswith("second")) == ["second:0", "second:3", "second:6", "second:9"]
    assert len([o for _, o in seen if o.startswith("first")]) == 10


def test_settings_that_contradict_each_other_are_refused_at_start_up():
    from core.settings import SettingsError
    from server.settings import ServerSettings

    with pytest.raises(SettingsError, match="MAX_LABELS=600 is larger than MAX_QUEUE=512"):
        ServerSettings.from_env({"MAX_LABELS": "600"})
    with pytest.raises(SettingsError, match="MAX_INPUTS"):
        ServerSettings.from_env({"MAX_QUEUE": "32", "MAX_LABELS": "10"})  # MAX_INPUTS defaults to 64
    with pytest.raises(SettingsError, match="MAX_BATCH_SIZE=64 is larger than MAX_QUEUE=16"):
        CoreSettings.from_env({"MAX_BATCH_SIZE": "64", "MAX_QUEUE": "16"})
    defaults = ServerSettings.from_env({})
    assert defaults.max_labels <= defaults.max_queue  # the defaults agree with each other


def test_health_says_auto_batch_size_until_the_backend_has_chosen_it():
    backend = SlowBackend()
    backend.loaded.clear()
    runner = make(backend, max_batch_size=None)
    _, reason, details = runner.health()
    assert reason and details["batching"]["max_batch_size"] == "auto"  # not the loading placeholder 1
    backend.loaded.set()
    wait_until(lambda: runner.health()[0])
    assert runner.health()[2]["batching"]["max_batch_size"] == 4  # what default_batch_size() chose
