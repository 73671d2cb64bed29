"""The GPU of this box: what it is, and pinned host / device memory on one stream.

cuda-python (``cuda.bindings``, what NVIDIA's TensorRT samples use since
10.14) is preferred; pycuda is used where the box has it and not cuda-python.
Nothing here imports torch, and nothing is imported until a GPU is asked for.
"""

from __future__ import annotations

import ctypes
from typing import Protocol

import numpy as np

from ..errors import BackendError


class GpuUnavailable(Exception):
    """No usable NVIDIA GPU or CUDA bindings; the message says why (one line)."""


class CudaMemory(Protocol):
    """Pinned host arrays, device buffers and one stream, freed by :meth:`close`."""

    name: str
    stream_handle: int

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...

    def device_buffer(self, nbytes: int) -> int: ...

    def to_device(self, device_pointer: int, host: np.ndarray, nbytes: int) -> None: ...

    def to_host(self, host: np.ndarray, device_pointer: int, nbytes: int) -> None: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


def _cudart():  # noqa: ANN202
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.8 spelled it this way
        except ImportError:
            return None
    return cudart


class CudaPythonMemory:
    """:class:`CudaMemory` on cuda-python's runtime API (``cudaMallocHost``, ``cudaMemcpyAsync``)."""

    name = "cuda-python"

    def __init__(self, cudart) -> None:  # noqa: ANN001
        self._rt = cudart
        self._host: list[int] = []
        self._device: list[int] = []
        self._stream = self._call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self._stream)

    def _call(self, result: tuple, what: str):  # noqa: ANN202
        error, *values = result
        if error != self._rt.cudaError_t.cudaSuccess:
            _, text = self._rt.cudaGetErrorString(error)
            raise BackendError(
                f"CUDA {what} failed: {text.decode(errors='replace') if isinstance(text, bytes) else text}"
            )
        return values[0] if len(values) == 1 else values

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        pointer = int(self._call(self._rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._host.append(pointer)
        raw = (ctypes.c_byte * nbytes).from_address(pointer)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def device_buffer(self, nbytes: int) -> int:
        pointer = int(self._call(self._rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self._device.append(pointer)
        return pointer

    def to_device(self, device_pointer: int, host: np.ndarray, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(device_pointer, host.ctypes.data, nbytes, kind, self._stream), "memcpy")

    def to_host(self, host: np.ndarray, device_pointer: int, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, device_pointer, nbytes, kind, self._stream), "memcpy")

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for pointer in self._device:
            self._rt.cudaFree(pointer)
        for pointer in self._host:
            self._rt.cudaFreeHost(pointer)
        self._device, self._host = [], []
        if self._stream is not None:
            self._rt.cudaStreamDestroy(self._stream)
            self._stream = None


class PyCudaMemory:
    """:class:`CudaMemory` on pycuda, on the device's primary context (the one TensorRT uses)."""

    name = "pycuda"

    def __init__(self, driver) -> None:  # noqa: ANN001
        self._cuda = driver
        self._context = driver.Device(0).retain_primary_context()
        self._context.push()
        self._device: list = []
        self._stream = driver.Stream()
        self.stream_handle = int(self._stream.handle)

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._cuda.pagelocked_empty(shape, np.dtype(dtype))

    def device_buffer(self, nbytes: int) -> int:
        allocation = self._cuda.mem_alloc(max(nbytes, 1))
        self._device.append(allocation)
        return int(allocation)

    def to_device(self, device_pointer: int, host: np.ndarray, nbytes: int) -> None:
        self._cuda.memcpy_htod_async(device_pointer, host.reshape(-1).view(np.uint8)[:nbytes], self._stream)

    def to_host(self, host: np.ndarray, device_pointer: int, nbytes: int) -> None:
        self._cuda.memcpy_dtoh_async(host.reshape(-1).view(np.uint8)[:nbytes], device_pointer, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        for allocation in self._device:
            allocation.free()
        self._device = []
        if self._context is not None:
            self._context.pop()
            self._context = None


def open_cuda_memory() -> CudaMemory:
    """Memory and a stream on GPU 0 through cuda-python, else pycuda; :class:`GpuUnavailable` otherwise."""
    cudart = _cudart()
    if cudart is not None:
        count = cudart.cudaGetDeviceCount()
        if count[0] != cudart.cudaError_t.cudaSuccess or count[1] < 1:
            raise GpuUnavailable("no NVIDIA GPU visible to CUDA")
        return CudaPythonMemory(cudart)
    try:
        import pycuda.driver as driver

        driver.init()
    except ImportError:
        raise GpuUnavailable("no CUDA Python bindings (pip install cuda-python)") from None
    except Exception as exc:  # pycuda raises its own error types for a missing driver or device
        raise GpuUnavailable(f"no NVIDIA GPU visible to CUDA ({' '.join(str(exc).split())[:120]})") from None
    if driver.Device.count() < 1:
        raise GpuUnavailable("no NVIDIA GPU visible to CUDA")
    return PyCudaMemory(driver)


def gpu_identity() -> tuple[str, str]:
    """(name, compute capability "major.minor") of GPU 0; :class:`GpuUnavailable` when there is none."""
    cudart = _cudart()
    if cudart is not None:
        try:
            error, count = cudart.cudaGetDeviceCount()
        except Exception as exc:  # a missing driver library surfaces here
            raise GpuUnavailable(f"CUDA is not usable ({' '.join(str(exc).split())[:120]})") from None
        if error != cudart.cudaError_t.cudaSuccess or count < 1:
            raise GpuUnavailable("no NVIDIA GPU visible to CUDA")
        error, properties = cudart.cudaGetDeviceProperties(0)
        if error != cudart.cudaError_t.cudaSuccess:
            raise GpuUnavailable("cannot read the GPU's properties")
        name = properties.name
        name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
        return name.strip(), f"{properties.major}.{properties.minor}"
    try:
        import pycuda.driver as driver

        driver.init()
        if driver.Device.count() < 1:
            raise GpuUnavailable("no NVIDIA GPU visible to CUDA")
        device = driver.Device(0)
        major, minor = device.compute_capability()
        return device.name().strip(), f"{major}.{minor}"
    except ImportError:
        raise GpuUnavailable("no CUDA Python bindings (pip install cuda-python)") from None
    except GpuUnavailable:
        raise
    except Exception as exc:
        raise GpuUnavailable(f"no NVIDIA GPU visible to CUDA ({' '.join(str(exc).split())[:120]})") from None
