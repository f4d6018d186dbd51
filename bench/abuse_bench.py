"""Hostile but valid requests: peak and retained RSS growth of each service's process tree.

`python -m bench abuse` (a section of `make bench`), or `python -m bench.abuse_bench [--root DIR]
[--env KEY=VALUE ...] [--skip-audio]` to measure another checkout (e.g. main, for before/after)
or another setting (MALLOC_TUNING=off). The services run as in production: `python -m server`
(demo model) and `python -m worker` (tiny.en), real gunicorn on loopback, default settings.
The whole process tree's RSS is sampled every 20 ms; "retained" is the RSS 2 s after the last
answer minus the RSS before the case. Inputs are generated here, at bench time.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.harness import ROOT, RssSampler, multipart, python, serve, tree_rss

SAMPLE_S = 0.02
SETTLE_S = 2.0
MIB = 2**20
# Targets from issue 7 (peak / retained MiB); None = no target for that column.
TARGETS = {
    "16-bit PNG": (400, None), "RGBA PNG": (400, None), "16 x 16-bit PNG at once": (2048, 300),
    "1 h silence FLAC": (300, None), "8 x 1 h FLAC at once": (1536, None),
}


@dataclass
class Case:
    """One row: what was sent, the answers, and memory."""

    name: str
    statuses: list[int]
    peak_mb: float
    retained_mb: float
    seconds: float


def measure(name: str, pid: int, send: Callable[[], list[int]]) -> Case:
    """Run ``send`` against the service ``pid`` and sample its memory."""
    time.sleep(SETTLE_S)
    before = tree_rss(pid)
    started = time.monotonic()
    with RssSampler(pid, interval_s=SAMPLE_S) as sampler:
        statuses = send()
        elapsed = time.monotonic() - started
        time.sleep(SETTLE_S)  # after the answer: trims and frees land here
    after = tree_rss(pid)
    case = Case(name, statuses, (sampler.peak - before) / MIB, (after - before) / MIB, elapsed)
    print(f"  {name}: {summary(statuses)} peak +{case.peak_mb:.0f} MiB, retained +{case.retained_mb:.0f} MiB, "
          f"{elapsed:.1f} s", flush=True)
    return case


def summary(statuses: list[int]) -> str:
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} x {status}" if n > 1 else str(status) for status, n in sorted(counts.items()))


def post(port: int, path: str, body: bytes, content_type: str, timeout_s: float = 1800) -> int:
    """One POST; the status code (0 if the connection failed)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status
    except OSError:
        return 0


def at_once(n: int, send: Callable[[], int]) -> list[int]:
    """``send`` from ``n`` threads at the same moment."""
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def one():
        start.wait()
        status = send()
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def chunked_post(port: int, path: str, total: int, content_type: str) -> int:
    """A chunked body of ``total`` bytes (no Content-Length); the status the server answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"\0" * 65536
    try:
        for _ in range(total // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered early and closed: read what it said
    try:
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
        return int(status_line.split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    finally:
        sock.close()


# ---- inputs -----------------------------------------------------------------------------------

def png16_grey(size: int = 6000) -> bytes:
    """A 16-bit greyscale PNG (smooth, so it is small on the wire)."""
    ramp = np.linspace(0, 65535, size, dtype=np.float32)
    image = Image.fromarray(((ramp[None, :] + ramp[:, None]) / 2).astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def png_rgba(size: int = 6000) -> bytes:
    """An RGBA PNG with a horizontal alpha ramp."""
    ramp = (np.arange(size) * 255 // (size - 1)).astype(np.uint8)
    pixels = np.empty((size, size, 4), np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = 128
    pixels[..., 3] = ramp[None, ::-1]
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def silence_flac(path: Path, seconds: int = 3600) -> bytes:
    """``seconds`` of 16 kHz mono silence as FLAC (ffmpeg)."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", str(seconds), "-c:a", "flac", str(path)], check=True)
    return path.read_bytes()


# ---- services ---------------------------------------------------------------------------------

def service(package: str, root: Path, env: dict[str, str], timeout_s: float = 600):
    """``python -m package`` from checkout ``root`` on a free port; yields (port, pid)."""
    return serve([python(), "-m", package], env, f"abuse-{package}", timeout_s=timeout_s, cwd=root)


