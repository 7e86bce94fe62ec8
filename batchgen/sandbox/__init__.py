"""Offline emulator of Segmind's asynchronous v2 API for tests, demos and ``batchgen run --sandbox``."""

from batchgen.sandbox.faults import FAULT_KINDS, FaultSpecError, parse_faults
from batchgen.sandbox.server import Sandbox, build_app
from batchgen.sandbox.state import FAIL_MARKER, SandboxConfig, SandboxState

__all__ = [
    "FAIL_MARKER",
    "FAULT_KINDS",
    "FaultSpecError",
    "Sandbox",
    "SandboxConfig",
    "SandboxState",
    "build_app",
    "parse_faults",
]
