"""A recording stand-in for the `tensorrt` module (builder and runtime sides), over fake_pycuda's memory.

Plans are JSON naming an ONNX file; an engine "executes" by running that file in ONNX Runtime on the
bytes found at the addresses the code bound, and writes the result where the output is bound. So a test
sees exactly what our plumbing handed over (shapes, addresses, row layout, staging) and gets real model
numbers back, without TensorRT or a GPU. It enforces what TensorRT documents that our code must keep
(input shapes within the profile; tensor addresses 256-byte aligned, recorded as `violations`) and
mirrors documented defaults (BuilderFlag.TF32 is on in a new builder config; `set_timing_cache` returns
False for a cache from another device). It says nothing about real TensorRT or a GPU.
"""

from __future__ import annotations

import enum
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fake_pycuda import FakeCuda

PLAN_MAGIC = "s2i-fake-tensorrt-plan"
_ORT_TO_NP = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}


class BuilderFlag(enum.IntEnum):
    DEBUG = 2
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    VERSION_COMPATIBLE = 13


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class TensorIOMode(enum.IntEnum):
    INPUT = 1
    OUTPUT = 2


class Logger:
    WARNING = 2

    def __init__(self, level: int = 2) -> None:
        self.level = level


def _session(onnx_path: str) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])


class FakeTensorRT:
    """Use as the `tensorrt` module. `cuda` is the FakeCuda whose memory engines read and write."""

    BuilderFlag = BuilderFlag
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    MemoryPoolType = MemoryPoolType
    TensorIOMode = TensorIOMode
    Logger = Logger

    def __init__(self, cuda: FakeCuda | None = None, *, version: str = "10.13.0.35", device: str = "Fake GPU",
                 fail_cuda_init: bool = False, refuse_addresses: bool = False) -> None:
        self.__version__ = version
        self.cuda = cuda
        self.device = device
        self.fail_cuda_init = fail_cuda_init
        self.refuse_addresses = refuse_addresses
        self.executions: list[dict[str, Any]] = []  # per execute: role, thread, input shapes
        self.violations: list[str] = []
        self.configs: list[FakeConfig] = []
        self._lock = threading.Lock()

    @staticmethod
    def nptype(dtype: Any) -> Any:
        return dtype  # engines report numpy types directly

    def _cuda_init(self, what: str) -> None:
        if self.fail_cuda_init:  # what TensorRT does without a usable GPU: the factory returns nullptr
            raise TypeError(f"pybind11::init(): factory function returned nullptr ({what}: CUDA initialization "
                            "failure with error: 35)")

    # -- runtime side ----------------------------------------------------------------------------------

    def Runtime(self, logger: Logger) -> FakeRuntime:  # noqa: N802 - tensorrt's spelling
        self._cuda_init("Runtime")
        return FakeRuntime(self)

    # -- builder side ----------------------------------------------------------------------------------

    def Builder(self, logger: Logger) -> FakeBuilder:  # noqa: N802
        self._cuda_init("Builder")
        return FakeBuilder(self)

    def OnnxParser(self, network: FakeNetwork, logger: Logger) -> FakeParser:  # noqa: N802
        return FakeParser(network)