def clip_cases(root: Path, env: dict[str, str], concurrent: bool = True) -> list[Case]:
    """The image, /classify, JSON and body cases against the CLIP server."""
    print("abuse: generating images", flush=True)
    grey16, rgba = png16_grey(), png_rgba()
    small = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(small, "PNG")
    cases = []
    with service("server", root, {"CLIP_MODEL": "demo", **env}) as (port, pid):
        one_grey = multipart("image", "grey16.png", grey16)
        one_rgba = multipart("image", "rgba.png", rgba)
        post(port, "/embed", *multipart("image", "small.png", small.getvalue()))  # warm the path
        cases.append(measure(f"16-bit PNG ({len(grey16) // 1024} KB)", pid,
                             lambda: [post(port, "/embed", *one_grey)]))
        cases.append(measure(f"RGBA PNG ({len(rgba) // 1024} KB)", pid, lambda: [post(port, "/embed", *one_rgba)]))
        if concurrent:
            cases.append(measure("16 x 16-bit PNG at once", pid,
                                 lambda: at_once(16, lambda: post(port, "/embed", *one_grey))))
        bomb = json.dumps({"images": [base64.b64encode(small.getvalue()).decode()], "labels": ["x" * 1024] * 3,
                           "template": "{}" * 100_000}).encode()
        cases.append(measure("/classify template bomb", pid,
                             lambda: [post(port, "/classify", bomb, "application/json")]))
        deep = b'{"texts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        cases.append(measure("JSON nested 50,000 deep", pid, lambda: [post(port, "/embed", deep, "application/json")]))
        cases.append(measure("chunked 40 MiB body", pid,
                             lambda: [chunked_post(port, "/embed", 40 * MIB, "application/octet-stream")]))
    return cases


def audio_cases(root: Path, env: dict[str, str], concurrent: bool = True) -> list[Case]:
    """One hour of silence as FLAC, once and 8 at once, against the Whisper worker."""
    with tempfile.TemporaryDirectory() as tmp:
        flac = silence_flac(Path(tmp) / "silence.flac")
    body = multipart("audio", "silence.flac", flac)
    cases = []
    with service("worker", root, {"WHISPER_MODEL": "tiny.en", **env}) as (port, pid):
        cases.append(measure(f"1 h silence FLAC ({len(flac) // 1024} KB)", pid,
                             lambda: [post(port, "/transcribe", *body)]))
        if concurrent:
            cases.append(measure("8 x 1 h FLAC at once", pid,
                                 lambda: at_once(8, lambda: post(port, "/transcribe", *body))))
    return cases


def table(cases: list[Case], title: str) -> str:
    """Markdown: answers, peak and retained RSS growth, and the issue's targets."""
    lines = [f"#### {title}", "", "| request | answers | peak RSS growth MiB | retained MiB | seconds | target |",
             "|---|---|---:|---:|---:|---|"]
    for case in cases:
        key = next((k for k in TARGETS if case.name.startswith(k)), None)
        goal = ""
        if key:
            peak_goal, kept_goal = TARGETS[key]
            met = case.peak_mb <= peak_goal and (kept_goal is None or case.retained_mb <= kept_goal)
            goal = f"peak <= {peak_goal}" + (f", kept <= {kept_goal}" if kept_goal else "") + (
                ": met" if met else ": MISSED")
        elif "template" in case.name:
            goal = "400: " + ("met" if case.statuses == [400] else "MISSED")
        elif "JSON" in case.name:
            goal = "400: " + ("met" if case.statuses == [400] else "MISSED")
        elif "chunked" in case.name:
            goal = "413: " + ("met" if case.statuses == [413] else "MISSED")
        lines.append(f"| {case.name} | {summary(case.statuses)} | {case.peak_mb:.0f} | {case.retained_mb:.0f} "
                     f"| {case.seconds:.1f} | {goal} |")
    return "\n".join(lines)


def run(repeats: int = 1, root: Path = ROOT, env: dict[str, str] | None = None, audio: bool = True,
        concurrent: bool = True, images: bool = True) -> str:
    """All abuse cases once (memory, not speed: repeats do not apply); returns the markdown table."""
    env = env or {}
    cases = clip_cases(root, env, concurrent) if images else []
    if audio:
        cases += audio_cases(root, env, concurrent)
    label = "" if root == ROOT else f" ({root})"
    extra = f", {' '.join(f'{k}={v}' for k, v in env.items())}" if env else ""
    return table(cases, f"Abuse: hostile but valid requests, RSS of the service's process tree{label}{extra}")


def main() -> None:
    """CLI for before/after runs against another checkout or settings."""
    parser = argparse.ArgumentParser(prog="python -m bench.abuse_bench")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose services to start")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the services")
    parser.add_argument("--skip-audio", action="store_true")
    parser.add_argument("--skip-images", action="store_true", help="only the Whisper worker's cases")
    # An old checkout held 12 GiB for the 16 concurrent PNGs: leave those out on a shared machine.
    parser.add_argument("--skip-concurrent", action="store_true", help="only the one-request cases")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    print("\n" + run(root=args.root.resolve(), env=env, audio=not args.skip_audio,
                      concurrent=not args.skip_concurrent, images=not args.skip_images))


if __name__ == "__main__":
    main()
