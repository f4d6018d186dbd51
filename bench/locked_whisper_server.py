"""Baseline (c) for the Whisper benchmark: how the popular Whisper web services work.

Threads accept requests concurrently, but a global lock serialises ``model.transcribe`` (as in
whisper-asr-webservice): no batching across requests. Audio is decoded outside the lock, which
is kinder to this baseline than those services are. Benchmarks only.
"""

import io
import os
import threading

from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from flask import Flask, jsonify, request

model = WhisperModel(os.environ["BASELINE_MODEL_DIR"], device="cpu", compute_type="int8",
                     cpu_threads=int(os.environ.get("WHISPER_CPU_THREADS", "0")))
lock = threading.Lock()
app = Flask(__name__)


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/asr")
def asr():
    audio = decode_audio(io.BytesIO(request.files["audio_file"].read()))
    with lock:
        segments, info = model.transcribe(audio, beam_size=5)
        text = "".join(segment.text for segment in segments)
    return jsonify({"text": text, "duration": info.duration})
