"""Clients of the CLIP server and the Whisper worker, and fan-out over several workers."""

from inference_client.batch import transcribe_directory
from inference_client.clip import ClipClient, Embeddings, Label
from inference_client.embed_folder import embed_directory
from inference_client.errors import (
    BadRequest,
    ConfigurationError,
    ConnectionFailed,
    GatewayTimeout,
    InferenceClientError,
    NotFound,
    NoWorkerAvailable,
    PayloadTooLarge,
    RateLimited,
    RequestTimedOut,
    ServerError,
    ServiceError,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
)
from inference_client.fanout import WorkerPool
from inference_client.whisper import RESPONSE_FORMATS, WhisperClient

__all__ = [
    "RESPONSE_FORMATS", "BadRequest", "ClipClient", "ConfigurationError", "ConnectionFailed", "Embeddings",
    "GatewayTimeout", "InferenceClientError", "Label", "NoWorkerAvailable", "NotFound", "PayloadTooLarge",
    "RateLimited", "RequestTimedOut", "ServerError", "ServiceError", "Unauthorized", "Unavailable",
    "UnsupportedMedia", "WhisperClient", "WorkerPool", "embed_directory", "transcribe_directory",
]
