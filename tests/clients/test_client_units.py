"""The Python client's pure parts: error mapping, Retry-After, URL lists, the breaker, output naming, progress."""

from __future__ import annotations

import io
import json

import pytest
from inference_client import BadRequest, ConfigurationError, RateLimited, ServerError, Unavailable
from inference_client.batch import find_jobs, write_atomically
from inference_client.breaker import CLOSED, OPEN, PROBING, CircuitBreaker
from inference_client.errors import error_from_response, parse_retry_after
from inference_client.fanout import parse_urls
from inference_client.progress import Progress
from inference_client.whisper import form_fields

pytestmark = pytest.mark.unit


def test_error_bodies_become_typed_errors_with_the_service_code():
    body = json.dumps({"error": {"code": "invalid_audio", "message": "the file is damaged"}}).encode()
    error = error_from_response(400, body, {}, url="http://w1")
    assert isinstance(error, BadRequest)
    assert (error.status, error.code, error.message, error.url) == (400, "invalid_audio", "the file is damaged",
                                                                    "http://w1")
    busy = error_from_response(429, b'{"error": {"code": "overloaded", "message": "queue full"}}',
                               {"Retry-After": "3"})
    assert isinstance(busy, RateLimited) and busy.code == "overloaded" and busy.retry_after == 3.0


def test_a_proxy_page_keeps_its_text_and_status():
    error = error_from_response(502, b"<html>Bad Gateway</html>", {})
    assert isinstance(error, Unavailable) and error.code == "http_502" and "Bad Gateway" in error.message
    assert isinstance(error_from_response(507, b"", {}), ServerError)


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


def test_worker_urls_take_commas_and_spaces():
    assert parse_urls("http://a:8080/, http://b:8080 http://a:8080") == ["http://a:8080", "http://b:8080"]
    with pytest.raises(ConfigurationError, match="WORKER_URLS"):
        parse_urls(" , ")


def test_breaker_opens_after_consecutive_failures_and_probes_back_in():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_s=2.0, max_reset_s=5.0, clock=lambda: now[0])
    assert not breaker.record_failure() and not breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    assert [breaker.record_failure() for _ in range(3)] == [False, False, True]
    assert breaker.state == OPEN and not breaker.ready_to_probe()
    now[0] = 2.0
    assert breaker.ready_to_probe()
    breaker.start_probe()
    assert breaker.state == PROBING and not breaker.ready_to_probe()
    breaker.probe_result(False)  # still down: out twice as long
    assert breaker.state == OPEN and breaker.open_until == 6.0
    breaker.probe_result(False)
    assert breaker.open_until == 2.0 + 5.0  # capped at max_reset_s
    now[0] = 7.0
    breaker.start_probe()
    breaker.probe_result(True)
    assert breaker.state == CLOSED and breaker.failures == 0


def test_form_fields_spell_options_as_the_worker_reads_them():
    assert form_fields("srt", {"word_timestamps": True, "vad_filter": False, "temperature": [0.0, 0.4],
                               "language": None}) == [("response_format", "srt"), ("word_timestamps", "true"),
                                                      ("vad_filter", "false"), ("temperature", "0.0,0.4")]
    with pytest.raises(ValueError, match="response_format"):
        form_fields("docx", {})


def test_outputs_mirror_folders_and_keep_same_stem_inputs_apart(tmp_path):
    source, out = tmp_path / "in", tmp_path / "in" / "out"
    for name in ("a.wav", "b.mp3", "b.m4a", "sub/c.webm", "notes.txt", ".hidden.wav", "out/old.wav"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"x")
    jobs = {job.name: job.output.relative_to(out).as_posix() for job in find_jobs(source, out, "srt")}
    assert jobs == {"a.wav": "a.srt", "b.m4a": "b.m4a.srt", "b.mp3": "b.mp3.srt", "sub/c.webm": "sub/c.srt"}
    assert {j.output.name for j in find_jobs(source, out, "verbose_json")} >= {"a.json"}


def test_atomic_write_leaves_only_the_finished_file(tmp_path):
    target = tmp_path / "deep" / "a.srt"
    write_atomically(target, "1\n")
    write_atomically(target, "2\n")
    assert target.read_text() == "2\n"
    assert [p.name for p in target.parent.iterdir()] == ["a.srt"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    plain = io.StringIO()
    progress = Progress(2, stream=plain)
    progress.advance("a.wav", "done")
    progress.note("retry: http://w1: 503 not_ready")
    progress.advance("b.wav", "invalid_audio: damaged")
    assert plain.getvalue().splitlines() == ["[1/2] a.wav: done", "retry: http://w1: 503 not_ready",
                                             "[2/2] b.wav: invalid_audio: damaged"]
    terminal = _Terminal()
    bar = Progress(2, stream=terminal)
    bar.advance("a.wav", "done")
    bar.advance("b.wav", "done")
    bar.close()
    assert "100%" in terminal.getvalue() and "2/2" in terminal.getvalue()
