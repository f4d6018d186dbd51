"""Baseline (c) for the CLIP benchmark: the server most CLIP deployment guides ship.

One request at a time (gunicorn sync worker, one process), full-resolution decode with PIL,
open_clip's reference transform, batch size 1, model loaded at import. Benchmarks only.
"""

import io

import open_clip
import torch
from flask import Flask, jsonify, request
from PIL import Image

model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
model.eval()
app = Flask(__name__)


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/embed")
def embed():
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
    with torch.no_grad():
        vector = model.encode_image(preprocess(image).unsqueeze(0))
        vector = vector / vector.norm(dim=-1, keepdim=True)
    return jsonify({"embedding": vector[0].tolist()})
