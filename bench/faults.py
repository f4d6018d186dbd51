"""`make faults` = `python -m bench.faults [ROW ...]`: the fault matrix of docs/reliability.md.

Each row injects a real fault into the real services (gunicorn, the fake models) and their real
dependencies here (redis-server, the callback receiver), then counts what the clients got:
jobs (or requests) accepted, ended, lost, and the worst time from acceptance to the end. A row
holds when nothing is lost and its own condition is met. The table is printed and written to
bench/results/faults.md. The SIGKILL rows also run in `make test` (tests/reliability/).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.faults_kit import (
    SECRET,
    Emulators,
    Jobs,
    Outcome,
    Redis,
    Service,
    callback_env,
    recording,
    scratch,
    synchronous_answers,
    whisper_env,
)
from bench.harness import ROOT, free_port
from tests.callback_receiver import Receiver

IN_FLIGHT = 8
JOB_WAIT_S = 60.0


def worker_sigkill() -> Outcome:
    """A gunicorn worker SIGKILLed with 8 callback jobs in flight: all 8 end, each as the synchronous answer."""
    work, receiver = scratch(), Receiver(SECRET)
    service = Service("worker", whisper_env(receiver, f"file://{work}/jobs", WEB_WORKERS="1"), work)
    try:
        service.wait_ready()
        jobs = Jobs(receiver)
        for n in range(IN_FLIGHT):
            jobs.submit(service.url, n)
        time.sleep(0.4)  # one or two run, the rest wait in the queue
        delivered_before = len(jobs.bodies())
        os.kill(service.workers()[0], signal.SIGKILL)
        jobs.wait(JOB_WAIT_S)
        service.wait_ready()
        return jobs.outcome("gunicorn worker SIGKILLed with 8 callback jobs in flight",
                            synchronous_answers(service.url, range(IN_FLIGHT)),
                            f"{delivered_before} delivered before the kill; callbacks = synchronous answers")
    finally:
        service.stop()
        receiver.close()


def tree_sigkill() -> Outcome:
    """The whole service process tree SIGKILLed; a new one started on the same store: all accepted jobs end."""
    work, receiver = scratch(), Receiver(SECRET)
    env = whisper_env(receiver, f"file://{work}/jobs", WEB_WORKERS="2")
    first = Service("worker", env, work)
    second = None
    try:
        first.wait_ready()
        jobs = Jobs(receiver)
        for n in range(IN_FLIGHT):
            jobs.submit(first.url, n)
        time.sleep(0.4)
        delivered_before = len(jobs.bodies())
        first.kill_tree()
        second = Service("worker", env, work)
        second.wait_ready()
        jobs.wait(JOB_WAIT_S)
        return jobs.outcome("whole service process tree SIGKILLed; a new one started on the same store",
                            synchronous_answers(second.url, range(IN_FLIGHT)),
                            f"{delivered_before} delivered before the kill")
    finally:
        first.stop()
        if second is not None:
            second.stop()
        receiver.close()


def sync_sigkill() -> Outcome:
    """A worker SIGKILLed mid-batch on a synchronous request: 5xx or a closed connection, never a hang;
    the next request works."""
    work = scratch()
    timeout_s = 10.0
    service = Service("worker", {"WHISPER_MODEL": "fake", "WEB_WORKERS": "1", "FAKE_BATCH_DELAY_S": "2",
                                 "REQUEST_TIMEOUT_S": str(timeout_s)}, work)
    try:
        service.wait_ready()
        result: dict = {}

        def call() -> None:
            started = time.monotonic()
            try:
                answer = requests.post(service.url + "/transcribe", files={"audio": ("0.wav", recording(0))},
                                       timeout=timeout_s + 5)
                result["status"] = answer.status_code
            except requests.RequestException as err:
                result["status"] = type(err).__name__
            result["seconds"] = time.monotonic() - started

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # inside the 2 s batch
        os.kill(service.workers()[0], signal.SIGKILL)
        caller.join()
        service.wait_ready()
        after = requests.post(service.url + "/transcribe", files={"audio": ("1.wav", recording(1))}, timeout=30)
        failed_fast = result["status"] != 200 and result["seconds"] < timeout_s
        holds = failed_fast and after.status_code == 200
        return Outcome("a worker SIGKILLed mid-batch on a synchronous request", 1, 1, 0,
                       round(result["seconds"], 1), holds,
                       f"the client got {result['status']} after {result['seconds']:.1f} s "
                       f"(REQUEST_TIMEOUT_S={timeout_s:g}); the next request: {after.status_code}")
    finally:
        service.stop()


def _burst(url: str, count: int) -> list[tuple[int, float]]:
    """``count`` concurrent /embed requests on their own connections: (status, seconds) each."""
    def one(n: int) -> tuple[int, float]:
        started = time.monotonic()
        with requests.Session() as session:
            status = session.post(url + "/embed", json={"texts": [f"text {n}"]}, timeout=120).status_code
        return status, time.monotonic() - started

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def cold_start(processes: int = 3) -> Outcome:
    """Load starts the moment /health first answers 200: 0 of 30 requests get 503, none waits past REQUEST_TIMEOUT_S."""
    work = scratch()
    # The first load ends 4 s in (every process has booted and takes connections by then, even 8 on
    # a busy 2-core host); the others end over the next 6 s.
    delays = ",".join(str(round(4 + n * 6 / processes, 1)) for n in range(processes))
    service = Service("server", {"CLIP_MODEL": "fake", "WEB_WORKERS": str(processes), "WEB_THREADS": "16",
                                 "FAKE_LOAD_DELAY_S": delays, "REQUEST_TIMEOUT_S": "30"}, work)
    try:
        service.wait_ready(120)
        answers = _burst(service.url, 30)
        refused = sum(status == 503 for status, _ in answers)
        failed = sum(status != 200 for status, _ in answers)
        worst = max(seconds for _, seconds in answers)
        waited = service.logs().count("request waits for the model to load")
        return Outcome(f"cold start with {processes} processes, 30 requests at the first 200", len(answers),
                       len(answers) - failed, failed, round(worst, 1), failed == 0 and worst < 30,
                       f"{refused} got 503; {waited} waited for a loading process; loads end {delays} s in")
    finally:
        service.stop()


def oom_under_load() -> Outcome:
    """GPU OOM above a batch size under saturating load: 0 failed requests; the limit shrinks and /health says so."""
    work = scratch()
    service = Service("worker", {"WHISPER_MODEL": "fake", "WEB_WORKERS": "1", "WEB_THREADS": "32",
                                 "MAX_BATCH_SIZE": "16", "MAX_WAIT_MS": "50", "FAKE_OOM_ABOVE": "3",
                                 "FAKE_BATCH_DELAY_S": "0.05"}, work)
    try:
        service.wait_ready()

        def one(n: int) -> tuple[int, float]:
            started = time.monotonic()
            answer = requests.post(service.url + "/transcribe", files={"audio": (f"{n}.wav", recording(n))},
                                   timeout=120)
            return answer.status_code, time.monotonic() - started

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(one, range(96)))
        failed = sum(status != 200 for status, _ in answers)
        batching = requests.get(service.url + "/health", timeout=5).json()["batching"]
        shrunk = batching.get("shrunk_after_oom")
        return Outcome("GPU OOM above a batch size (fake backend), 96 requests at concurrency 32", len(answers),
                       len(answers) - failed, failed, round(max(s for _, s in answers), 1),
                       failed == 0 and bool(shrunk), f"/health: shrunk_after_oom {shrunk}")
    finally:
        service.stop()


def replica_fails_to_load(failure: str = "FAKE_LOAD_FAILURES") -> Outcome:
    """One of 3 replicas fails to load: it is retried until it serves; never half-ready.

    FAKE_LOAD_FAILURES: out of memory, retried in the process; FAKE_LOAD_CRASHES: another error,
    the process exits and gunicorn starts another.
    """
    work = scratch()
    service = Service("server", {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "16",
                                 # The first process fails 2 s in, after its siblings serve: requests wait there.
                                 failure: "1", "FAKE_LOAD_DELAY_S": "2,0,0.5,1"}, work)
    try:
        started = time.monotonic()
        service.wait_ready()
        sent = ok = refused = 0
        serving = None
        while time.monotonic() - started < 40:
            answers = _burst(service.url, 12)
            sent += len(answers)
            ok += sum(status == 200 for status, _ in answers)
            refused += sum(status == 503 for status, _ in answers)
            retried = ("model load ran out of memory; retrying" in service.logs()
                       or service.logs().count("Booting worker") >= 4)
            if retried and all(s == 200 for s, _ in answers):
                serving = time.monotonic() - started
                break
            time.sleep(0.2)
        oom = failure == "FAKE_LOAD_FAILURES"
        how = ("out of memory, loaded again in the process" if oom
               else "crashed; the process exits, gunicorn starts another")
        # A 503 with Retry-After is a refusal, not an accepted request lost: counted apart. Out of
        # memory, there must be none (the requests waiting there keep waiting); a crash answers
        # 503 to the requests that were waiting in the crashing process (they retry elsewhere).
        accepted = sent - refused
        return Outcome(f"one of 3 replicas fails to load ({how}), bursts of 12 requests", accepted, ok,
                       accepted - ok, round(serving or 40.0, 1),
                       serving is not None and ok == accepted and (refused == 0 or not oom),
                       f"{refused} of {sent} refused with 503 + Retry-After; time = until the replica serves"
                       if serving else "never served")
    finally:
        service.stop()


def callback_receiver_down() -> Outcome:
    """The callback receiver down for longer than the retries: callback.state=failed at status_url; memory flat."""
    work = scratch()
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    receiver = Receiver(SECRET)  # only for its URL shape; its host is replaced by the closed one
    env = {**callback_env(receiver, f"file://{work}/jobs", CALLBACK_MAX_ATTEMPTS="3", CALLBACK_BACKOFF_S="0.05",
                          CALLBACK_TIMEOUT_S="1"),
           "CALLBACK_ALLOWED_HOSTS": closed, "WHISPER_MODEL": "fake", "WEB_WORKERS": "1"}
    receiver.close()
    service = Service("worker", env, work)
    try:
        service.wait_ready()
        rss, accepted, ended, worst = [], 0, 0, 0.0
        for _round in range(3):
            status_urls = {}
            for n in range(30):
                answer = requests.post(service.url + "/transcribe", files={"audio": (f"{n}.wav", recording(n))},
                                       data={"callback_url": f"http://{closed}/hook"}, timeout=30)
                if answer.status_code == 202:
                    status_urls[answer.json()["status_url"]] = time.monotonic()
            accepted += len(status_urls)
            give_up = time.monotonic() + JOB_WAIT_S
            pending = dict(status_urls)
            while pending and time.monotonic() < give_up:
                for url, at in list(pending.items()):
                    record = requests.get(url, timeout=5).json()
                    if record["callback"]["state"] == "failed" and record["status"] == "succeeded":
                        worst = max(worst, time.monotonic() - at)
                        ended += 1
                        del pending[url]
                time.sleep(0.1)
            rss.append(service.rss() / 2**20)
        growth = rss[-1] - rss[0]
        return Outcome("callback receiver down for longer than the retries (3 rounds of 30 jobs)", accepted, ended,
                       accepted - ended, round(worst, 1), accepted == ended and growth < 0.1 * rss[0],
                       f"callback.state=failed at status_url; RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB")
    finally:
        service.stop()


def redis_down() -> Outcome:
    """Redis (job store, rate limits) stopped under load, then restarted: no 5xx storm, clear 503s, nothing lost."""
    work, receiver = scratch(), Receiver(SECRET)
    redis = Redis(work)
    env = {**whisper_env(receiver, redis.url, WEB_WORKERS="2", FAKE_BATCH_DELAY_S="0.05"),
           "RATE_LIMIT": "100000/minute", "RATE_LIMIT_STORAGE_URI": redis.url}
    statuses: dict[str, list[int]] = {"sync": [], "submit": []}
    stop = threading.Event()
    service = None
    try:
        redis.start()
        service = Service("worker", env, work)
        service.wait_ready()
        jobs = Jobs(receiver)

        def load() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    sync = requests.post(service.url + "/transcribe", files={"audio": ("s.wav", recording(n))},
                                         timeout=30)
                    statuses["sync"].append(sync.status_code)
                    statuses["submit"].append(jobs.submit(service.url, n).status_code)
                except requests.RequestException:
                    statuses["sync"].append(0)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        redis.stop()
        down_from = len(statuses["submit"])
        time.sleep(4)
        down_to = len(statuses["submit"])
        redis.start()
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join()
        jobs.wait(JOB_WAIT_S)
        sync_5xx = sum(s >= 500 or s == 0 for s in statuses["sync"])
        down = statuses["submit"][down_from:down_to]
        clear = sum(s == 503 for s in down)
        other_5xx = sum(s >= 500 and s != 503 for s in statuses["submit"])
        outcome = jobs.outcome("Redis (job store, rate limits) stopped for 4 s under load, then restarted")
        outcome.holds = outcome.holds and sync_5xx == 0 and other_5xx == 0
        outcome.note = (f"{len(statuses['sync'])} synchronous requests, {sync_5xx} 5xx (limits failed open); "
                        f"{clear} of {len(down)} submits while down got 503 job_store_unavailable; "
                        f"{other_5xx} other 5xx")
        return outcome
    finally:
        stop.set()
        if service is not None:
            service.stop()
        redis.stop()
        receiver.close()


def durable_instance_lost() -> Outcome:
    """Durable mode: the instance's process group killed mid-jobs; another "instance" on the same bucket
    and topic (the same address, as Cloud Run routes to any): Pub/Sub's redelivery ends every job."""
    work, receiver = scratch(), Receiver(SECRET)
    emulators = Emulators(work)
    first = second = None
    try:
        bucket, port = emulators.bucket(), free_port()
        emulators.topics.create_topic("jobs")
        emulators.topics.create_push_subscription("jobs-push", "jobs", f"http://127.0.0.1:{port}/events/pubsub",
                                                  ack_deadline_s=10)
        env = {**whisper_env(receiver, f"gs://{bucket}/jobs/whisper", FAKE_BATCH_DELAY_S="0.5", WEB_WORKERS="2"),
               **emulators.env, "JOB_TOPIC": f"projects/{Emulators.PROJECT}/topics/jobs", "WEB_THREADS": "16"}
        first = Service("worker", env, work, port=port)
        first.wait_ready()
        jobs = Jobs(receiver)
        for n in range(IN_FLIGHT):
            jobs.submit(first.url, n)
        time.sleep(0.8)  # pushed, some running
        delivered_before = len(jobs.bodies())
        first.kill_tree()
        second = Service("worker", env, work, port=port)
        second.wait_ready()
        jobs.wait(120)
        return jobs.outcome("instance lost in durable mode (Pub/Sub emulator, bucket on the storage emulator)",
                            synchronous_answers(second.url, range(IN_FLIGHT)),
                            f"{delivered_before} delivered before the kill; redelivered by Pub/Sub")
    finally:
        for service in (first, second):
            if service is not None:
                service.stop()
        emulators.stop()
        receiver.close()


