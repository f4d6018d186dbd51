"""Feeding the GPU (issue 10): CPU per request in-process, and the simulated accelerator under load.

(i) In-process CPU per 224-px PNG ``/embed`` request with an instant stand-in model
    (``CLIP_MODEL=sim:ViT-B-32`` with zero simulated time: real 224-px preprocessing, 512-d
    outputs). The app is driven with Flask's test client on this thread; a WSGI wrapper takes
    ``time.thread_time()`` around the whole app call (werkzeug parsing, Flask, hooks, logging, the
    route, rendering), so the client's own work and the model thread are outside it. Manual timers
    split it: multipart parse (``read_inputs``), decode + preprocess (``backend.preprocess``), JSON
    encode (vector conversion + rendering), the rest. Rendering is measured twice: as before
    (json module via ``jsonify``) and as now (orjson), plus ``encoding_format=base64``.
(ii) The simulated accelerator at concurrency 64 on 224-px PNGs over real gunicorn: one process
    (today's default) against several processes per GPU, each with its own replica and all sharing
    the simulated GPU's lock (design (a)). Reports throughput, the simulated GPU's busy fraction and
    the mean batch, the server's CPU per request (user + system of gunicorn's master and workers:
    HTTP parsing, the app, the batcher) and the load generator's (it shares this machine's cores),
    with the L4 timing (CPU-bound here) and a slow GPU (GPU-bound). GPU busy is given twice: the
    modelled GPU time (a + b x n summed) over wall time, and the time the lock was held, which is
    larger when a loaded host wakes the sleeping forward late.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack, redirect_stdout
from pathlib import Path

import psutil

from bench import model_process
from bench.harness import Row, drive, interleave, multipart, python, serve
from tests.media import encode, photo_like

CONCURRENCY = 64
WORKER_COUNTS = (1, 2, 4)
L4_TIMING = {"SIM_BATCH_BASE_MS": "3.0", "SIM_PER_ITEM_MS": "0.25"}
SLOW_GPU = {"SIM_BATCH_BASE_MS": "3.0", "SIM_PER_ITEM_MS": "10.0"}  # ~100 images/s: below what the CPU feeds


def make_pngs(count: int) -> list[bytes]:
    """Distinct photo-like 224-px PNGs."""
    return [encode(photo_like(224, 224, seed=n), "PNG") for n in range(count)]


class _Timers(threading.local):
    def __init__(self):
        self.parts: dict[str, float] = {}


def _timed(timers: _Timers, part: str, function):
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            timers.parts[part] = timers.parts.get(part, 0.0) + time.thread_time() - started
    return wrapper


def thread_cpu_per_call(wsgi_app, samples: list[float], before_each=lambda: None):
    """``wsgi_app`` wrapped to append each call's thread CPU seconds (response body included) to ``samples``."""
    def measured(environ, start_response):
        before_each()
        started = time.thread_time()
        body = b"".join(wsgi_app(environ, start_response))
        samples.append(time.thread_time() - started)
        return [body]
    return measured


