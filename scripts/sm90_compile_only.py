"""Compile Triton kernels for an sm_90 GPU (H100, H200) on a machine without one: the
active driver is replaced by one that reports an sm_90 target, and every launch is
turned into a warm-up (compile, no run). Shared by compile_sm90.py (our kernels) and
compile_tfla_sm90.py (a peer's).

    sys.path.insert(0, "/tmp/t36")   # the Triton version the GPU machine has, first
    import sm90_compile_only
    sm90_compile_only.install(on_compile)   # on_compile(name, compiled_kernel) per launch
"""
from typing import Callable

import torch
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

TARGET = GPUTarget("cuda", 90, 32)


class CompileOnlyDriver:
    """What JITFunction.run asks of a driver, answered for an sm_90 device."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return TARGET

    def get_active_torch_device(self):
        return torch.device("cpu")


def install(on_compile: Callable[[str, object], None] | None = None) -> None:
    """Make every kernel launch from now on a compile for sm_90; `on_compile(kernel name,
    compiled kernel)` is called after each (the name is printed before each compile when
    it is None, so a compiler abort names its kernel)."""
    driver.set_active(CompileOnlyDriver())
    original_run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        if on_compile is None:
            print("compiling", self.__name__, flush=True)
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        if on_compile is not None:
            on_compile(self.__name__, kernel)
        return kernel

    JITFunction.run = compile_only
