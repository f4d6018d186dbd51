"""bench.gil_profile charges each sampled stack to the innermost known part of the request path."""

import pytest

from bench.gil_profile import part_of

pytestmark = pytest.mark.unit


def test_a_stack_goes_to_its_innermost_known_part():
    request = ["Thread.run (threading.py:1)", "ThreadWorker.handle (gunicorn/workers/gthread.py:2)",
               "Flask.wsgi_app (flask/app.py:3)", "embed (server/routes.py:4)"]
    assert part_of(request + ["decode_image (server/images.py:5)", "ImageFile.load (PIL/ImageFile.py:6)"]) \
        == "image decode + preprocess"
    assert part_of(request + ["read_inputs (server/inputs.py:6)", "_next_delimiter (core/web/multipart.py:7)"]) \
        == "multipart parse (core/web/multipart.py)"
    assert part_of(request + ["json_response (core/web/encoding.py:7)"]) == "JSON / base64 encoding"
    assert part_of(request) == "Flask/werkzeug request and response"
    assert part_of(["Thread.run (threading.py:1)", "ThreadWorker.handle (gunicorn/workers/gthread.py:2)",
                    "Request.parse (gunicorn/http/message.py:3)"]) == "gunicorn HTTP (read, parse headers, write)"
    assert part_of(["Arbiter.run (gunicorn/arbiter.py:1)"]) == "gunicorn main loop and other threads"
