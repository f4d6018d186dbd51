"""core.web.multipart parses what werkzeug's parser parses, the same way, and says what is wrong with the rest."""

from __future__ import annotations

import io
import random

import pytest
from urllib3 import encode_multipart_formdata
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.test import encode_multipart

from core.errors import InvalidInput
from core.web import multipart
from core.web.multipart import parse_multipart

pytestmark = pytest.mark.unit

BOUNDARY = b"XyZ-boundary-42"


def werkzeug_parse(body: bytes, boundary: bytes = BOUNDARY):
    parser = MultiPartParser(stream_factory=lambda **_: io.BytesIO(), max_form_memory_size=1 << 20)
    return parser.parse(io.BytesIO(body), boundary, len(body))


def outcome(parsed) -> tuple:
    """Everything a route can read from a parse: fields in order, and each file's bytes and headers."""
    form, files = parsed
    return (list(form.items(multi=True)),
            [(name, upload.filename, upload.mimetype, upload.stream.read(), sorted(upload.headers.items()))
             for name, upload in files.items(multi=True)])


def ours(body: bytes, boundary: bytes = BOUNDARY, **limits):
    return parse_multipart(io.BytesIO(body), boundary, **limits)


@pytest.fixture(params=[multipart.CHUNK_BYTES, 1, 7, 64], ids=lambda n: f"chunks of {n}")
def chunk_bytes(request, monkeypatch):
    """Every case again with chunk edges falling inside delimiters, line breaks and headers."""
    monkeypatch.setattr(multipart, "CHUNK_BYTES", request.param)
    return request.param


def part(headers: list[str], data: bytes, newline: bytes = b"\r\n") -> bytes:
    return newline.join(h.encode() for h in headers) + newline + newline + data


def body_of(parts: list[bytes], newline: bytes = b"\r\n", preamble: bytes = b"", epilogue: bytes = b"",
            padding: bytes = b"") -> bytes:
    delimiter = b"--" + BOUNDARY
    out = preamble
    for p in parts:
        out += delimiter + padding + newline + p + newline
    return out + delimiter + b"--" + epilogue


CASES = {
    "one file": body_of([part(['Content-Disposition: form-data; name="image"; filename="a.png"',
                               "Content-Type: image/png"], b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)]),
    "fields and files, repeated names": body_of([
        part(['Content-Disposition: form-data; name="text"'], "a photo of a café".encode()),
        part(['Content-Disposition: form-data; name="text"'], b"second"),
        part(['Content-Disposition: form-data; name="image"; filename="1.jpg"'], b"\xff\xd8one"),
        part(['Content-Disposition: form-data; name="image"; filename="2.jpg"'], b"\xff\xd8two"),
        part(['Content-Disposition: form-data; name="top_k"'], b"3")]),
    "latin-1 field and an unknown charset": body_of([
        part(['Content-Disposition: form-data; name="text"', "Content-Type: text/plain; charset=iso-8859-1"],
             "déjà vu".encode("latin-1")),
        part(['Content-Disposition: form-data; name="label"', "Content-Type: text/plain; charset=ebcdic"],
             "naïve".encode())]),
    "empty file and empty field": body_of([
        part(['Content-Disposition: form-data; name="image"; filename="empty.bin"'], b""),
        part(['Content-Disposition: form-data; name="text"'], b"")]),
    "RFC 2231 filename and a folded header": body_of([
        part(["Content-Disposition: form-data; name=\"audio\";", "\tfilename*=UTF-8''r%C3%A9union.wav"], b"RIFF....")]),
    "preamble, epilogue and transport padding": body_of(
        [part(['Content-Disposition: form-data; name="text"'], b"hello")],
        preamble=b"This is a preamble.\r\n", epilogue=b"\r\nan epilogue", padding=b" \t "),
    "bare LF line breaks": body_of([part(['Content-Disposition: form-data; name="text"'], b"lf", b"\n"),
                                    part(['Content-Disposition: form-data; name="image"; filename="x"'],
                                         b"\x00\x01", b"\n")], newline=b"\n"),
    "data that almost contains the delimiter": body_of([
        part(['Content-Disposition: form-data; name="image"; filename="tricky.bin"'],
             b"\r\n--XyZ-boundary-4\r\n-\r\n--XyZ-boundary-42x and more\r\n--XyZ\r")]),
    "no parts at all": b"--" + BOUNDARY + b"--\r\n",
}


@pytest.mark.parametrize("name", CASES)
def test_it_reads_what_werkzeug_reads(name, chunk_bytes):
    body = CASES[name]
    assert outcome(ours(body)) == outcome(werkzeug_parse(body))


