"""A model's precision (core/model/backend.py): TEXTEMBED_DTYPE=auto is float16 on a GPU, bfloat16 only on a
CPU with native bf16 instructions (emulated bf16 is slower than float32), float32 on any other CPU."""

import pytest

from core.model import backend
from core.model.backend import BaseBackend, cpu_does_bf16

pytestmark = pytest.mark.unit

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [(ZEN3, False), (ZEN4, True), (SAPPHIRE_RAPIDS, True), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, native):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert cpu_does_bf16(tmp_path / "cpuinfo") is native


def test_no_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_does_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize(("setting", "device", "native", "dtype"), [
    ("auto", "cuda", False, "float16"), ("auto", "cuda:1", True, "float16"),
    ("auto", "cpu", True, "bfloat16"), ("auto", "cpu", False, "float32"),
    ("float32", "cpu", True, "float32"), ("bfloat16", "cpu", False, "bfloat16"), ("float32", "cuda", False, "float32"),
])
def test_auto_picks_by_device_and_cpu_an_explicit_setting_wins(monkeypatch, setting, device, native, dtype):
    monkeypatch.setattr(backend, "cpu_does_bf16", lambda: native)
    assert BaseBackend.pick_dtype(setting, device) == dtype
