"""Option parsing and subtitle/JSON rendering (no model)."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInput
from worker.formats import Segment, Transcript, Word, render, result_files, timestamp
from worker.options import parse_options

pytestmark = pytest.mark.unit


def parse(multilingual=True, **values):
    return parse_options({k: [v] for k, v in values.items()}, multilingual=multilingual, model_name="m",
                         default_beam_size=5)


def test_defaults():
    options = parse()
    assert (options.language, options.task, options.response_format, options.vad_filter) == (None, "transcribe",
                                                                                          "json", True)
    assert options.beam_size == 5 and options.temperatures == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def test_temperature_fallback_starts_where_asked():
    assert parse(temperature="0.6").temperatures == (0.6, 0.8, 1.0)
    assert parse(temperature="1").temperatures == (1.0,)
    assert parse(temperature="0,0.5").temperatures == (0.0, 0.5)


def test_openai_fields_are_understood():
    options = parse_options({"model": ["whisper-1"], "prompt": ["Kubernetes"],
                             "timestamp_granularities[]": ["word", "segment"]},
                            multilingual=True, model_name="m", default_beam_size=5)
    assert options.initial_prompt == "Kubernetes" and options.word_timestamps


@pytest.mark.parametrize("values, multilingual, fragment", [
    ({"language": "klingon"}, True, "unknown language"), ({"task": "translate"}, False, "English-only"),
    ({"language": "fr"}, False, "English-only"), ({"beam_size": "11"}, True, "between 1 and 10"),
    ({"temperature": "-0.1"}, True, "between 0 and 1"), ({"vad_filter": "perhaps"}, True, "true or false"),
    ({"response_format": "xml"}, True, "response_format"), ({"colour": "blue"}, True, "unknown option"),
])
def test_bad_values_name_the_problem(values, multilingual, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        parse(multilingual=multilingual, **values)


def test_multilingual_models_accept_other_languages_and_translation():
    options = parse(multilingual=True, language="fr", task="translate")
    assert (options.language, options.task) == ("fr", "translate")


def transcript():
    words = [Word(0.0, 0.4, " Hello", 0.9), Word(0.4, 0.9, " there.", 0.8)]
    return Transcript("en", 1.0, 3725.5, [
        Segment(1, 0.0, 0.9, " Hello there.", -0.2, 0.01, 1.1, 0.0, words),
        Segment(2, 3723.25, 3725.5, " Second\n\nline --> here", -0.3, 0.02, 1.2, 0.2),
    ])


def test_timestamps():
    assert timestamp(3723.25, ",") == "01:02:03,250"
    assert timestamp(0.0005, ".") == "00:00:00.000" and timestamp(59.9996, ".") == "00:01:00.000"


def test_srt():
    body, content_type = render(transcript(), "srt")
    assert content_type.startswith("application/x-subrip")
    assert body == ("1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n"
                    "2\n01:02:03,250 --> 01:02:05,500\nSecond line -> here\n")


def test_vtt():
    body, content_type = render(transcript(), "vtt")
    assert content_type.startswith("text/vtt")
    assert body == ("WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nHello there.\n\n"
                    "01:02:03.250 --> 01:02:05.500\nSecond line -> here\n")


def test_json_and_verbose_json():
    plain = json.loads(render(transcript(), "json")[0])
    assert plain["text"] == "Hello there. Second\n\nline --> here"
    assert set(plain["segments"][0]) == {"id", "start", "end", "text"}
    verbose = json.loads(render(transcript(), "verbose_json")[0])
    assert verbose["segments"][0]["words"][1] == {"word": " there.", "start": 0.4, "end": 0.9, "probability": 0.8}
    assert "words" not in verbose["segments"][1] and verbose["segments"][1]["temperature"] == 0.2


def test_result_files_are_what_events_and_batch_jobs_write():
    files = result_files(transcript())
    assert set(files) == {"json", "srt", "vtt"}
    for extension, fmt in (("json", "verbose_json"), ("srt", "srt"), ("vtt", "vtt")):
        body, content_type = render(transcript(), fmt)
        assert files[extension] == (body.encode("utf-8"), content_type)
    # An event's meta leads the json; the transcript's own fields win a clash.
    meta = {"input": "gs://b/a.wav", "generation": "7", "text": "not the transcript"}
    with_meta = json.loads(result_files(transcript(), meta)["json"][0])
    assert list(with_meta)[:2] == ["input", "generation"] and with_meta["text"] == transcript().text
    assert {key: with_meta[key] for key in with_meta if key not in meta} == \
        {key: value for key, value in json.loads(files["json"][0]).items() if key != "text"}


def test_text():
    body, content_type = render(transcript(), "text")
    assert content_type.startswith("text/plain") and body.endswith("\n")


def test_options_and_the_fake_model_app_never_import_faster_whisper():
    """WHISPER_MODEL=fake runs without faster-whisper: parsing options (language=) must not load it."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("import sys\n"
              "from worker.options import parse_options\n"
              "from worker.settings import WorkerSettings\n"
              "from worker.app import create_app\n"
              "settings = WorkerSettings.from_env({}, whisper_model='fake', log_level='WARNING')\n"
              "parse_options({'language': ['de']}, multilingual=True, model_name='fake', default_beam_size=5)\n"
              "create_app(settings)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('faster_whisper', 'ctranslate2')))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "WHISPER_MODEL": "fake"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
