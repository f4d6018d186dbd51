"""Pick the CLIP backend a configuration names (imports torch only for real models)."""

from __future__ import annotations

from server.backends.base import IMAGE, TEXT, ClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings

__all__ = ["IMAGE", "TEXT", "ClipBackend", "make_backend"]


def make_backend(settings: ServerSettings) -> ClipBackend:
    """CLIP_MODEL=fake -> FakeClipBackend, hf:... -> HFClipBackend, else OpenClipBackend."""
    spec = resolve_spec(settings)
    if spec.family == "fake":
        from server.backends.fake import FakeClipBackend

        return FakeClipBackend(settings, spec)
    if spec.family == "sim":
        from server.backends.sim import SimClipBackend

        return SimClipBackend(settings, spec)
    if spec.family == "hf":
        from server.backends.hf_backend import HFClipBackend

        return HFClipBackend(settings, spec)
    from server.backends.open_clip_backend import OpenClipBackend

    return OpenClipBackend(settings, spec)
