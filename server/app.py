"""The CLIP embedding server, declared: the core builds its app, launcher, job and contract from this."""

from __future__ import annotations

from core.declaration import Declaration, JobDeclaration, Option
from server.backends import make_backend
from server.events import image_handler
from server.job import embed_image
from server.schemas import PREPROCESSING_PROPERTY
from server.service import ClipService
from server.settings import ServerSettings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

CLIP = Declaration(
    name="clip", package="server", service_name="clip-server", title="CLIP embedding server",
    description="Embeddings and zero-shot classification with a CLIP model.",
    settings=ServerSettings, make_backend=make_backend,
    make_service=lambda runner, settings, budget: ClipService(runner, settings, memory_budget=budget),
    routes=("server.routes", "server.openai_routes"), units=("images", "texts"),
    events=image_handler,
    # A job has no request latency to protect, so MAX_BATCH_SIZE=auto means the largest batch that
    # still pays on a CPU too (the bare model's best on this project's bench); a GPU's auto is 32 anyway.
    job=JobDeclaration(suffixes=IMAGE_SUFFIXES, unit="images", run=embed_image, batch_size=32),
    # One request-handling process per vCPU on a GPU instance, each with its own replica
    # (core.gunicorn_conf.default_worker_count); WEB_WORKERS overrides.
    processes_per_gpu=None,
    options=(Option("--model", "CLIP_MODEL", "CLIP_MODEL: demo, vit-b-32, ViT-L-14, hf:ORG/NAME, ..."),
             Option("--pretrained", "CLIP_PRETRAINED", "CLIP_PRETRAINED: openai, a tag, a checkpoint path, random"),
             Option("--device", "CLIP_DEVICE", "CLIP_DEVICE: auto, cuda, cpu")),
    health_properties=PREPROCESSING_PROPERTY,
)
create_app = CLIP.create_app  # gunicorn's entry: server.app:create_app()