def cpu_per_request(requests: int = 200) -> str:
    """Median thread CPU per 224-px PNG /embed request, in-process, by rendering mode and part."""
    from flask import jsonify

    from server import routes, service
    from server.app import create_app
    from server.settings import ServerSettings

    lock = Path(tempfile.mkdtemp()) / "sim.lock"
    settings = ServerSettings.from_env({}, clip_model="sim:ViT-B-32", sim_batch_base_ms=0.0, sim_per_item_ms=0.0,
                                       sim_lock_path=str(lock), log_level="INFO")
    app = create_app(settings)
    client = app.test_client()
    while client.get("/health").status_code != 200:
        time.sleep(0.05)
    backend = app.extensions["service"].runner.backend
    timers = _Timers()
    totals: list[float] = []
    inner = app.wsgi_app
    app.wsgi_app = thread_cpu_per_call(inner, totals, before_each=lambda: setattr(timers, "parts", {}))
    originals = (routes.read_inputs, backend.preprocess, service.encode_vector, routes.json_response)
    routes.read_inputs = _timed(timers, "multipart parse", routes.read_inputs)
    backend.preprocess = _timed(timers, "decode + preprocess", backend.preprocess)
    service.encode_vector = _timed(timers, "JSON encode", service.encode_vector)
    pngs = make_pngs(20)
    modes = {"before: json module (jsonify)": (lambda body: jsonify(body), ""),
             "now: orjson": (originals[3], ""),
             "now: encoding_format=base64": (originals[3], "?encoding_format=base64")}
    results: dict[str, tuple[list[float], dict[str, list[float]]]] = {}
    log_sink = io.StringIO()

    # Log lines are formatted and written as in production (to sys.stdout), here into a buffer.
    try:
        stack = ExitStack()
        stack.enter_context(redirect_stdout(log_sink))
        for label, (render, query) in modes.items():
            routes.json_response = _timed(timers, "JSON encode", render)
            bodies = [multipart("image", "photo.png", data) for data in pngs]
            parts: dict[str, list[float]] = {}
            totals.clear()
            for n in range(requests + 20):
                body, content_type = bodies[n % len(bodies)]
                response = client.post("/embed" + query, data=body, content_type=content_type)
                assert response.status_code == 200, response.get_data()[:200]
                if n >= 20:  # warm-up
                    for part, seconds in timers.parts.items():
                        parts.setdefault(part, []).append(seconds)
            results[label] = (totals[20:], parts)
    finally:
        routes.read_inputs, backend.preprocess, service.encode_vector, routes.json_response = originals
        app.wsgi_app = inner
        stack.close()
    names = ("multipart parse", "decode + preprocess", "JSON encode")
    lines = ["#### In-process CPU per 224-px PNG /embed request (instant stand-in model, thread CPU, median)", "",
             f"Flask test client, {requests} requests per mode after 20 warm-up; `time.thread_time()` around the "
             "WSGI app call on the request thread (the model thread is outside it).", "",
             "| rendering | total ms | vs before | " + " | ".join(f"{n} ms" for n in names) + " | rest ms |",
             "|---|---:|---:|" + "---:|" * (len(names) + 1)]
    before = statistics.median(results["before: json module (jsonify)"][0])
    for label, (samples, parts) in results.items():
        total = statistics.median(samples)
        medians = [statistics.median(parts.get(name, [0.0])) for name in names]
        lines.append(f"| {label} | {total * 1000:.2f} | {total / before:.2f}x | "
                     + " | ".join(f"{m * 1000:.2f}" for m in medians) + f" | {(total - sum(medians)) * 1000:.2f} |")
    decode, empty = floor(pngs, requests)
    lines += ["", f"Floor, measured the same way: Pillow's PNG open + load alone {decode * 1000:.2f} ms, and an empty "
              f"Flask route (no hooks, body unread) {empty * 1000:.2f} ms: {(decode + empty) * 1000:.2f} ms, "
              f"{(decode + empty) / before:.0%} of the before row, before parsing, normalising, batching, "
              "logging or answering."]
    return "\n".join(lines)


def floor(pngs: list[bytes], requests: int) -> tuple[float, float]:
    """Median thread CPU of what no server of these images can skip: (PNG decode, an empty Flask request)."""
    from flask import Flask
    from PIL import Image

    decodes = []
    for n in range(requests + 20):
        started = time.thread_time()
        Image.open(io.BytesIO(pngs[n % len(pngs)])).load()
        decodes.append(time.thread_time() - started)
    app = Flask("floor")
    app.add_url_rule("/embed", "embed", lambda: ("{}", 200, {"Content-Type": "application/json"}), methods=["POST"])
    requests_s: list[float] = []
    app.wsgi_app = thread_cpu_per_call(app.wsgi_app, requests_s)
    client = app.test_client()
    bodies = [multipart("image", "photo.png", data) for data in pngs]
    for n in range(requests + 20):
        body, content_type = bodies[n % len(bodies)]
        client.post("/embed", data=body, content_type=content_type)
    return statistics.median(decodes[20:]), statistics.median(requests_s[20:])


def warm_up(port: int, bodies: list, timeout_s: float = 60.0) -> None:
    """Load until every request succeeds: every worker has loaded, connections and caches are warm."""
    # /health answers from whichever worker takes the connection: 200 from one worker while another
    # is still loading its replica (503 not_ready), so readiness of all of them is seen only here.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            drive(port, "/embed", bodies, CONCURRENCY)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def server_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds so far of the server's process trees (gunicorn's, a model process)."""
    total = 0.0
    for pid in pids:
        for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
    return total


def busy_fraction_run(port: int, pids: list[int], bodies: list, lock_path: str, busy: list[tuple],
                      cpu: list[tuple]):
    """One load run that also notes the simulated GPU's busy fraction and the server's CPU per request."""
    from server.backends.sim import read_busy

    def run():
        before, cpu_before, client_before = read_busy(lock_path), server_cpu_s(pids), time.process_time()
        result = drive(port, "/embed", bodies, CONCURRENCY)
        after, served = read_busy(lock_path), len(result.latencies_s)
        busy.append(((after[1] - before[1]) / result.wall_s, (after[0] - before[0]) / result.wall_s))
        cpu.append(((server_cpu_s(pids) - cpu_before) / served, (time.process_time() - client_before) / served,
                    (after[3] - before[3]) / max(1, after[2] - before[2])))
        return result
    return run


