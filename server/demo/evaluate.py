"""Held-out zero-shot classification of generated shapes among all colour x shape captions."""

import torch

from server.demo.shapes import all_captions, all_classes, held_out_set


@torch.no_grad()
def zero_shot_accuracy(model, preprocess, tokenizer, n, seed):
    """Return the fraction of n held-out pictures whose nearest caption is the right one."""
    model.eval()
    text = model.encode_text(tokenizer(all_captions()), normalize=True)
    samples = held_out_set(seed, n)
    images = torch.stack([preprocess(image) for image, _, _ in samples])
    predicted = (model.encode_image(images, normalize=True) @ text.T).argmax(dim=1)
    index = {cls: i for i, cls in enumerate(all_classes())}
    truth = torch.tensor([index[(color, shape)] for _, color, shape in samples])
    return (predicted == truth).float().mean().item()
