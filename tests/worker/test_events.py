"""The worker's event job: JSON job options become the form fields /transcribe parses.

The job itself runs end to end (real tiny.en, storage and Pub/Sub emulators) in tests/core/test_events_e2e.py.
"""

from __future__ import annotations

import pytest

from worker.events import _as_fields

pytestmark = pytest.mark.unit


def test_worker_job_options_become_form_fields():
    assert _as_fields({"language": "en", "word_timestamps": True, "beam_size": 5, "temperature": [0, 0.4]}) == {
        "language": ["en"], "word_timestamps": ["true"], "beam_size": ["5"], "temperature": ["0", "0.4"]}
