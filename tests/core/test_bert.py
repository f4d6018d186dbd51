"""core/model/bert.py: a BERT on packed tokens gives transformers' BertModel's mean-pooled vectors.

On the real all-MiniLM-L6-v2 weights and on a small random BERT with another activation, in float32,
for batches that mix lengths (padding is what packing removes, so a mistake would show there), and a
model that is not a BERT keeps transformers' padded forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model.bert import PackedBert, packs
from core.model.text_embedding import TextBackend

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(21)
# [CLS] ... [SEP] of 3 to 120 tokens, and a batch of one text
BATCHES = [[np.asarray([101, *RNG.integers(1000, 9000, n - 2), 102]) for n in (3, 17, 120, 8, 64)],
           [np.asarray([101, 2023, 2003, 102])]]


def reference(model, batch) -> np.ndarray:
    """transformers' forward on the padded batch, mean pooling over the real tokens, L2 norm."""
    lengths = torch.tensor([len(ids) for ids in batch])
    ids = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(ids) for ids in batch], batch_first=True)
    mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def assert_same(model) -> None:
    assert packs(model)
    packed = PackedBert(model)
    for batch in BATCHES:
        got = np.stack(packed(batch))
        assert got.shape == (len(batch), model.config.hidden_size)
        assert (got * reference(model, batch)).sum(axis=1).min() >= 0.99999


def test_minilm_packed_equals_bert_model(textembed_models_dir):
    from transformers import AutoModel

    assert_same(AutoModel.from_pretrained(f"{textembed_models_dir}/textembed/all-MiniLM-L6-v2").eval())


def test_any_bert_shape_and_activation():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=9000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, hidden_act="gelu_new", max_position_embeddings=128)
    assert_same(BertModel(config).eval())


def test_a_model_that_is_not_a_bert_keeps_the_padded_forward():
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    model = RobertaModel(RobertaConfig(vocab_size=9000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=96, max_position_embeddings=130)).eval()
    assert not packs(model)
    backend = TextBackend()
    encode = backend.mean_pooling_encoder(model)
    assert not isinstance(encode, PackedBert)
    batch = BATCHES[0][:2]
    assert (np.stack(encode(batch)) * reference(model, batch)).sum(axis=1).min() >= 0.99999
