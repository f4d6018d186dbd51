"""The text-embedding service, declared: all-MiniLM-L6-v2 (or any sentence-transformers BERT model)."""

from core.declaration import Declaration, JobDeclaration
from core.model.text_embedding import TEXT_SUFFIXES, TextEmbeddingService, embed_job_input
from textembed.backend import SentenceBackend
from textembed.settings import TextEmbedSettings

TEXTEMBED = Declaration(
    name="textembed", package="textembed", service_name="textembed", title="Text embedding service",
    description="Sentence embeddings (OpenAI-compatible) with a sentence-transformers model.",
    settings=TextEmbedSettings, make_backend=SentenceBackend, make_service=TextEmbeddingService,
    routes=("core.web.text_embedding_routes",), units=("texts", "tokens"), cpus_per_process=1,
    events=TextEmbeddingService.event_handler,
    job=JobDeclaration(suffixes=TEXT_SUFFIXES, unit="files", run=embed_job_input, batch_size=32),
)
create_app = TEXTEMBED.create_app  # gunicorn's entry: textembed.app:create_app()
