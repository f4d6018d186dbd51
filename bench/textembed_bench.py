"""Text embeddings (issue 21): textembed against infinity and the bare model, all-MiniLM-L6-v2 on CPU.

(a) the bare model: sentence-transformers ``encode`` in its own process, batch 32 (the ceiling), with
    OMP_WAIT_POLICY=PASSIVE as textembed has it (with libgomp's spinning default its rate collapses
    whenever other processes want this machine's CPUs), in the precision textembed picks on this CPU
    (TEXTEMBED_DTYPE=auto: bfloat16 where the CPU has native bf16), so the ratio is the serving's cost;
(b) textembed: ``python -m textembed`` (real gunicorn, this machine's defaults), its ``/v1/embeddings``;
(c) infinity (``infinity-emb[server,torch]`` 0.0.78, ``infinity_emb v2 ... --engine torch --device cpu``),
    its ``/v1/embeddings``, serving the same baked folder, with its defaults (float32 on a CPU), and
(d) the same with ``--dtype`` set to textembed's precision when that is not float32: what part of
    the ratio is precision and what part is serving. infinity pins its own torch and
    transformers, so it lives in a venv of its own, made on first use under .cache/bench-infinity
    (git-ignored; a few minutes and a few GB). If it cannot be installed or started, its rows say so.
One text per request at concurrency 32. Short texts are 5-15 words, long ones 200-256 tokens; every
text is different (each round gets its own, the same for every configuration of that round), and
neither server caches vectors. Per-request server CPU: user + system seconds of the server's whole
process tree (psutil, from outside) over a run of single-text requests, beside CLIP's 224-px image
(``python -m server``, ViT-B-32, random weights). Run alone: ``python -m bench textembed``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from bench.harness import ROOT, LoadResult, Row, drive, interleave, multipart, python, serve, table, target, tree_cpu_s

CONCURRENCY = 32
MODEL = "all-MiniLM-L6-v2"
N_SHORT, N_LONG, N_CPU = 320, 96, 64  # texts per round (short, long); requests per CPU run
CACHE = ROOT / ".cache"
MODELS_DIR = CACHE / "bench-models"
INFINITY_VENV = CACHE / "bench-infinity"
INFINITY_PIN = "infinity-emb[server,torch]==0.0.78"
# infinity's environment: offline, no usage statistics, and its .infinity_cache (which it makes in the
# working directory otherwise, i.e. the checkout) under its venv.
INFINITY_ENV = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "INFINITY_HOME": str(INFINITY_VENV)}
WORDS = ("time year people way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government number "
         "night point home water room mother area money story fact month lot right study book eye job word "
         "business issue side kind head house service friend father power hour game line end member law car "
         "city community name president team minute idea kid body information back parent face others level "
         "office door health person art war history party result change morning reason research girl guy "
         "moment air teacher force education river bridge market garden engine winter summer village letter "
         "doctor music picture table window street answer island energy forest harbour paper train").split()
VERBS = ("finds makes takes gives tells shows brings keeps leaves meets holds builds reads writes opens "
         "closes changes follows starts moves carries reaches sends describes measures").split()
ADJECTIVES = ("new old good great small large long young important public bad different early local late "
              "hard major better economic strong possible whole free military true federal quiet bright "
              "careful sudden narrow distant").split()


def sentence(rng: random.Random, words: int) -> str:
    """A sentence of about ``words`` words, varied by ``rng``."""
    out = [rng.choice(("the", "a", "every", "one")), rng.choice(ADJECTIVES), rng.choice(WORDS), rng.choice(VERBS)]
    while len(out) < words:
        out += [rng.choice(("the", "a", "their", "this")), rng.choice(ADJECTIVES + WORDS), rng.choice(WORDS)]
        if rng.random() < 0.3:
            out += [rng.choice(("in", "near", "after", "with", "for")), str(rng.randint(2, 2026))]
    text = " ".join(out[:words])
    return text[0].upper() + text[1:] + "."


def make_texts(rounds: int, tokenizer_path: Path) -> dict[str, list[list[str]]]:
    """Per round: N_SHORT short texts (5-15 words) and N_LONG long ones (200-256 tokens), all distinct."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()  # the file truncates at 128 tokens
    rng = random.Random(21)
    short = [[sentence(rng, rng.randint(5, 15)) for _ in range(N_SHORT)] for _ in range(rounds)]
    long = []
    for _ in range(rounds):
        texts = []
        while len(texts) < N_LONG:
            goal, parts = rng.randint(200, 256), []
            while True:
                candidate = " ".join(parts + [sentence(rng, rng.randint(8, 20))])
                if len(tokenizer.encode(candidate).ids) > goal:
                    break
                parts.append(candidate[len(" ".join(parts)):].strip())
            text = " ".join(parts)
            if 200 <= len(tokenizer.encode(text).ids) <= 256:  # [CLS] and [SEP] included
                texts.append(text)
        long.append(texts)
    return {"short": short, "long": long}