def storage_down_batch_job() -> Outcome:
    """The storage emulator stopped in the middle of a batch job (python -m server.job), restarted, the job
    rerun: every input's result written exactly once."""
    from core.from_storage import storage
    from tests.emulators import _start, _stop  # the suite's own starters
    from tests.media import encode, photo_like

    work = scratch()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # On disk (STORAGE_BASE), not in memory: the bucket survives the emulator's restart, as GCS would.
    argv = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port)]
    start = lambda n: _start(argv, url + "/storage/v1/b", work / f"storage-{n}.log",  # noqa: E731
                             env={"STORAGE_BASE": str(work)})
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    env = {**os.environ, "CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "1", "LOG_LEVEL": "WARNING"}
    emulator = start(1)
    first = None
    try:
        requests.post(f"{url}/storage/v1/b?project=faults", json={"name": "batch"}, timeout=10).raise_for_status()
        uris = [f"gs://batch/photos/{n:03d}.jpg" for n in range(24)]
        for n, uri in enumerate(uris):
            storage.write_bytes(uri, encode(photo_like(64, 48, seed=n), "JPEG"), "image/jpeg")
        storage.write_bytes("gs://batch/photos.txt", "".join(u + "\n" for u in uris).encode())
        command = [sys.executable, "-m", "server.job", "--input", "gs://batch/photos.txt", "--output",
                   "gs://batch/embeddings", "--workers", "1", "--checkpoint-every", "1"]
        started = time.monotonic()
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        part = "gs://batch/embeddings/part-00000-of-00001.jsonl"
        give_up = time.monotonic() + 120
        while not storage.exists(part) and time.monotonic() < give_up:
            time.sleep(0.01)
        _stop(emulator)  # storage gone in the middle of the job, for less than its calls' retry window
        time.sleep(5)
        emulator = start(2)
        first_rc = first.wait(timeout=300)
        rerun = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               timeout=300)
        paths = [json.loads(line)["path"] for location in storage.list_prefix("gs://batch/embeddings")
                 if location.endswith(".jsonl")
                 for line in storage.read_bytes(location).decode().splitlines()]
        done = set(paths) & set(uris)
        duplicates = len(paths) - len(set(paths))
        return Outcome("storage emulator stopped in the middle of a batch job, restarted, job rerun", len(uris),
                       len(done), len(uris) - len(done), round(time.monotonic() - started, 1),
                       len(done) == len(uris) and duplicates == 0 and rerun.returncode == 0,
                       f"storage down 5 s; first run exit {first_rc}; rerun exit {rerun.returncode}; "
                       f"{duplicates} inputs written twice")
    finally:
        if first is not None and first.poll() is None:
            first.kill()
            first.wait()
        _stop(emulator)
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved


