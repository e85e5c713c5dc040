"""Out-of-bounds detection for Triton kernels run by the interpreter (TRITON_INTERPRET=1).

On the GPU a kernel that addresses memory outside every tensor it was given stops with
"an illegal memory access", without saying which kernel or which load; the interpreter
reads and writes host memory instead and usually carries on silently. Inside
`interpreter_bounds_checked()` every masked load and store of every launch is checked
against the byte ranges of the tensors passed to that launch (their whole storages), and
the first access outside all of them raises `OutOfBounds`, naming the kernel, the
program and the address.

    with interpreter_bounds_checked():
        out = af.mlstm(**inputs, impl="triton")     # raises OutOfBounds on a stray access

Tensor-descriptor (TMA) loads are not checked: the interpreter pads them itself, as the
hardware does.
"""
from __future__ import annotations

import contextlib

import numpy as np


class OutOfBounds(AssertionError):
    """A kernel addressed memory outside every tensor of its launch."""


@contextlib.contextmanager
def interpreter_bounds_checked():
    """Check every interpreted load and store of the launches inside the block (see the
    module docstring). Needs TRITON_INTERPRET=1 set before Triton compiled the kernels."""
    from triton.runtime import interpreter

    launch = dict(kernel="?", ranges=np.zeros((0, 2), dtype=np.uint64))
    executor = interpreter.GridExecutor
    builder = type(interpreter.interpreter_builder)
    original_init, original_load, original_store = (
        executor._init_args_hst, builder.create_masked_load, builder.create_masked_store)

    def tensors_of(arg):
        if isinstance(arg, tuple):
            for item in arg:
                yield from tensors_of(item)
        elif isinstance(arg, interpreter.TensorDescriptor):
            yield from tensors_of(arg.base)
        elif hasattr(arg, "data_ptr"):
            yield interpreter._unwrap_tensor(arg)

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = original_init(self, args_dev, kwargs)
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for arg in [*args_hst, *kwargs_hst.values()] for t in tensors_of(arg)}
        launch["kernel"] = getattr(self.fn, "__name__", str(self.fn))
        launch["ranges"] = np.array([(start, start + size) for start, size in storages.items()],
                                    dtype=np.uint64).reshape(-1, 2)
        return args_hst, kwargs_hst

    def check(self, ptrs, mask, what):
        keep = np.asarray(mask.data).astype(bool)
        addresses = np.broadcast_to(np.asarray(ptrs.data), keep.shape)[keep].astype(np.uint64)
        if addresses.size == 0:
            return
        size = np.uint64(np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize)
        ranges = launch["ranges"]
        inside = ((addresses[:, None] >= ranges[None, :, 0])
                  & (addresses[:, None] + size <= ranges[None, :, 1])).any(axis=1)
        if not inside.all():
            bad = int(addresses[~inside][0])
            raise OutOfBounds(
                f"{launch['kernel']}: {what} of {int((~inside).sum())} element(s) outside every tensor of "
                f"the launch, first at address {bad:#x} (program {tuple(self.grid_idx)})")

    def masked_load(self, ptrs, mask, other, *args, **kwargs):
        check(self, ptrs, mask, "load")
        return original_load(self, ptrs, mask, other, *args, **kwargs)

    def masked_store(self, ptrs, value, mask, *args, **kwargs):
        check(self, ptrs, mask, "store")
        return original_store(self, ptrs, value, mask, *args, **kwargs)

    executor._init_args_hst = init_args
    builder.create_masked_load, builder.create_masked_store = masked_load, masked_store
    try:
        yield
    finally:
        executor._init_args_hst = original_init
        builder.create_masked_load, builder.create_masked_store = original_load, original_store
