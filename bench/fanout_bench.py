"""Fan-out benchmark: the Python client's WorkerPool over three Whisper workers vs one, same clips.

16 short clips (3-5 s of espeak-ng speech each), sent with 12 requests in flight in both
configurations so only the number of workers differs; tiny.en int8, beam 5. On a machine with
fewer cores than workers, the three workers share the cores (each gets cores // 3 CTranslate2
threads, at least one; the single worker gets them all), so the ratio shows what the client's
scheduling costs or gains, not how L4 GPUs would scale.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from inference_client import WorkerPool

from bench.harness import LoadResult, Row, RssSampler, interleave, python, serve, table
from bench.whisper_bench import LONG_SENTENCES, seconds_of
from tests.media import SENTENCES, speak

IN_FLIGHT = 12  # requests in flight, the same for one and three workers


def transcribe_all(urls: list[str], clips: list[Path], stats: dict) -> tuple[float, LoadResult]:
    """Every clip once through a WorkerPool; (audio s / wall s, the run's latencies)."""
    pool = WorkerPool(urls, max_attempts=3)
    latencies: list[float] = []

    def one(clip: Path) -> str:
        started = time.perf_counter()
        text = pool.transcribe(clip, "text")
        latencies.append(time.perf_counter() - started)
        return text

    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as threads:
        texts = list(threads.map(one, clips))
    wall = time.perf_counter() - started
    if not all(text.strip() for text in texts):
        raise RuntimeError("an empty transcript: the workers are not transcribing")
    stats["served"] = [s["succeeded"] for s in pool.stats()]
    stats["retries"] = sum(s["failed"] for s in pool.stats())
    return sum(seconds_of(c) for c in clips) / wall, LoadResult(wall, latencies)


def run(repeats: int = 3) -> str:
    """One worker vs three behind the pool, round-robin; returns the markdown table."""
    cpus = len(os.sched_getaffinity(0))
    env = {"WHISPER_MODEL": "tiny.en", "MAX_BATCH_SIZE": "8", "WEB_THREADS": "16"}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        clips = [speak(text, Path(tmp) / f"clip{n}.wav") for n, text in enumerate(SENTENCES + LONG_SENTENCES[:8])]
        audio_s = sum(seconds_of(c) for c in clips)
        print(f"Fan-out audio: {len(clips)} clips, {audio_s:.0f} s in total", flush=True)
        single_port, single_pid = stack.enter_context(
            serve([python(), "-m", "worker"], {**env, "WHISPER_CPU_THREADS": str(cpus)}, "fanout-one-worker"))
        trio = [stack.enter_context(serve([python(), "-m", "worker"],
                                          {**env, "WHISPER_CPU_THREADS": str(max(1, cpus // 3))},
                                          f"fanout-worker-{n}")) for n in range(3)]
        samplers = {"one": stack.enter_context(RssSampler(single_pid)),
                    "three": [stack.enter_context(RssSampler(pid)) for _, pid in trio]}
        one_urls = [f"http://127.0.0.1:{single_port}"]
        three_urls = [f"http://127.0.0.1:{port}" for port, _ in trio]
        transcribe_all(one_urls, clips[:2], {})  # warm-up
        transcribe_all(three_urls, clips[:3], {})
        one = Row(f"one worker ({cpus} threads), {IN_FLIGHT} in flight")
        three = Row(f"three workers ({max(1, cpus // 3)} thread(s) each), {IN_FLIGHT} in flight, WorkerPool")
        split: dict = {}

        def measure(urls, row, stats):
            rate, result = transcribe_all(urls, clips, stats)
            row.latencies_s.extend(result.latencies_s)
            return rate

        interleave(repeats, [(one, lambda: measure(one_urls, one, {})),
                             (three, lambda: measure(three_urls, three, split))])
        one.peak_mb = samplers["one"].peak_mb
        three.peak_mb = sum(sampler.peak_mb for sampler in samplers["three"])
    load = os.getloadavg()[1]  # 5-minute average: other processes competing for the cores during the run
    notes = [
        f"- three workers / one worker: **{three.rate / one.rate:.2f}x** on {cpus} CPU cores (5-minute load "
        f"average at the end: {load:.1f}; above {cpus} means other processes competed, and then three "
        "processes win a larger share of the CPU than one, which flatters the ratio). Requests per "
        f"worker in the last round: {split.get('served')} (least outstanding requests); retries: "
        f"{split.get('retries')}.",
        f"- On this {cpus}-core machine the three CPU workers share {cpus} cores, so the ratio shows the "
        "client's scheduling overhead and correctness, not GPU scaling: with one L4 per worker, throughput "
        "grows with the number of workers until the client's requests in flight no longer fill them.",
    ]
    return table(f"Fan-out: Whisper tiny.en int8, {len(clips)} clips ({audio_s:.0f} s of audio)",
                 "audio s / wall s", [one, three], one) + "\n\n" + "\n".join(notes)
