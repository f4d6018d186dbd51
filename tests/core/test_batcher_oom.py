"""A GPU out-of-memory error costs no request: the batch splits down to one item, the limit shrinks."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import OutOfMemory
from core.model.batcher import Batcher, is_out_of_memory
from core.model.fake_faults import OutOfMemoryError as StagedOOM
from core.model.runner import ModelRunner
from core.settings import CoreSettings
from tests.conftest import wait_until
from tests.media import wav_bytes

pytestmark = pytest.mark.unit


class OomAbove:
    """run_batch that raises torch's own CUDA OOM error for batches above ``fits`` items."""

    def __init__(self, fits: int):
        import torch  # the real exception class; no GPU needed to raise it

        self.error = torch.cuda.OutOfMemoryError
        self.fits = fits
        self.sizes: list[int] = []
        self.freed = 0

    def __call__(self, key, payloads):
        self.sizes.append(len(payloads))
        if len(payloads) > self.fits:
            raise self.error(f"CUDA out of memory. Tried to allocate {len(payloads)} GiB")
        return [p * 2 for p in payloads]

    def free(self):
        self.freed += 1


def test_the_oom_detector_knows_torch_ctranslate2_and_the_staged_error_and_nothing_else():
    import torch

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))  # CTranslate2's
    assert is_out_of_memory(StagedOOM("staged"))
    assert not is_out_of_memory(RuntimeError("boom")) and not is_out_of_memory(ValueError("out of range"))


def test_an_oom_batch_is_split_until_it_fits_and_every_item_succeeds():
    model = OomAbove(fits=2)
    batcher = Batcher(model, max_batch_size=8, max_wait_ms=200, max_queue=64, free_memory=model.free).start()
    wait_until(lambda: batcher.state == "ready", 5)
    futures = batcher.submit_many(list(range(8)))
    assert Batcher.gather(futures, 10) == [n * 2 for n in range(8)]
    assert model.sizes[:4] == [8, 4, 2, 2]  # 8 did not fit, nor 4; then 2 + 2, and the other half
    assert model.freed >= 2 and batcher.stats.oom_splits >= 2 and batcher.stats.oom_failed_items == 0
    # The limit shrank to what fitted: the next batches do not run out of memory again.
    assert batcher.max_batch_size == 2 and batcher.shrunk_from == 8
    model.sizes.clear()
    assert Batcher.gather(batcher.submit_many(list(range(6))), 10) == [0, 2, 4, 6, 8, 10]
    assert max(model.sizes) <= 2
    # Splits are not failures: health stays green, and the failure count did not move.
    assert batcher.health() == (True, None) and batcher.stats.failed_batches == 0


def test_only_an_item_that_runs_out_of_memory_alone_fails_with_503_and_retry_after():
    model = OomAbove(fits=0)
    batcher = Batcher(model, max_batch_size=4, max_wait_ms=200, max_queue=64).start()
    wait_until(lambda: batcher.state == "ready", 5)
    futures = batcher.submit_many([1, 2])
    for future in futures:
        error = future.exception(10)
        assert isinstance(error, OutOfMemory) and error.status == 503 and error.retry_after
    assert batcher.stats.oom_failed_items == 2 and batcher.max_batch_size == 1


class OomBackend:
    """A runner backend whose batches above ``fits`` raise torch's OOM, warm-up included."""

    name = "oom"

    def __init__(self, fits: int):
        self.model = OomAbove(fits)

    def load(self):
        pass

    def default_batch_size(self):
        return 16

    def warmup_batches(self, batch_size):
        return [("text", [1] * batch_size)]

    def preprocess(self, kind, raw):
        return raw

    def forward(self, kind, batch):
        return self.model(kind, batch)

    def postprocess(self, kind, output):
        return output

    def describe(self):
        return {"model": self.name}

    def free_memory(self):
        self.model.free()


def test_warm_up_that_runs_out_of_memory_shrinks_the_limit_and_health_says_so():
    backend = OomBackend(fits=4)
    runner = ModelRunner(backend, CoreSettings.from_env({}, max_batch_size=None)).start()
    wait_until(lambda: runner.batcher.state != "starting", 5)
    ok, reason, details = runner.health()
    assert ok and reason is None and backend.model.freed == 2  # the backend's own free_memory hook
    assert details["batching"]["max_batch_size"] == 4
    assert details["batching"]["shrunk_after_oom"] == {"from": 16, "to": 4}


def test_one_oom_does_not_fail_the_recordings_that_share_a_whisper_batch(monkeypatch):
    """Whisper: chunks of several recordings share a batch; an OOM there used to fail all of them."""
    from worker.app import create_app
    from worker.backends.fake import FakeWhisperBackend
    from worker.settings import WorkerSettings

    monkeypatch.setenv("FAKE_OOM_ABOVE", "1")  # any batch of two chunks or more runs out of memory
    settings = WorkerSettings.from_env({}, whisper_model="fake", max_batch_size=8, max_wait_ms=100.0,
                                       log_level="WARNING")
    backend = FakeWhisperBackend(settings)
    app = create_app(settings, backend=backend)
    wait_until(lambda: app.extensions["model_runner"].health()[0], timeout_s=30)

    def transcribe(n: int):
        audio = io.BytesIO(wav_bytes(65, pitch=0.05 + n / 100))  # three 30 s chunks each
        return app.test_client().post("/transcribe", data={"audio": (audio, f"{n}.wav")})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(transcribe, range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.get_json() for a in answers]
    assert all(a.get_json()["text"] for a in answers)
    _, _, details = app.extensions["model_runner"].health()
    assert details["batching"]["shrunk_after_oom"]["to"] == 1 and details["stats"]["oom_splits"] >= 1