class FakeRuntime:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        try:
            plan = json.loads(bytes(data))
        except ValueError:
            return None
        if plan.get("magic") != PLAN_MAGIC or plan.get("device") != self.trt.device:
            return None  # as TensorRT does for a plan of another GPU or version
        return FakeEngine(self.trt, plan)


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, plan: dict[str, Any]) -> None:
        self.trt, self.plan = trt, plan
        self.session = _session(plan["onnx"])
        self.io: dict[str, tuple[Any, Any, tuple[int, ...]]] = {}  # name -> (mode, dtype, shape with -1)
        for mode, args in ((TensorIOMode.INPUT, self.session.get_inputs()),
                           (TensorIOMode.OUTPUT, self.session.get_outputs())):
            for arg in args:
                shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
                self.io[arg.name] = (mode, _ORT_TO_NP[arg.type], shape)
        self.names = list(self.io)

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.io[name][0]

    def get_tensor_dtype(self, name: str) -> Any:
        return self.io[name][1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io[name][2]

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        assert index == 0
        ranges = self.plan["profile"][name]
        return [tuple(ranges[k]) for k in ("min", "opt", "max")]

    def create_execution_context(self) -> FakeExecutionContext:
        return FakeExecutionContext(self)


class FakeExecutionContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_optimization_profile_async(self, index: int, stream_handle: int) -> bool:
        return index == 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
            return False
        self.shapes[name] = tuple(int(s) for s in shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        mode, _, shape = self.engine.io[name]
        if mode == TensorIOMode.INPUT:
            return self.shapes.get(name, shape)
        batch = next(iter(self.shapes.values()))[0]  # every s2i output is (batch, ...)
        if all(d >= 0 for d in shape[1:]):
            return (batch, *shape[1:])
        # Symbolic non-batch dims (an exported generator's H, W): infer them as TensorRT would, from a run.
        feeds = {n: np.zeros(self.shapes[n], dtype=dt) for n, (m, dt, _) in self.engine.io.items()
                 if m == TensorIOMode.INPUT}
        names = [arg.name for arg in self.engine.session.get_outputs()]
        return tuple(self.engine.session.run([name], feeds)[0].shape) if name in names else shape

    def set_tensor_address(self, name: str, address: int) -> bool:
        trt = self.engine.trt
        if address % 256:
            with trt._lock:
                trt.violations.append(f"{self.engine.plan['role']}.{name} at {address:#x}: not 256-byte aligned")
        if trt.refuse_addresses:
            return False
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        trt = self.engine.trt
        cuda = trt.cuda
        cuda._current()  # s2i pushes its context around every call
        feeds = {}
        for name, (mode, dtype, _) in self.engine.io.items():
            if mode == TensorIOMode.INPUT:
                shape = self.shapes[name]
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                feeds[name] = cuda._device_view(self.addresses[name], nbytes).view(dtype).reshape(shape).copy()
        outputs = self.engine.session.run(None, feeds)
        for arg, value in zip(self.engine.session.get_outputs(), outputs, strict=True):
            data = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
            cuda._device_view(self.addresses[arg.name], data.size)[:] = data
        with trt._lock:
            trt.executions.append({"role": self.engine.plan["role"], "thread": threading.current_thread().name,
                                   "shapes": dict(self.shapes)})
        return True


# -- builder side ------------------------------------------------------------------------------------


class FakeTimingCache:
    def __init__(self, device: str, entries: int) -> None:
        self.device, self.entries = device, entries

    def serialize(self) -> bytes:
        return f"fake-timing-cache|{self.device}|{self.entries}".encode()


class FakeConfig:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt
        self.flags = {BuilderFlag.TF32}  # TensorRT's documented default
        self.calls: list[tuple[str, Any]] = []
        self.cache: FakeTimingCache | None = None
        self.profiles: list[dict[str, tuple]] = []
        self.workspace = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.calls.append(("set_flag", flag.name))
        self.flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.calls.append(("clear_flag", flag.name))
        self.flags.discard(flag)

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def create_timing_cache(self, blob: bytes) -> FakeTimingCache:
        if not blob:
            return FakeTimingCache(self.trt.device, 0)
        _, device, entries = bytes(blob).decode().split("|")
        return FakeTimingCache(device, int(entries))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.calls.append(("set_timing_cache", cache.device))
        if cache.device != self.trt.device and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        return self.cache

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile.shapes)
        return len(self.profiles) - 1


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, low: tuple, opt: tuple, high: tuple) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class FakeNetwork:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.input_names: list[str] = []
        self.onnx: str | None = None

    @property
    def num_inputs(self) -> int:
        return len(self.input_names)

    def get_input(self, index: int) -> Any:
        return type("Input", (), {"name": self.input_names[index]})()


class FakeParser:
    def __init__(self, network: FakeNetwork) -> None:
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        self.network.onnx = str(Path(path).resolve())
        self.network.input_names = [arg.name for arg in _session(path).get_inputs()]
        return True

    def get_error(self, index: int) -> str:
        raise IndexError(index)


class FakeBuilder:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    def create_network(self, flags: int) -> FakeNetwork:
        return FakeNetwork(flags)

    def create_builder_config(self) -> FakeConfig:
        config = FakeConfig(self.trt)
        self.trt.configs.append(config)
        return config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes:
        (shapes,) = config.profiles
        role = "encoder" if "mel" in shapes else "generator"
        if config.cache is not None:
            config.cache.entries += 1  # the build timed some tactics
        plan = {
            "magic": PLAN_MAGIC, "device": self.trt.device, "role": role, "onnx": network.onnx,
            "profile": {n: dict(zip(("min", "opt", "max"), map(list, s), strict=True)) for n, s in shapes.items()},
            "builder_flags": sorted(f.name for f in config.flags), "network_flags": network.flags,
        }
        return json.dumps(plan).encode()


def fake_plan(role: str, onnx_path: Path, profile: dict[str, dict[str, list[int]]], device: str = "Fake GPU") -> bytes:
    """A plan file the runtime side deserialises, without going through the builder."""
    return json.dumps({"magic": PLAN_MAGIC, "device": device, "role": role, "onnx": str(Path(onnx_path).resolve()),
                       "profile": profile, "builder_flags": [], "network_flags": 0}).encode()
