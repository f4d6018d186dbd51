"""A BERT-family encoder run on packed tokens, for the sentence-embedding path of core/model/text_embedding.py.

transformers' ``BertModel`` pads every text of a batch to the longest and runs ~400 small Python-level
module calls per forward. Short texts pay for both: the matrix products (most of the work) run over
the padding, and the Python between operators holds the GIL the request threads need. Here the
tokens of a batch sit in one (tokens, hidden) matrix with no padding; only attention, which needs
each text's own tokens, is padded per text, and pooling is a per-text sum over the packed rows.
MiniLM, bf16, one thread, 8 short texts a call: 1.36x the texts/s of ``BertModel``; long texts of
similar length (the batch is sorted and chunked first) gain little. Vectors: cosine >= 0.99999 to
``BertModel`` in float32 (tests/core/test_bert.py).

It reads the weights of a loaded ``BertModel`` (absolute positions, token type 0: what
sentence-transformers' BERT models use); ``packs(model)`` says whether a model is one.
"""

from __future__ import annotations

import numpy as np


def packs(model) -> bool:
    """Whether ``model`` is a transformers BERT encoder this module can run."""
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) == "bert"
            and getattr(config, "position_embedding_type", "absolute") == "absolute")


class PackedBert:
    """``PackedBert(model)(ids)``: token-id arrays -> mean-pooled, L2-normalised float32 vectors."""

    def __init__(self, model):
        import torch
        from transformers.activations import ACT2FN

        config, weights = model.config, {name: value.detach() for name, value in model.state_dict().items()}
        self.heads, self.eps, self.act = config.num_attention_heads, config.layer_norm_eps, ACT2FN[config.hidden_act]
        self.device = next(model.parameters()).device
        embeddings = "embeddings."
        self.words = weights[embeddings + "word_embeddings.weight"]
        self.positions = weights[embeddings + "position_embeddings.weight"]
        self.token_type = weights[embeddings + "token_type_embeddings.weight"][0]
        self.embedding_norm = self._pair(weights, embeddings + "LayerNorm")
        self.layers = []
        for n in range(config.num_hidden_layers):
            prefix = f"encoder.layer.{n}."
            qkv = [self._pair(weights, f"{prefix}attention.self.{name}") for name in ("query", "key", "value")]
            self.layers.append((
                tuple(torch.cat(part) for part in zip(*qkv)),  # one product for q, k and v
                self._pair(weights, prefix + "attention.output.dense"),
                self._pair(weights, prefix + "attention.output.LayerNorm"),
                self._pair(weights, prefix + "intermediate.dense"),
                self._pair(weights, prefix + "output.dense"),
                self._pair(weights, prefix + "output.LayerNorm")))

    @staticmethod
    def _pair(weights: dict, name: str) -> tuple:
        return weights[name + ".weight"], weights[name + ".bias"]

    def __call__(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            return self._forward(batch)

    def _forward(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        lengths = torch.tensor([len(ids) for ids in batch], device=self.device)
        texts, longest = len(batch), int(lengths.max())
        ids = torch.from_numpy(np.concatenate(batch).astype(np.int64)).to(self.device)
        real = torch.arange(longest, device=self.device)[None, :] < lengths[:, None]  # (texts, longest)
        slots = torch.nonzero(real.reshape(-1)).squeeze(1)  # packed row -> its slot in the padded layout
        text_of_row, position = slots // longest, slots % longest
        hidden = self.words[ids] + self.positions[position] + self.token_type
        width = hidden.shape[-1]
        hidden = F.layer_norm(hidden, (width,), *self.embedding_norm, self.eps)
        keys = real[:, None, None, :]  # attend to each text's own tokens
        for qkv, output, output_norm, up, down, down_norm in self.layers:
            padded = hidden.new_zeros(texts * longest, 3 * width)
            padded[slots] = F.linear(hidden, *qkv)
            q, k, v = padded.view(texts, longest, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
            context = context.transpose(1, 2).reshape(texts * longest, width)[slots]
            hidden = F.layer_norm(hidden + F.linear(context, *output), (width,), *output_norm, self.eps)
            hidden = F.layer_norm(hidden + F.linear(self.act(F.linear(hidden, *up)), *down), (width,),
                                  *down_norm, self.eps)
        sums = torch.zeros(texts, width, device=self.device).index_add_(0, text_of_row, hidden.float())
        pooled = sums / lengths[:, None]  # sentence-transformers' mean pooling, in float32
        return list(F.normalize(pooled, dim=-1).cpu().numpy())