def _design_a(stack: ExitStack, timing: dict, workers: int) -> tuple[str, int, list[int], str]:
    """Design (a): ``workers`` gunicorn processes, a replica each; (label, port, pids, lock path)."""
    lock = str(Path(tempfile.mkdtemp()) / "sim.lock")
    env = {"CLIP_MODEL": "sim:ViT-B-32", "SIM_LOCK_PATH": lock, "WEB_WORKERS": str(workers),
           "WEB_THREADS": str(CONCURRENCY), "MAX_QUEUE": "1024", **timing}
    name = f"feed-sim-{timing['SIM_PER_ITEM_MS']}ms-{workers}w"
    port, pid = stack.enter_context(serve([python(), "-m", "server"], env, name))
    label = f"(a) {workers} gunicorn process{'es, a replica each' if workers > 1 else ''}"
    return label, port, [pid], lock


def _design_b(stack: ExitStack, timing: dict, workers: int) -> tuple[str, int, list[int], str]:
    """Design (b): ``workers`` request processes feeding one model process (bench/model_process.py)."""
    lock = str(Path(tempfile.mkdtemp()) / "sim.lock")
    env = {"CLIP_MODEL": "sim:ViT-B-32", "SIM_LOCK_PATH": lock, "MAX_QUEUE": "1024", **timing}
    name = f"feed-sim-{timing['SIM_PER_ITEM_MS']}ms-{workers}w-b"
    socket_path, model_pid = stack.enter_context(model_process.model_process(env, f"{name}-model"))
    port, pid = stack.enter_context(serve(model_process.request_argv(), {
        **env, "WEB_WORKERS": str(workers), "WEB_THREADS": str(CONCURRENCY),
        model_process.MODEL_SOCKET_ENV: socket_path}, name))
    return f"(b) {workers} request processes + 1 model process", port, [pid, model_pid], lock


def simulated_gpu(repeats: int, requests: int = 640) -> str:
    """Throughput and simulated GPU busy fraction: one gunicorn process vs several per GPU, (a) vs (b)."""
    pngs = make_pngs(64)
    bodies = [multipart("image", "photo.png", pngs[n % len(pngs)]) for n in range(requests)]
    out = []
    scenarios = (("L4 timing (3 ms + 0.25 ms/image: ~2,900 images/s at batch 32)", L4_TIMING,
                  [(_design_a, n) for n in WORKER_COUNTS] + [(_design_b, n) for n in (2, 4)]),
                 ("slow simulated GPU (3 ms + 10 ms/image: ~100 images/s)", SLOW_GPU,
                  [(_design_a, 1), (_design_a, 2), (_design_b, 2)]))
    for title, timing, configurations in scenarios:
        rows: list[tuple[Row, list[tuple], list[tuple]]] = []
        runs = []
        with ExitStack() as stack:
            for design, workers in configurations:
                label, port, pids, lock = design(stack, timing, workers)
                warm_up(port, bodies[:128])
                row, busy, cpu = Row(label), [], []
                rows.append((row, busy, cpu))
                runs.append((row, busy_fraction_run(port, pids, bodies, lock, busy, cpu)))
            interleave(repeats, runs)
        baseline = rows[0][0]
        lines = [f"#### Simulated accelerator, {title}, concurrency {CONCURRENCY}, 224-px PNGs", "",
                 "(a): each gunicorn process has its own replica and batcher. (b): request processes send their "
                 "batches to one model process, whose batcher merges them (`bench/model_process.py`). Server CPU "
                 "counts every server process: gunicorn's master and workers, and (b)'s model process.", "",
                 "| configuration | images/s (median) | vs 1 process | GPU busy: modelled | lock held | mean batch "
                 "| server CPU ms/request | client CPU ms/request | p50 ms | p99 ms |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row, busy, cpu in rows:
            server_ms, client_ms, batch = (statistics.median(values) for values in zip(*cpu))
            modelled, held = (statistics.median(values) for values in zip(*busy))
            lines.append(f"| {row.label} | {row.rate:.1f} | {row.rate / baseline.rate:.2f}x | "
                         f"{modelled:.0%} | {held:.0%} | {batch:.1f} | {server_ms * 1000:.2f} | "
                         f"{client_ms * 1000:.2f} | {row.percentile(50) * 1000:.0f} | "
                         f"{row.percentile(99) * 1000:.0f} |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def run(repeats: int = 3) -> str:
    """Both measurements; returns the markdown tables."""
    return "\n\n".join([cpu_per_request(), simulated_gpu(repeats)])