def bake() -> Path:
    """The model baked once, by textembed's own bake command, into .cache/bench-models."""
    folder = MODELS_DIR / "textembed" / MODEL
    if not (folder / "model.safetensors").is_file():
        subprocess.run([python(), "-m", "textembed.bake"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "MODELS_DIR": str(MODELS_DIR)})
    return folder


def infinity_executable() -> tuple[Path | None, str]:
    """infinity's launcher in its own venv, installed on first use; (None, why) when that fails."""
    executable = INFINITY_VENV / "bin" / "infinity_emb"
    marker = INFINITY_VENV / "installed.txt"
    if executable.is_file() and marker.is_file():
        return executable, ""
    print(f"  installing {INFINITY_PIN} into {INFINITY_VENV} (first use, a few minutes)", flush=True)
    log = ROOT / "bench" / "results" / "infinity-install.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "wb") as out:
        made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(INFINITY_VENV)], stdout=out,
                              stderr=subprocess.STDOUT).returncode == 0
        made = made and subprocess.run([str(INFINITY_VENV / "bin" / "pip"), "install", INFINITY_PIN], stdout=out,
                                       stderr=subprocess.STDOUT).returncode == 0
    if not (made and executable.is_file()):
        return None, f"`pip install {INFINITY_PIN}` failed (see bench/results/infinity-install.log)"
    marker.write_text(INFINITY_PIN + "\n")
    return executable, ""


def openai_bodies(texts: list[str]) -> list[tuple[bytes, str]]:
    """One /v1/embeddings body per text, built once."""
    return [(json.dumps({"model": MODEL, "input": [text]}).encode(), "application/json") for text in texts]


def first_vector(port: int, text: str) -> list[float]:
    """The embedding a server gives one text (a check that both serve the same model)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/embeddings", body=openai_bodies([text])[0][0],
                 headers={"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())["data"][0]["embedding"]


def cpu_per_request(port: int, pid: int, path: str, bodies: list[tuple[bytes, str]], concurrency: int,
                    into: list[float]):
    """A run that notes the server tree's CPU seconds per request."""
    def run() -> LoadResult:
        before = tree_cpu_s(pid)
        result = drive(port, path, bodies, concurrency)
        into.append((tree_cpu_s(pid) - before) / len(result.latencies_s))
        return result
    return run


def cpu_dtype() -> str:
    """The precision textembed runs in on this CPU (TEXTEMBED_DTYPE=auto)."""
    from core.model.backend import BaseBackend

    return BaseBackend.pick_dtype("auto", "cpu")


