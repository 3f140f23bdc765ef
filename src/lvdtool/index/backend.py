"""Which engine runs the search and the clustering, on which device, at which precision.

Rules (`select_backend` with the defaults):
- CUDA visible to torch: torch engine on CUDA (exact k-NN and k-means are chunked matrix
  products, bf16 inputs with fp32 accumulation; sums all-reduced with torch.distributed).
- otherwise: faiss-cpu for exact k-NN and k-means (its BLAS kernels are the fastest on CPU).
- approximate (IVF/PQ) indices are always faiss, on GPUs when `faiss.get_num_gpus() > 0`
  (faiss-gpu, the `gpu` extra) and the device is not forced to "cpu".
`device` and `engine` override the choice; the torch engine also runs on CPU so its code
is tested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lvdtool.errors import ConfigError, DependencyError

DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "faiss", "torch")
PRECISIONS = ("auto", "fp32", "bf16")

_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


@dataclass(frozen=True)
class Backend:
    """A resolved choice: never holds "auto"."""

    engine: str  # "torch" | "faiss": runs exact k-NN, range search and k-means
    device: str  # "cpu" | "cuda": where the torch engine computes
    precision: str  # "fp32" | "bf16": torch matmul input dtype (accumulation is fp32)
    faiss_gpu: bool  # faiss indices are moved to GPUs
    engine_forced: bool = False  # the caller named the engine (not "auto")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def matmul_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.precision]


def _check_choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def select_backend(device: str = "auto", engine: str = "auto", precision: str = "auto") -> Backend:
    """Resolve `device`, `engine` and `precision` ("auto" or explicit) into a `Backend`."""
    _check_choice(device, DEVICES, "device")
    _check_choice(engine, ENGINES, "engine")
    _check_choice(precision, PRECISIONS, "precision")

    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("device: 'cuda' requested but torch sees no CUDA device")
    resolved_device = device if device != "auto" else ("cuda" if cuda else "cpu")

    gpus_for_faiss = faiss_gpu_count()
    resolved_engine = engine if engine != "auto" else ("torch" if resolved_device == "cuda" else "faiss")
    if resolved_engine == "faiss" and device == "cuda" and gpus_for_faiss == 0:
        raise DependencyError("engine: 'faiss' on device 'cuda' needs faiss-gpu (install the gpu extra)")

    if precision == "auto":
        resolved_precision = "bf16" if (resolved_engine == "torch" and resolved_device == "cuda") else "fp32"
    else:
        resolved_precision = precision
    if resolved_engine == "faiss" and resolved_precision != "fp32":
        raise ConfigError(f"precision: faiss engine computes in fp32, got {precision!r}")

    return Backend(
        engine=resolved_engine,
        device=resolved_device,
        precision=resolved_precision,
        faiss_gpu=gpus_for_faiss > 0 and resolved_device != "cpu",
        engine_forced=engine != "auto",
    )


def as_backend(backend: Backend | None, device: str = "auto", engine: str = "auto", precision: str = "auto") -> Backend:
    """The given backend, or one selected from the string options."""
    return backend if backend is not None else select_backend(device=device, engine=engine, precision=precision)
