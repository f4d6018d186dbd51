"""Batch-mode plumbing: deterministic shards, listing (folder or manifest), bounded thread pool."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import InvalidInput
from core.from_storage import batch_job
from core.from_storage.batch_results import FilesPerInput, JsonlShard, check_distinct, output_name

pytestmark = pytest.mark.unit


def test_shards_cover_every_input_exactly_once_and_deterministically():
    items = [f"{n:03d}.jpg" for n in range(101)]
    for count in (1, 3, 7, 101, 150):
        taken = [item for index in range(count) for item in batch_job.Shard(index, count).take(items)]
        assert taken == items  # contiguous, in order, no overlap, nothing left out
    assert batch_job.Shard(2, 10).name == "part-00002-of-00010"


def test_shard_comes_from_cloud_run_task_variables():
    assert batch_job.Shard.from_env({"CLOUD_RUN_TASK_INDEX": "4", "CLOUD_RUN_TASK_COUNT": "9"}) == batch_job.Shard(4, 9)
    assert batch_job.Shard.from_env({}) == batch_job.Shard(0, 1)
    with pytest.raises(ValueError):
        batch_job.Shard.from_env({"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"})


def test_inputs_from_a_folder_and_from_a_manifest(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "sub/c.jpg", "notes.md"):
        (tmp_path / "in" / name).write_bytes(b"x")
    found = batch_job.list_inputs(str(tmp_path / "in"), (".jpg", ".png"))
    assert [name for _, name in found] == ["a.PNG", "b.jpg", "sub/c.jpg"]
    assert found[2][0] == str(tmp_path / "in" / "sub" / "c.jpg")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# photos\n{tmp_path}/in/b.jpg\n\ngs://bucket/x.jpg\ngs://bucket/x.jpg\n")  # one input
    assert batch_job.list_inputs(str(manifest), (".jpg",)) == [
        (f"{tmp_path}/in/b.jpg", f"{tmp_path}/in/b.jpg"), ("gs://bucket/x.jpg", "gs://bucket/x.jpg")]


def test_pool_keeps_a_bounded_number_in_flight_and_reports_every_item():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def job(n: int) -> int:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002)
        with lock:
            in_flight[0] -= 1
        if n % 10 == 0:
            raise ValueError(f"bad {n}")
        return n * 2

    results, errors = {}, {}
    pulled = []

    def items():
        for n in range(200):
            pulled.append(n)
            yield n

    def done(item, result, error):
        # Never more than 2 x workers pulled ahead of what finished: a long listing costs no memory.
        assert len(pulled) - (len(results) + len(errors)) <= 2 * 3
        (errors if error else results)[item] = error or result

    batch_job.run_pool(items(), job, 3, done)
    assert peak[0] <= 3
    assert sorted(results) == [n for n in range(200) if n % 10] and results[7] == 14
    assert sorted(errors) == list(range(0, 200, 10))


def test_output_must_not_lie_inside_the_input(tmp_path):
    parser = batch_job.common_arguments("job", "test")
    args = parser.parse_args(["--input", str(tmp_path), "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        batch_job.require_locations(parser, args)


def test_outputs_are_named_after_the_full_input_name_and_collisions_are_refused(tmp_path):
    assert output_name("talks/a.m4a") == "talks/a.m4a" and output_name("gs://b/x/y.wav") == "b/x/y.wav"
    files = FilesPerInput(str(tmp_path))
    check_distinct(["a.wav", "a.mp3", "x/a.wav", "y/a.wav"], files)  # four inputs, four outputs
    with pytest.raises(InvalidInput) as refused:
        check_distinct(["gs://b/a.wav", "file:///b/a.wav"], files)  # both b/a.wav
    assert refused.value.code == "output_collision"
    files.add("x/a.wav", {"json": (b"{}", "application/json"), "srt": (b"1", "text/plain")})
    assert (tmp_path / "x" / "a.wav.json").exists() and (tmp_path / "x" / "a.wav.srt").exists()
    assert files.finished(["x/a.wav", "y/a.wav"]) == {"x/a.wav"}


def test_a_jsonl_shard_resumes_from_its_last_checkpoint(tmp_path):
    location = str(tmp_path / "part.jsonl")
    shard = JsonlShard(location, ["a.jpg", "b.jpg", "c.jpg"], checkpoint_every=2)
    shard.add("b.jpg", {"embedding": [2]})
    assert not (tmp_path / "part.jsonl").exists()
    shard.add("a.jpg", {"embedding": [1]})  # the second new line: a checkpoint, in listing order
    assert [line[:15] for line in (tmp_path / "part.jsonl").read_text().splitlines()] == [
        '{"path": "a.jpg', '{"path": "b.jpg']
    again = JsonlShard(location, ["a.jpg", "b.jpg", "c.jpg"], checkpoint_every=2)
    assert again.finished(["a.jpg", "b.jpg", "c.jpg"]) == {"a.jpg", "b.jpg"}
