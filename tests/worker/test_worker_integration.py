"""The Whisper worker for real: `python -m worker` (gunicorn) with tiny.en and espeak-ng speech."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import run_service
from tests.media import SENTENCES
from tests.worker.conftest import MAX_POOLED_WER, assert_heard

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def transcribe(service, path, field="audio", route="/transcribe", **options):
    with open(path, "rb") as audio:
        return requests.post(service.url + route, files={field: (path.name, audio)}, data=options, timeout=300)


def test_health_reports_the_model(whisper_service):
    body = requests.get(whisper_service.url + "/health", timeout=5).json()
    assert body["status"] == "ok" and body["model"] == "tiny.en"
    # WHISPER_COMPUTE_TYPE reaches the fixture's worker (the CPU-independence check, docs/development.md).
    assert body["compute_type"] == os.environ.get("WHISPER_COMPUTE_TYPE", "int8") and body["multilingual"] is False


@pytest.mark.parametrize("container", ["wav", "mp3", "flac", "ogg", "opus", "m4a", "webm"])
def test_every_container_is_transcribed(whisper_service, speech, container):
    response = transcribe(whisper_service, speech.containers[container])
    assert response.status_code == 200, response.text
    body = response.json()
    assert_heard(body["text"], SENTENCES[1])
    assert body["language"] == "en" and 2.0 < body["duration"] < 8.0
    assert body["segments"] and all(s["start"] < s["end"] for s in body["segments"])


def test_audio_track_of_a_video_and_stereo_44k(whisper_service, speech):
    assert_heard(transcribe(whisper_service, speech.video).json()["text"], SENTENCES[2])
    assert_heard(transcribe(whisper_service, speech.stereo_44k).json()["text"], SENTENCES[3])


def test_readme_curl_example_and_the_openai_route(whisper_service, speech):
    out = subprocess.run(["curl", "-sS", "-X", "POST", f"{whisper_service.url}/transcribe",
                          "-F", f"audio=@{speech.containers['m4a']}"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    assert_heard(json.loads(out)["text"], SENTENCES[1])
    openai_style = transcribe(whisper_service, speech.sentences[4], field="file", route="/v1/audio/transcriptions",
                              model="whisper-1", response_format="text")
    assert openai_style.status_code == 200
    assert_heard(openai_style.text, SENTENCES[4])


def test_a_minute_long_recording_spans_chunks_in_order(whisper_service, speech):
    """The script spoken twice (three 30 s chunks): in order, on the real timeline, no stretch left out."""
    body = transcribe(whisper_service, speech.long, response_format="verbose_json").json()
    duration, segments = body["duration"], body["segments"]
    assert duration > 55
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(0 <= s["start"] <= s["end"] <= duration for s in segments)
    # Every 10 s of the recording (speech throughout) has text: a dropped chunk would leave 30 s bare.
    for second in range(0, int(duration) - 5, 10):
        assert any(s["start"] < second + 10 and s["end"] > second for s in segments), (second, segments)
    # Each repetition of the script lands in its own half of the timeline: chunks kept their offsets.
    middle = duration / 2
    script = " ".join(SENTENCES)
    for half in (lambda s: s < middle, lambda s: s >= middle):
        heard = " ".join(s["text"] for s in segments if half((s["start"] + s["end"]) / 2))
        assert_heard(heard, script, MAX_POOLED_WER)


def test_text_and_verbose_json(whisper_service, speech):
    text = transcribe(whisper_service, speech.sentences[5], response_format="text")
    assert text.headers["Content-Type"].startswith("text/plain") and text.text.endswith("\n")
    assert_heard(text.text, SENTENCES[5])
    verbose = transcribe(whisper_service, speech.sentences[5], response_format="verbose_json").json()
    segment = verbose["segments"][0]
    assert {"avg_logprob", "no_speech_prob", "compression_ratio", "temperature"} <= set(segment)
    assert "words" not in segment and verbose["task"] == "transcribe"


def test_word_timestamps(whisper_service, speech):
    body = transcribe(whisper_service, speech.sentences[1], response_format="verbose_json",
                      word_timestamps="true").json()
    words = [w for s in body["segments"] for w in s["words"]]
    assert_heard(" ".join(w["word"] for w in words), SENTENCES[1])
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] + 0.5 and 0 <= w["probability"] <= 1 for w in words)


def test_silence_is_200_with_no_invented_text(whisper_service, speech):
    for vad in ("true", "false"):
        body = transcribe(whisper_service, speech.silence, vad_filter=vad).json()
        assert len(body["text"]) < 15, body  # "near-empty": nothing like a sentence


def test_options_as_query_parameters(whisper_service, speech):
    with open(speech.sentences[4], "rb") as audio:
        response = requests.post(whisper_service.url + "/transcribe?response_format=text&beam_size=1",
                                 files={"audio": ("s.wav", audio)}, timeout=120)
    assert response.headers["Content-Type"].startswith("text/plain")
    assert_heard(response.text, SENTENCES[4])


def test_eight_concurrent_clips_match_their_solo_results_and_share_model_calls(whisper_service, speech):
    solo = {n: transcribe(whisper_service, path).json()["text"] for n, path in enumerate(speech.sentences)}
    before = requests.get(whisper_service.url + "/health", timeout=5).json()["stats"]
    with ThreadPoolExecutor(8) as pool:
        together = dict(pool.map(lambda item: (item[0], transcribe(whisper_service, item[1])),
                                 enumerate(speech.sentences)))
    after = requests.get(whisper_service.url + "/health", timeout=5).json()["stats"]
    for n, response in together.items():
        assert response.status_code == 200
        assert response.json()["text"] == solo[n]
    chunks = after["items"] - before["items"]
    calls = after["batches"] - before["batches"]
    assert chunks >= 8 and calls < chunks, f"{chunks} chunks in {calls} model calls: no cross-request batching"
    assert after["largest_batch"] >= 2


def test_sigterm_lets_an_in_flight_transcription_finish(tmp_path, speech):
    # The minute-long recording takes 5-25 s here, by CPU, compute type and threads: a grace period
    # longer than any of them (deployments keep the 8 s default, under Cloud Run's 10 s).
    env = {"WHISPER_MODEL": "tiny.en", "GRACEFUL_TIMEOUT_S": "120"}
    with run_service("worker", env, tmp_path, ready_timeout_s=180) as running:
        result = {}
        thread = threading.Thread(target=lambda: result.update(response=transcribe(running, speech.long)))
        thread.start()
        threading.Event().wait(1.0)  # the request is being decoded/transcribed now
        running.process.send_signal(signal.SIGTERM)
        thread.join(timeout=150)
        running.process.wait(timeout=30)
        assert result["response"].status_code == 200
        assert_heard(result["response"].json()["text"], " ".join(SENTENCES * 2), MAX_POOLED_WER)
