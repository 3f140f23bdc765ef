import pytest
import torch

from lvdtool.errors import ConfigError
from lvdtool.index.backend import faiss_gpu_count, select_backend


def test_auto_follows_the_hardware():
    backend = select_backend()
    if torch.cuda.is_available():
        assert (backend.engine, backend.device, backend.precision) == ("torch", "cuda", "bf16")
    else:
        assert (backend.engine, backend.device, backend.precision) == ("faiss", "cpu", "fp32")
    assert backend.faiss_gpu == (faiss_gpu_count() > 0 and backend.device != "cpu")
    assert not backend.engine_forced


def test_explicit_torch_on_cpu():
    backend = select_backend(device="cpu", engine="torch", precision="bf16")
    assert backend.engine == "torch" and backend.device == "cpu" and backend.engine_forced
    assert backend.matmul_dtype == torch.bfloat16
    assert not backend.faiss_gpu


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"engine": "annoy"}, "engine"),
        ({"device": "tpu"}, "device"),
        ({"engine": "faiss", "precision": "bf16"}, "precision"),
    ],
)
def test_bad_choices_name_the_parameter(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        select_backend(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_requested_without_cuda():
    with pytest.raises(ConfigError, match="device"):
        select_backend(device="cuda")