def bare_encode(folder: str, rounds: list[list[str]]) -> list[float]:
    """Texts/s of sentence-transformers' encode at batch 32, one rate per round (run in its own process)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu").to(getattr(torch, cpu_dtype()))
    model.encode(rounds[0][:32], batch_size=32)  # warm-up
    rates = []
    for texts in rounds:
        started = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True)
        rates.append(len(texts) / (time.perf_counter() - started))
    return rates


def run_bare(folder: Path, texts: list[str]) -> float:
    """One bare-model round in a fresh process (free of the driver's client threads), with the OpenMP wait
    policy textembed uses (core/model/text_embedding.py): spinning threads collapse on a shared machine."""
    out = subprocess.run([python(), "-m", "bench.textembed_bench", str(folder)], input=json.dumps([texts]),
                         cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}).stdout
    return json.loads(out.strip().splitlines()[-1])[0]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def run(repeats: int = 3) -> str:
    """Run everything side by side, round-robin; returns the markdown tables."""
    folder = bake()
    texts = make_texts(repeats, folder / "tokenizer.json")
    infinity, infinity_problem = infinity_executable()
    textembed_argv = [python(), "-m", "textembed"]
    infinity_argv = [str(infinity or "infinity_emb"), "v2", "--model-id", str(folder), "--served-model-name", MODEL,
                     "--url-prefix", "/v1", "--device", "cpu", "--engine", "torch", "--host", "127.0.0.1",
                     "--port", "{port}", "--log-level", "warning"]
    clip_argv = [python(), "-m", "server", "--model", "ViT-B-32", "--pretrained", "random"]
    dtype = cpu_dtype()
    infinity_same = f"infinity --dtype {dtype}"
    rows = {(server, kind): Row(f"({tag}) {server}, concurrency {CONCURRENCY}")
            for tag, server in (("b", "textembed"), ("c", "infinity"), ("d", infinity_same))
            for kind in ("short", "long")}
    bare = Row(f"(a) bare model: encode, batch 32, {dtype}")
    notes = []
    with ExitStack() as stack:
        port, pid = stack.enter_context(serve(textembed_argv, {"MODELS_DIR": str(MODELS_DIR)}, "textembed"))
        servers = {"textembed": (port, pid)}
        if infinity is not None:
            try:
                servers["infinity"] = stack.enter_context(serve(
                    infinity_argv, INFINITY_ENV, "infinity",
                    ready_path="/v1/models"))
            except RuntimeError as err:
                infinity_problem = f"did not start ({err})"
            if "infinity" in servers and dtype != "float32":
                servers[infinity_same] = stack.enter_context(serve(
                    infinity_argv + ["--dtype", dtype], INFINITY_ENV,
                    "infinity-same-dtype", ready_path="/v1/models"))
        clip_port, clip_pid = stack.enter_context(serve(clip_argv, {"WEB_THREADS": "40", "MAX_QUEUE": "512"},
                                                        "clip-server"))
        from tests.media import encode, photo_like

        clip_bodies = [multipart("image", "photo.jpg", encode(photo_like(224, 224, seed=n), "JPEG", quality=90))
                       for n in range(N_CPU // 2)]
        warm = openai_bodies([sentence(random.Random(n), 10) for n in range(64)])
        for port, _ in servers.values():
            drive(port, "/v1/embeddings", warm, CONCURRENCY)  # warm-up: connections, allocator, threads
        drive(clip_port, "/embed", clip_bodies[:8], 8)
        if "infinity" in servers:
            a, b = (first_vector(servers[name][0], texts["long"][0][0]) for name in ("textembed", "infinity"))
            notes.append(f"- Same model: cosine of textembed's and infinity's vector for a long text = "
                         f"{sum(x * y for x, y in zip(a, b)):.4f}.")

        def load(server: str, kind: str):
            port = servers[server][0]
            rounds = {}  # each round gets fresh texts, the same ones for every configuration

            def one():
                number = rounds.setdefault("n", 0)
                rounds["n"] = number + 1
                return drive(port, "/v1/embeddings", openai_bodies(texts[kind][number]), CONCURRENCY)
            return one

        bare_round = iter(range(repeats))
        runs = [(bare, lambda: run_bare(folder, texts["long"][next(bare_round)]))]
        for kind in ("short", "long"):
            for server in servers:
                runs.append((rows[server, kind], load(server, kind)))
        cpu_rows = {}
        cpu_texts = openai_bodies(texts["short"][0][:N_CPU])
        for server, (port, pid) in servers.items():
            if server == infinity_same:
                continue
            for concurrency in (1, CONCURRENCY):
                key = f"{server}, short text, concurrency {concurrency}"
                cpu_rows[key] = (Row(key), [])
                runs.append((cpu_rows[key][0], cpu_per_request(port, pid, "/v1/embeddings", cpu_texts, concurrency,
                                                               cpu_rows[key][1])))
        key = "CLIP server, 224-px JPEG, concurrency 1"
        cpu_rows[key] = (Row(key), [])
        runs.append((cpu_rows[key][0], cpu_per_request(clip_port, clip_pid, "/embed", clip_bodies, 1,
                                                       cpu_rows[key][1])))
        interleave(repeats, runs)
    out = []
    for kind, what in (("short", "short texts (5-15 words)"), ("long", "long texts (200-256 tokens)")):
        kind_rows = [rows["textembed", kind]]
        if "infinity" in servers:
            kind_rows.append(rows["infinity", kind])
        if infinity_same in servers:
            kind_rows.append(rows[infinity_same, kind])
        if kind == "long":
            kind_rows.insert(0, bare)
        base = rows["infinity", kind] if "infinity" in servers else rows["textembed", kind]
        text = table(f"all-MiniLM-L6-v2 on CPU, {what}, one text per request", "texts/s", kind_rows, base)
        if "infinity" not in servers:
            text += f"\n| (c) infinity | {infinity_problem} | | | | |"
        out.append(text)
    lines = ["#### Server CPU per request (user + system of the server's process tree)", "",
             "| request | CPU ms per request (median) | requests/s |", "|---|---:|---:|"]
    for key, (row, values) in cpu_rows.items():
        lines.append(f"| {key} | {ms(statistics.median(values))} | {row.rate:.1f} |")
    out.append("\n".join(lines))
    verdicts = []
    if "infinity" in servers:
        verdicts.append(target("textembed / infinity, short texts, concurrency 32",
                               rows["textembed", "short"].rate / rows["infinity", "short"].rate, 2.0))
        verdicts.append(target("textembed / infinity, long texts, concurrency 32",
                               rows["textembed", "long"].rate / rows["infinity", "long"].rate, 1.3))
    else:
        verdicts.append(f"- textembed / infinity: not measured: infinity {infinity_problem}.")
    if infinity_same in servers:
        for kind in ("short", "long"):
            notes.append(f"- textembed / {infinity_same} (the same precision), {kind} texts: "
                         f"{rows['textembed', kind].rate / rows[infinity_same, kind].rate:.2f}x.")
    verdicts.append(target(f"textembed / bare model (encode, batch 32, {dtype}), long texts",
                           rows["textembed", "long"].rate / bare.rate, 0.85))
    out.append("\n".join(verdicts + notes))
    return "\n\n".join(out)


if __name__ == "__main__":  # the bare model's rounds: `python -m bench.textembed_bench FOLDER` < [[texts]]
    print(json.dumps(bare_encode(sys.argv[1], json.loads(sys.stdin.read()))))
