"""callback_url on the Whisper worker under real gunicorn: an srt result, then SIGTERM mid-queue."""

from __future__ import annotations

import json
import signal

import pytest
import requests

from tests.callback_receiver import Receiver
from tests.conftest import run_service, wait_until
from tests.media import SENTENCES
from tests.worker.conftest import assert_heard

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = "worker-secret"


def test_srt_result_is_delivered_and_sigterm_fails_unfinished_jobs_as_shutting_down(speech, tmp_path):
    receiver = Receiver(SECRET)
    env = {"WHISPER_MODEL": "tiny.en", "CALLBACK_SECRET": SECRET, "CALLBACK_ALLOWED_HOSTS": receiver.host,
           "ASYNC_WORKERS": "1", "GRACEFUL_TIMEOUT_S": "4", "WEB_THREADS": "4", "MAX_AUDIO_SECONDS": "600"}
    try:
        with run_service("worker", env, tmp_path, ready_timeout_s=180) as service:
            with open(speech.sentences[1], "rb") as audio:
                accepted = requests.post(service.url + "/transcribe", files={"audio": audio}, timeout=60,
                                         data={"response_format": "srt", "callback_url": receiver.url("/short")})
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]
            (got,) = receiver.wait_for(1, 120)
            body = json.loads(got.body)
            assert got.signature_ok and got.headers["X-Job-Id"] == job_id
            assert body["status"] == "succeeded" and body["response_format"] == "srt"
            assert body["content_type"].startswith("application/x-subrip") and body["srt"].startswith("1\n00:00:")
            assert_heard(body["srt"], SENTENCES[1])
            record = wait_until(lambda: (r := requests.get(accepted.json()["status_url"], timeout=5).json())
                                ["callback"]["state"] == "delivered" and r, 10)
            assert record["result"] == body

            # Bad input and a refused URL still get their 4xx at once; nothing is delivered for them.
            hook = {"callback_url": receiver.url("/bad")}
            for files, data, status in [({"audio": ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64)}, hook, 415),
                                        ({"audio": ("v.mp4", speech.video_without_audio.read_bytes())}, hook, 400),
                                        ({"audio": ("s.wav", speech.sentences[0].read_bytes())},
                                         {**hook, "response_format": "docx"}, 400),
                                        ({"audio": ("s.wav", speech.sentences[0].read_bytes())},
                                         {"callback_url": "https://10.0.0.1/hook"}, 400)]:
                refused = requests.post(service.url + "/v1/audio/transcriptions", files=files, data=data, timeout=60)
                assert refused.status_code == status, refused.text
            assert len(receiver.received) == 1

            # Three minute-long recordings on one job thread: they cannot finish within the 4 s grace.
            long_ids = []
            for n in range(3):
                with open(speech.long, "rb") as audio:
                    response = requests.post(service.url + "/transcribe", files={"audio": audio}, timeout=60,
                                             data={"callback_url": receiver.url(f"/long{n}")})
                assert response.status_code == 202, response.text
                long_ids.append(response.json()["job_id"])
            status_url = f"{service.url}/jobs/{long_ids[0]}"
            wait_until(lambda: requests.get(status_url, timeout=5).json()["status"] == "running", 30)
            service.process.send_signal(signal.SIGTERM)
            service.process.wait(timeout=30)
            received = receiver.wait_for(4, 10)[1:]
            logs = service.logs()
        assert sorted(r.headers["X-Job-Id"] for r in received) == sorted(long_ids), logs  # each exactly once
        for got in received:
            body = json.loads(got.body)
            assert got.signature_ok
            assert body["status"] == "failed" and body["error"]["code"] == "shutting_down", body
        assert "job cut short by shutdown" in logs
    finally:
        receiver.close()
