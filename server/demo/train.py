"""Train ShapesCLIP-Tiny from scratch on generated shapes: python -m server.demo.train [--out DIR]."""

import argparse
import contextlib
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from server.demo import MODEL_NAME, checkpoint_path, config_path, register
from server.demo.evaluate import zero_shot_accuracy
from server.demo.shapes import TRAIN_STREAM, all_classes, draw_shape, random_caption, random_size

# A fixed thread count: float reductions (and so the weights) depend on it.
NUM_THREADS = 2
PER_CLASS = 2  # pictures of each (colour, shape) class in every batch
LR = 3e-3
WEIGHT_DECAY = 0.05
WARMUP_STEPS = 40
EVAL_SEED = 0


@contextlib.contextmanager
def _deterministic_torch(seed):
    """Seed torch and force deterministic single-configuration CPU kernels, restoring after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)
    # NaN-filling fresh tensors is a debugging aid of deterministic mode, a
    # quarter of CPU time here; the kernels chosen stay deterministic without it.
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _create(pretrained=None):
    """Create model, eval preprocess and tokenizer through open_clip's normal factory."""
    import open_clip

    register()
    # open_clip warns about random init when there is no checkpoint: that is the point here.
    logging.disable(logging.WARNING)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            MODEL_NAME, pretrained=pretrained and str(pretrained))
    finally:
        logging.disable(logging.NOTSET)
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)


def _batch(rng, preprocess, tokenizer):
    """Return images, caption tokens and class labels: every class PER_CLASS times."""
    images, texts, labels = [], [], []
    for _ in range(PER_CLASS):
        for label, (color, shape) in enumerate(all_classes()):
            images.append(preprocess(draw_shape(color, shape, rng, size=random_size(rng))))
            texts.append(random_caption(color, shape, rng))
            labels.append(label)
    return torch.stack(images), tokenizer(texts), torch.tensor(labels)


def clip_loss(image_features, text_features, logit_scale, labels):
    """Symmetric CLIP loss whose targets spread over all pairs of the same class."""
    logits = logit_scale * image_features @ text_features.T
    # Same-class captions in the batch are positives, not false negatives.
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _optimizer(model):
    """AdamW; weight decay on weight matrices only, not on biases, norm gains or logit_scale."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": rest, "weight_decay": 0.0}], lr=LR, fused=True)


def _lr_at(step, steps):
    """Linear warmup, then cosine decay to zero."""
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return LR * 0.5 * (1 + math.cos(math.pi * progress))


def save_fp16(model, path):
    """Write the model's weights as float16 safetensors."""
    from safetensors.torch import save_file

    # Only floating tensors: integer buffers (e.g. batch-norm counters) keep their dtype.
    state = {k: (v.to(torch.float16) if v.is_floating_point() else v).detach().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path))


def train(out_dir, steps, seed, log_every=50):
    """Train from scratch with `seed`; write config + fp16 weights into out_dir; return the weights path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _deterministic_torch(seed):
        model, preprocess, tokenizer = _create()
        rng = np.random.default_rng([TRAIN_STREAM, seed])
        optimizer = _optimizer(model)
        model.train()
        start = time.time()
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps)
            images, texts, labels = _batch(rng, preprocess, tokenizer)
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(texts, normalize=True)
            loss = clip_loss(image_features, text_features, model.logit_scale.exp(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                # As in CLIP: cap the temperature at 100 so logits stay sane.
                model.logit_scale.clamp_(0, math.log(100))
            if log_every and (step % log_every == 0 or step == steps - 1):
                print(f"step {step:5d}/{steps}  loss {loss.item():.4f}  "
                      f"scale {model.logit_scale.exp().item():6.2f}  {time.time() - start:6.1f}s",
                      flush=True)
    weights = out_dir / f"{MODEL_NAME}.safetensors"
    save_fp16(model, weights)
    if config_path().resolve() != (out_dir / config_path().name).resolve():
        shutil.copyfile(config_path(), out_dir / config_path().name)
    return weights


def main(argv=None):
    """Command line entry point: train, save, then report held-out zero-shot accuracy."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(checkpoint_path().parent), help="output directory")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-n", type=int, default=480, help="held-out pictures (0: skip)")
    args = parser.parse_args(argv)
    start = time.time()
    weights = train(args.out, args.steps, args.seed)
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) in {time.time() - start:.1f}s")
    if args.eval_n:
        # Evaluate what was written (fp16, reloaded by open_clip), not the fp32 model in memory.
        model, preprocess, tokenizer = _create(pretrained=weights)
        accuracy = zero_shot_accuracy(model, preprocess, tokenizer, args.eval_n, EVAL_SEED)
        print(f"held-out zero-shot accuracy: {accuracy:.4f} on {args.eval_n} pictures")


if __name__ == "__main__":
    main()