ROWS = {"worker-sigkill": worker_sigkill, "tree-sigkill": tree_sigkill, "sync-sigkill": sync_sigkill,
        "durable-instance-lost": durable_instance_lost, "redis-down": redis_down,
        "receiver-down": callback_receiver_down, "cold-start-3": lambda: cold_start(3),
        "cold-start-8": lambda: cold_start(8), "oom": oom_under_load, "replica-oom": replica_fails_to_load,
        "replica-crash": lambda: replica_fails_to_load("FAKE_LOAD_CRASHES"),
        "storage-down-batch": storage_down_batch_job}


def table(outcomes: list[Outcome]) -> str:
    """The matrix as a markdown table."""
    lines = ["| fault | accepted | ended | lost | worst time to end (s) | holds | notes |",
             "|---|---:|---:|---:|---:|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.fault} | {o.accepted} | {o.ended} | {o.lost} | {o.worst_s} | "
                     f"{'yes' if o.holds else '**no**'} | {o.note} |")
    return "\n".join(lines)


def main() -> None:
    """Run the chosen rows (all by default), print the table, exit 1 if a row does not hold."""
    parser = argparse.ArgumentParser(prog="python -m bench.faults")
    parser.add_argument("rows", nargs="*", choices=[*ROWS, []], help="rows to run (default: all)")
    args = parser.parse_args()
    outcomes = []
    for name in args.rows or list(ROWS):
        started = time.monotonic()
        try:
            outcome = ROWS[name]()
        except Exception as err:  # noqa: BLE001 - a row that cannot run is a row that does not hold
            outcome = Outcome(name, 0, 0, 0, 0.0, False, f"could not run: {type(err).__name__}: {err}"[:300])
        print(f"{name}: {'holds' if outcome.holds else 'DOES NOT HOLD'} ({time.monotonic() - started:.0f} s)",
              flush=True)
        outcomes.append(outcome)
    report = table(outcomes)
    print("\n" + report)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "faults.md").write_text(report + "\n")
    raise SystemExit(0 if all(o.holds for o in outcomes) else 1)


if __name__ == "__main__":
    main()
