"""Test doubles for TensorRT and CUDA memory, for machines that have neither.

They implement the slice of NVIDIA's documented Python API that svdh calls
(Builder, OnnxParser, builder config, optimization profile, timing cache,
Runtime, engine and execution context with ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3``), check that it is called in
a valid way (profile bounds, addresses bound before running, strongly typed
flag), and "execute" the ONNX model carried in the fake plan with ONNX
Runtime on the bytes in fake device memory. They prove svdh's orchestration
(buffers, batching, sidecars, validation, selection), never TensorRT itself:
the tests in ``test_gpu.py`` do that where TensorRT and a GPU exist.
"""

from __future__ import annotations

import enum
import itertools
import json
import types

import numpy as np

PLAN_MAGIC = b"FAKE-TRT-PLAN\n"


class FakeDeviceMemory:
    """:class:`svdh_runtime.backends.cuda.CudaMemory` over host bytes; addresses are plain integers."""

    name = "fake-cuda"
    stream_handle = 7
    buffers: dict[int, np.ndarray] = {}
    _addresses = itertools.count(0x1000, 0x1000)

    def __init__(self) -> None:
        self.closed = False
        self.copies = 0

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def device_buffer(self, nbytes: int) -> int:
        address = next(self._addresses)
        FakeDeviceMemory.buffers[address] = np.zeros(nbytes, dtype=np.uint8)
        return address

    def to_device(self, device_pointer: int, host: np.ndarray, nbytes: int) -> None:
        self.copies += 1
        FakeDeviceMemory.buffers[device_pointer][:nbytes] = np.frombuffer(host.tobytes()[:nbytes], dtype=np.uint8)

    def to_host(self, host: np.ndarray, device_pointer: int, nbytes: int) -> None:
        self.copies += 1
        host.reshape(-1).view(np.uint8)[:nbytes] = FakeDeviceMemory.buffers[device_pointer][:nbytes]

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def make_fake_tensorrt(
    version: str = "10.13.0.35",
    unsupported: tuple[str, ...] = (),
    needs_workspace_mib: int = 0,
    score_offset: float = 0.0,
    name: str = "tensorrt",
) -> types.ModuleType:
    """A module that stands in for ``tensorrt`` (see the module docstring)."""
    trt = types.ModuleType(name)
    trt.__version__ = version
    trt.builds = []  # what each build was asked for, for the tests to inspect

    class LogSeverity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        Severity = LogSeverity

        def __init__(self) -> None:
            pass

        def log(self, severity, message) -> None:  # noqa: ANN001
            pass

    class Logger(ILogger):
        WARNING = LogSeverity.WARNING

        def __init__(self, level=LogSeverity.WARNING) -> None:  # noqa: ANN001
            super().__init__()

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 0

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class BuilderFlag(enum.IntEnum):
        VERSION_COMPATIBLE = 19

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class Tensor:
        def __init__(self, name: str) -> None:
            self.name = name

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.model: bytes | None = None
            self.inputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> Tensor:
            return Tensor(self.inputs[index])

    class ParserError:
        def __init__(self, node: int, node_name: str, operator: str, desc: str) -> None:
            self._values = (node, node_name, operator, desc)

        def node(self) -> int:
            return self._values[0]

        def node_name(self) -> str:
            return self._values[1]

        def node_operator(self) -> str:
            return self._values[2]

        def desc(self) -> str:
            return self._values[3]

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network, self.errors = network, []

        def supports_operator(self, op_type: str) -> bool:
            return op_type not in unsupported

        def parse(self, model: bytes) -> bool:
            import onnx

            graph = onnx.ModelProto.FromString(bytes(model)).graph
            initializers = {i.name for i in graph.initializer}
            self.network.inputs = [i.name for i in graph.input if i.name not in initializers]
            self.network.model = bytes(model)
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, low, opt, high) -> None:  # noqa: ANN001
            assert all(a <= b <= c for a, b, c in zip(low, opt, high)), "profile shapes must be ordered"
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Config:
        def __init__(self) -> None:
            self.flags: set[int] = set()
            self.pools: dict[int, int] = {}
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool, size: int) -> None:  # noqa: ANN001
            self.pools[int(pool)] = int(size)

        def set_flag(self, flag) -> None:  # noqa: ANN001
            self.flags.add(int(flag))

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.cache

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            workspace_mib = config.pools.get(int(MemoryPoolType.WORKSPACE), 0) >> 20
            if workspace_mib < needs_workspace_mib:
                self.logger.log(LogSeverity.ERROR, f"Insufficient workspace: {needs_workspace_mib} MiB needed")
                return None
            assert len(config.profiles) == 1, "a dynamic-batch network needs one optimization profile"
            header = {
                "strongly_typed": bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))),
                "version_compatible": int(BuilderFlag.VERSION_COMPATIBLE) in config.flags,
                "workspace_mib": workspace_mib,
                "profile": {k: [list(s) for s in v] for k, v in config.profiles[0].shapes.items()},
                "timing_cache_in": config.cache.data.decode(),
            }
            trt.builds.append(header)
            config.cache = TimingCache(config.cache.data + b"tuned;")
            return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.model

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name: str, shape) -> bool:  # noqa: ANN001
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            assert all(a <= b <= c for a, b, c in zip(low, shape, high)), f"shape {shape} outside the profile"
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            batch = self.shapes[self.engine.input][0]
            return (batch, *self.engine.item_shapes[name]) if name != self.engine.input else self.shapes[name]

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert set(self.addresses) == set(self.engine.names), "every I/O tensor needs an address"
            shape = self.shapes[self.engine.input]
            count = int(np.prod(shape))
            raw = FakeDeviceMemory.buffers[self.addresses[self.engine.input]][: count * 4]
            outputs = self.engine.run(raw.view(np.float32).reshape(shape))
            for name, values in outputs.items():
                data = np.ascontiguousarray(values, dtype=np.float32).view(np.uint8).reshape(-1)
                FakeDeviceMemory.buffers[self.addresses[name]][: data.size] = data
            return True

    class Engine:
        def __init__(self, header: dict, model: bytes) -> None:
            import onnxruntime as ort

            self.header = header
            self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.names = [self.input, *self.output_names]
            low, _, _ = header["profile"][self.input]
            probe = self.run(np.zeros(low, dtype=np.float32))
            self.item_shapes = {name: tuple(values.shape[1:]) for name, values in probe.items()}

        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            values = dict(zip(self.output_names, self.session.run(None, {self.input: batch})))
            values["score"] = values["score"] + np.float32(score_offset)
            return values

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name == self.input else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple]:
            return [tuple(s) for s in self.header["profile"][name]]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            if not plan.startswith(PLAN_MAGIC):
                return None
            header_line, model = plan[len(PLAN_MAGIC) :].split(b"\n", 1)
            header = json.loads(header_line)
            if header["version_compatible"] and not self.engine_host_code_allowed:
                return None  # TensorRT refuses a plan with an embedded lean runtime unless host code is allowed
            return Engine(header, model)

    def nptype(dtype: str) -> type:
        return {"float32": np.float32, "float16": np.float16}[dtype]

    for value in (
        ILogger,
        Logger,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        BuilderFlag,
        TensorIOMode,
        OnnxParser,
        Builder,
        Runtime,
        nptype,
    ):
        setattr(trt, value.__name__, value)
    return trt
