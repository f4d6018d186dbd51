"""What every text-embedding service does, one method per operation: check texts, embed texts.

A text model declares a backend (on ``TextBackend``: a text model's CPU defaults) with
``preprocess(kind, text) -> token ids`` (request threads; raises 413 for a text it refuses),
``forward`` returning one L2-normalised vector per text, and ``name``/``dim``;
this service, core/web/text_embedding_routes.py (``/embed``, ``/v1/embeddings``, ``/v1/models``)
and the file readers below give it every door: HTTP, callback_url, events and batch jobs.
"""

from __future__ import annotations

import json
import os

from core import request_context
from core.errors import InvalidInput, PayloadTooLarge
from core.model.backend import GPU_BATCH_SIZE, BaseBackend
from core.model.cpus import cpus_per_worker
from core.model.runner import ModelRunner
from core.web.encoding import encode_vector

TEXT = "text"
TEXT_SUFFIXES = (".txt", ".jsonl")
# Padded tokens per model call on a CPU: a batch is sorted by length and cut into chunks of at most
# this many, each padded only to its own longest text. MiniLM on 1 CPU thread, 32 texts of 200-256
# tokens: 82 ms of CPU per text in one call of 32, 63 ms in four sorted calls of 8 (less padding,
# and the attention scores of a chunk stay in cache). Short texts still go 32 to a call.
CPU_BATCH_TOKENS = 2048
# A text longer than this many characters per token of the model's limit is cut (or refused) before
# tokenising: no token is longer, so a 30 MB text cannot stall a request thread in the tokenizer.
CHARS_PER_TOKEN = 64
# OpenMP's threads (torch on a CPU) spin while they wait for work, libgomp's default. Here the request
# threads (HTTP, JSON, tokenising) need the same CPUs: a spinning thread takes their time, and a torch
# thread that lost its CPU stalls every parallel region at its barrier. MiniLM on 2 CPUs, concurrency
# 32: spinning, 16 ms of server CPU per short text; passive, 6 ms and 1.4x the texts/s. libgomp reads
# this when torch is first imported (in load(), on the batcher thread), so it is set here, at import;
# an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class TextBackend(BaseBackend):
    """BaseBackend with a text model's defaults on a CPU (bench/textembed_bench.py, docs/performance.md).

    A text model implements ``forward_chunk(kind, ids)``: one model call on token-id arrays of
    similar length, one vector per array, in order; ``forward`` sorts and cuts the batch for it.
    """

    def default_batch_size(self) -> int:
        """32 on a GPU and on a CPU: a short text costs little model time, so a batch of 8 spends most of
        its time in per-call overhead (MiniLM on 2 CPUs: 32 gave 1.2x more long texts/s than 8)."""
        return GPU_BATCH_SIZE

    def forward(self, kind, batch: list) -> list:
        """The batch sorted by length, in chunks of at most CPU_BATCH_TOKENS padded tokens on a CPU (one
        chunk on a GPU); outputs in the batch's order."""
        order = sorted(range(len(batch)), key=lambda index: len(batch[index]))
        outputs: list = [None] * len(batch)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (not self.device.startswith("cpu") or
                                        len(batch[order[end]]) * (end + 1 - start) <= CPU_BATCH_TOKENS):
                end += 1
            chunk = order[start:end]
            for index, output in zip(chunk, self.forward_chunk(kind, [batch[index] for index in chunk]), strict=True):
                outputs[index] = output
            start = end
        return outputs

    def forward_chunk(self, kind, batch: list) -> list:
        raise NotImplementedError

    def mean_pooling_encoder(self, model):
        """A loaded transformers encoder -> ``encode(token-id arrays) -> mean-pooled, L2-normalised vectors``
        for ``forward_chunk``: a BERT runs on packed tokens (core/model/bert.py: no padding in its matrix
        products), any other model padded (``padded``), pooled with ``mean_pooled``."""
        from core.model.bert import PackedBert, packs

        if packs(model):
            return PackedBert(model)

        def encode(batch: list) -> list:
            import torch

            ids, mask = self.padded(batch)
            with torch.inference_mode():
                return self.mean_pooled(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        return encode

    def padded(self, batch: list):
        """Token-id arrays -> (ids, attention mask) on ``self.device``: long tensors, zero-padded to the longest."""
        import torch

        lengths = torch.tensor([len(ids) for ids in batch])
        ids = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(ids) for ids in batch], batch_first=True)
        mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def mean_pooled(hidden, mask) -> list:
        """sentence-transformers' mean pooling: the mean of each text's real tokens (``mask``), L2-normalised
        in float32 (a bf16 or fp16 model's sum is taken in float32), one numpy vector per text."""
        import torch

        hidden, mask = hidden.float(), mask[..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return list(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())

    @staticmethod
    def pick_device(setting: str, env: str = "device") -> str:
        """BaseBackend's device; on a CPU, torch's threads use this process's share of the CPUs, counted
        as core/model/cpus.py does (a container's CPU quota, not the host's CPUs as torch would, split
        between gunicorn's workers: a Declaration's ``cpus_per_process``)."""
        device = BaseBackend.pick_device(setting, env)
        if device == "cpu":
            import torch

            torch.set_num_threads(cpus_per_worker())
        return device


class TextEmbeddingService:
    """A text-embedding model's operations on one runner (model + batcher)."""

    def __init__(self, runner: ModelRunner, settings, _memory_budget=None):
        self.runner = runner
        self.max_inputs = settings.max_inputs

    def check(self, texts) -> list[str]:
        """A non-empty list of non-empty strings, at most MAX_INPUTS; 400/413 otherwise."""
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts:
            raise InvalidInput('send texts: a string or a non-empty list of strings, e.g. ["a sentence"]',
                               code="no_input")
        if len(texts) > self.max_inputs:
            raise PayloadTooLarge(f"{len(texts)} texts in one request; the limit is {self.max_inputs} (MAX_INPUTS)",
                                  code="too_many_inputs")
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"text {n} must be a string (token arrays are not taken: the service "
                                   "tokenizes with the model's own tokenizer)", code="invalid_field")
            if not text.strip():
                raise InvalidInput(f"text {n} is empty", code="empty_text")
        return texts

    def embed(self, texts: list[str], encoding_format: str = "float") -> dict:
        """Texts -> one L2-normalised embedding each, in order, and the tokens they took."""
        texts = self.check(texts)
        backend = self.runner.backend
        tokens = 0

        def tokenize_all(raws):  # request thread, before any model time: a refused text costs none
            nonlocal tokens
            ids = [backend.preprocess(TEXT, text) for text in raws]
            tokens = sum(len(one) for one in ids)
            return ids

        vectors = self.runner.run(TEXT, texts, preprocess_all=tokenize_all)
        request_context.count(texts=len(texts), tokens=tokens)
        return {"model": backend.name, "dim": backend.dim, "usage": {"tokens": tokens},
                "embeddings": [encode_vector(vector, encoding_format) for vector in vectors]}

    def embed_file(self, data: bytes, name: str) -> dict:
        """A .txt file (one text) or .jsonl file (a string or {"text": ...} per line) -> its embeddings."""
        try:
            content = data.decode("utf-8")
            if not name.lower().endswith(".jsonl"):
                return self.embed([content])
            lines = [json.loads(line) for line in content.splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidInput(f"{name}: not UTF-8 text or JSON lines ({err})", code="invalid_text_file") from err
        return self.embed([line.get("text") if isinstance(line, dict) else line for line in lines])

    def event_handler(self):
        """The EventHandler of /events/*: one text object -> ``<key>@<generation>.json`` with its embeddings."""

        def run(data: bytes, options: dict, meta: dict) -> dict[str, tuple[bytes, str]]:
            if options:
                raise InvalidInput(f"unknown option '{sorted(options)[0]}'; a text event takes none",
                                   code="unknown_field")
            result = {**meta, **self.embed_file(data, meta["input"])}
            return {"json": (json.dumps(result).encode(), "application/json")}

        return run


def embed_job_input(service: TextEmbeddingService, data: bytes, name: str, _options) -> dict:
    """A batch job's line for one text file (JobDeclaration.run)."""
    return service.embed_file(data, name)