@pytest.mark.parametrize("encoder", ["urllib3 (requests)", "werkzeug test client"])
def test_bodies_from_real_client_encoders(encoder, chunk_bytes):
    fields = [("text", "a dog"), ("image", ("dog.jpg", bytes(range(256)) * 300, "image/jpeg")),
              ("image", ("cat.png", b"\x89PNG" * 1000, "image/png")), ("labels", "cat")]
    if encoder.startswith("urllib3"):
        body, content_type = encode_multipart_formdata(fields, boundary=BOUNDARY.decode())
    else:
        from werkzeug.datastructures import FileStorage, MultiDict
        data = MultiDict([(k, v if isinstance(v, str) else FileStorage(io.BytesIO(v[1]), v[0], content_type=v[2]))
                          for k, v in fields])
        _, body = encode_multipart(data, boundary=BOUNDARY.decode())
    parsed = outcome(ours(body))
    assert parsed == outcome(werkzeug_parse(body))
    assert [n for n, *_ in parsed[1]] == ["image", "image"] and parsed[1][0][3] == bytes(range(256)) * 300


def test_random_bodies_match_werkzeug(chunk_bytes):
    """Random part data full of line breaks, dashes and pieces of the boundary (never the boundary)."""
    rng = random.Random(chunk_bytes)
    alphabet = [b"a", b"\r", b"\n", b"-", b"--", b"\r\n", b"\r\n--", b"XyZ-bound", b"\x00", b"\xff"]
    for _ in range(60):
        parts = []
        for n in range(rng.randint(0, 4)):
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
            assert b"--" + BOUNDARY not in data
            disposition = f'Content-Disposition: form-data; name="f{n}"'
            if rng.random() < 0.5:
                disposition += f'; filename="f{n}.bin"'
                parts.append(part([disposition], data))
            else:  # text fields: valid UTF-8, as werkzeug decodes them the same way
                parts.append(part([disposition], data.replace(b"\xff", b"")))
        body = body_of(parts, epilogue=rng.choice([b"", b"\r\n", b"junk"]))
        assert outcome(ours(body)) == outcome(werkzeug_parse(body)), body


def test_the_whole_body_is_read_so_a_kept_alive_connection_stays_in_step():
    stream = io.BytesIO(CASES["preamble, epilogue and transport padding"] + b"\r\n" * 5000)
    parse_multipart(stream, BOUNDARY)
    assert stream.read() == b""


def test_a_large_upload_spanning_chunks_is_one_buffer_handed_over_whole():
    photo = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    body = body_of([part(['Content-Disposition: form-data; name="image"; filename="big.jpg"'], photo)])
    _, files = ours(body)
    upload = files["image"].stream
    assert isinstance(upload, io.BytesIO) and upload.getvalue() == photo


MALFORMED = {
    "cut off inside a part": body_of([part(['Content-Disposition: form-data; name="text"'], b"x")])[:-20],
    "cut off inside the headers": b"--" + BOUNDARY + b"\r\nContent-Disposition: form-da",
    "cut off inside a boundary line": b"--" + BOUNDARY,
    "the boundary never appears": b"--other\r\n\r\nx\r\n--other--\r\n",
    "an empty body": b"",
    "a part without Content-Disposition": body_of([part([], b"anonymous")]),
    "endless padding after a boundary": b"--" + BOUNDARY + b" " * (multipart.MAX_PADDING_BYTES + 10) + b"\r\n",
    "endless headers": b"--" + BOUNDARY + b"\r\nX-Padding: " + b"a" * (multipart.MAX_HEADER_BYTES + 10),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_body_is_a_400_that_says_what_is_wrong(name, chunk_bytes):
    with pytest.raises(InvalidInput) as raised:
        ours(MALFORMED[name])
    assert raised.value.code == "invalid_multipart" and "malformed multipart" in str(raised.value)


def test_limits_are_werkzeugs_413s():
    big_field = body_of([part(['Content-Disposition: form-data; name="text"'], b"t" * 2000)])
    with pytest.raises(RequestEntityTooLarge):
        ours(big_field, max_field_bytes=1000)
    assert outcome(ours(big_field, max_field_bytes=2000))[0] == [("text", "t" * 2000)]
    big_file = body_of([part(['Content-Disposition: form-data; name="image"; filename="x"'], b"f" * 2000)])
    assert outcome(ours(big_file, max_field_bytes=1000))[1][0][3] == b"f" * 2000  # files are not fields
    many = body_of([part([f'Content-Disposition: form-data; name="t{n}"'], b"v") for n in range(11)])
    with pytest.raises(RequestEntityTooLarge):
        ours(many, max_parts=10)
    assert len(ours(many, max_parts=11)[0]) == 11
