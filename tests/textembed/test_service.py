"""``python -m textembed`` through real gunicorn on loopback: the README's curl and openai-SDK examples,
batching across concurrent requests, and the doors the core gives every declared service
(callback_url, /events/pubsub, the batch job)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from openai import OpenAI

from tests.conftest import ROOT
from tests.core.test_metrics import scrape, total
from tests.readme_examples import README, code_blocks, run_examples
from tests.textembed.conftest import LONG, SHORT

pytestmark = pytest.mark.integration


def embed(url: str, texts: list[str]) -> list[list[float]]:
    answer = requests.post(url + "/embed", json={"texts": texts}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["embeddings"]


def test_the_readme_examples_answer_as_printed(textembed_service, tmp_path):
    embedded, models = run_examples(5003, textembed_service.url, tmp_path)
    body = json.loads(embedded[1])
    assert body["model"] == "all-MiniLM-L6-v2" and body["dim"] == 384 and len(body["embeddings"]) == 2
    assert body["usage"] == {"tokens": 14}  # as the README prints it
    assert json.loads(models[1])["data"][0]["id"] == "all-MiniLM-L6-v2"
    (snippet,) = [block for block in code_blocks(README.read_text(), "python") if "localhost:5003/v1" in block]
    printed = subprocess.run([sys.executable, "-c", snippet.replace("http://localhost:5003", textembed_service.url)],
                             capture_output=True, text=True, timeout=60)
    assert printed.stdout.split() == ["2", "384", "14"], printed.stderr


def test_the_openai_sdk_works_unchanged_and_its_base64_default_gives_the_same_vectors(textembed_service):
    client = OpenAI(base_url=textembed_service.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    result = client.embeddings.create(input=SHORT, model="all-MiniLM-L6-v2")  # the SDK asks for base64
    assert [d.index for d in result.data] == list(range(len(SHORT)))
    assert np.allclose([d.embedding for d in result.data], embed(textembed_service.url, SHORT), atol=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(SHORT)
    assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]
    raw = requests.post(textembed_service.url + "/v1/embeddings", timeout=60,
                        json={"input": "a cat", "encoding_format": "base64"}).json()["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(raw), dtype="<f4").shape == (384,)


def test_concurrent_requests_share_forward_calls(textembed_service):
    def stats() -> dict:  # /metrics adds up the worker processes (a process per vCPU here: cpus_per_process)
        samples = scrape(textembed_service.url, headers={})
        return {name: total(samples, f"inference_batch_size_{name}") for name in ("sum", "count")}

    before = stats()
    texts = (SHORT + LONG) * 4
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda text: embed(textembed_service.url, [text]), texts))
    after = stats()
    assert after["sum"] - before["sum"] == len(texts)
    assert after["count"] - before["count"] < len(texts) / 2  # batched across requests


def test_callback_url_delivers_the_same_answer_signed(textembed_service, receiver):
    answer = requests.post(textembed_service.url + "/embed", timeout=60,
                           json={"texts": SHORT[:2], "callback_url": receiver.url("/done")})
    assert answer.status_code == 202, answer.text
    (delivery,) = receiver.wait_for(1)
    body = json.loads(delivery.body)
    assert delivery.signature_ok and body["status"] == "succeeded" and body["job_id"] == answer.json()["job_id"]
    assert np.allclose(body["embeddings"], embed(textembed_service.url, SHORT[:2]), atol=1e-6)


def test_an_event_embeds_a_text_object_into_a_result_file(textembed_service):
    source = textembed_service.events_in / "notes" / "a.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text('"first line"\n{"text": "second line"}\n')
    push = {"message": {"data": base64.b64encode(json.dumps({"input": source.as_uri()}).encode()).decode(),
                        "messageId": "m-1"}, "subscription": "projects/p/subscriptions/textembed-events"}
    answer = requests.post(textembed_service.url + "/events/pubsub", json=push, timeout=60)
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text
    (path,) = answer.json()["results"]
    result = json.loads(open(path).read())
    assert path.startswith(str(textembed_service.events_out / "textembed" / "notes" / "a.jsonl@"))
    assert np.allclose(result["embeddings"], embed(textembed_service.url, ["first line", "second line"]), atol=1e-6)


def test_the_batch_job_embeds_a_folder_of_text_files(models_dir, tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    (source / "sub").mkdir(parents=True)
    (source / "one.txt").write_text(SHORT[0])
    (source / "sub" / "many.jsonl").write_text("\n".join(json.dumps(t) for t in SHORT[1:]) + "\n")
    (source / "broken.jsonl").write_text("{not json\n")
    env = {**os.environ, "MODELS_DIR": models_dir, "LOG_LEVEL": "WARNING"}
    task = subprocess.run([sys.executable, "-m", "textembed.job", "--input", str(source), "--output", str(output)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert task.returncode == 1, task.stderr  # one input failed, so the task says so
    lines = {r["path"]: r for r in map(json.loads, (output / "part-00000-of-00001.jsonl").read_text().splitlines())}
    assert sorted(lines) == ["one.txt", "sub/many.jsonl"]
    assert len(lines["one.txt"]["embeddings"]) == 1 and len(lines["sub/many.jsonl"]["embeddings"]) == len(SHORT) - 1
    (failure,) = map(json.loads, (output / "failures" / "part-00000-of-00001.jsonl").read_text().splitlines())
    assert failure["path"] == "broken.jsonl" and failure["error"]["code"] == "invalid_text_file"


def test_the_app_code_is_at_most_100_lines():
    # The command docs/add-a-model.md prints: non-blank, non-comment lines of textembed/, tests apart.
    command = "grep -hv '^\\s*\\(#\\|$\\)' textembed/*.py | wc -l"
    lines = int(subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert 0 < lines <= 100
