"""TensorRT backend: a checksum-verified plan, pinned host and device buffers, one stream, ``execute_async_v3``.

Written after NVIDIA's documented Python API (``samples/python/common_runtime.py``
and Polygraphy's TensorRT runner): name-based I/O tensors, buffers sized for
the profile's largest batch and bound once with ``set_tensor_address``, the
input shape set per call for dynamic batch.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..engines import DeviceInfo, EngineSidecar, version_tuple
from ..errors import BackendError
from .base import OPTIONAL_OUTPUTS, OUTPUT_NAMES
from .cuda import CudaMemory, GpuUnavailable, gpu_identity, open_cuda_memory

MIN_TENSORRT = (10, 12)  # strongly typed networks and the name-based tensor API throughout


class TensorRTUnavailable(Exception):
    """TensorRT cannot be imported here; the message says why (one line)."""


def import_tensorrt(lean_allowed: bool = True) -> ModuleType:
    """The full TensorRT runtime, else the lean one (runs version-compatible engines only)."""
    names = ("tensorrt", "tensorrt_lean") if lean_allowed else ("tensorrt",)
    problems = []
    for name in names:
        try:
            module = __import__(name)
            _ = module.__version__, module.Runtime  # a stub wheel imports without these
        except Exception as exc:  # import errors, missing libnvinfer, stub packages
            problems.append(f"{name}: {type(exc).__name__}")
            continue
        return module
    raise TensorRTUnavailable(f"TensorRT is not installed or not loadable ({', '.join(problems)})")


def this_device(lean_allowed: bool = True) -> tuple[DeviceInfo, ModuleType]:
    """This box's GPU and TensorRT; :class:`GpuUnavailable` or :class:`TensorRTUnavailable` when absent."""
    trt = import_tensorrt(lean_allowed)
    if version_tuple(trt.__version__)[:2] < MIN_TENSORRT:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old (svdh needs 10.12 or later)")
    name, capability = gpu_identity()
    return DeviceInfo(name, capability, trt.__version__, trt.__name__), trt


class TensorRTBackend:
    """Runs one engine; batches larger than the profile's maximum are run in slices."""

    name = "tensorrt"

    def __init__(self, plan: bytes, sidecar: EngineSidecar, trt: ModuleType, memory: CudaMemory | None = None) -> None:
        self.sidecar = sidecar
        self._trt = trt
        try:
            self._memory = memory if memory is not None else open_cuda_memory()
        except GpuUnavailable as exc:
            raise BackendError(f"TensorRT needs a GPU: {exc}") from None
        try:
            self._open(plan)
        except BaseException:
            self._memory.close()
            raise

    def _open(self, plan: bytes) -> None:
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.sidecar.version_compatible:
            self._runtime.engine_host_code_allowed = True  # the plan carries its own lean runtime
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendError(f"TensorRT refused engines/{self.sidecar.plan} (see the TensorRT messages above)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if len(inputs) != 1 or missing:
            raise BackendError(
                f"engine has inputs {inputs} and outputs {outputs}; expected one image and {OUTPUT_NAMES}"
            )
        self._input = inputs[0]
        self._outputs = [*OUTPUT_NAMES, *(n for n in OPTIONAL_OUTPUTS if n in outputs)]
        _, _, largest = self._engine.get_tensor_profile_shape(self._input, 0)
        self.max_batch = int(largest[0])
        self.item_shape = tuple(int(v) for v in largest[1:])
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        self._context.set_input_shape(self._input, (self.max_batch, *self.item_shape))
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        for name in [self._input, *self._outputs]:
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            shape = tuple(int(v) for v in self._context.get_tensor_shape(name))
            self._host[name] = self._memory.host_array(shape, dtype)
            self._device[name] = self._memory.device_buffer(self._host[name].nbytes)
            self._context.set_tensor_address(name, self._device[name])

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.item_shape:
            raise BackendError(f"engine expects images of shape {self.item_shape}, got {tuple(batch.shape[1:])}")
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in self._outputs}
        for start in range(0, len(batch), self.max_batch):
            for name, values in self._run(batch[start : start + self.max_batch]).items():
                pieces[name].append(values)
        return {name: np.concatenate(values) for name, values in pieces.items()}

    def _run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        count = len(chunk)
        host_input = self._host[self._input]
        host_input[:count] = chunk
        self._context.set_input_shape(self._input, (count, *self.item_shape))
        self._memory.to_device(self._device[self._input], host_input, chunk.nbytes)
        if not self._context.execute_async_v3(self._memory.stream_handle):
            raise BackendError("TensorRT failed to run the engine")
        shapes = {}
        for name in self._outputs:
            shapes[name] = tuple(int(v) for v in self._context.get_tensor_shape(name))
            nbytes = int(np.prod(shapes[name])) * self._host[name].itemsize
            self._memory.to_host(self._host[name], self._device[name], nbytes)
        self._memory.synchronize()
        return {
            name: self._host[name].reshape(-1)[: int(np.prod(shape))].reshape(shape).astype(np.float32, copy=True)
            for name, shape in shapes.items()
        }

    def close(self) -> None:
        self._context = self._engine = self._runtime = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None
