"""The mod compiler: a `score_mod` / `mask_mod` written for the reference becomes Triton
code spliced into the attention kernels.

How:
1. trace: the mod is called once with proxy objects for its arguments. Python operators
   and the allowed torch functions (through `__torch_function__`) record an expression
   graph; indexing a captured tensor (`slopes[h]`) records a load whose leaf is that
   tensor. Anything outside the contract (MODS.md) raises `ModError` naming the
   construct, on first use and before any kernel is built: `if`/`and`/`or` on a traced
   value hit `__bool__`, other torch functions hit `__torch_function__`.
2. emit: the graph becomes the body of `@triton.jit` helpers (`_score_mod`,
   `_score_mod_bwd`, `_mask_mod`). The backward helper is the graph differentiated in
   reverse mode: it returns d(score_mod)/d(score) times the incoming gradient and, in the
   kernel that owns them, adds the gradients of captured float tensors with atomics.
3. The kernels (template*.py) are re-emitted with these helpers and with the captured
   tensors as extra kernel parameters (pointer, sizes, strides, gradient buffer), written
   to a cache file named by the hash of the graphs, and imported (`kernels_for`). The
   same graph (a new closure of the same mod, new captured tensors of the same rank and
   dtype kind) reuses the module and its compiled kernels.

The graph records structure only: captured tensors are leaves by position, so their
values, sizes and strides are run-time kernel arguments.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading

from .mod_emit import capture_ints, capture_params, capture_values, emit_mods, structure
from .mod_trace import Graph, ModError, trace

__all__ = ["Graph", "ModError", "capture_values", "kernels_for", "structure", "trace"]

_CACHE_DIR = os.environ.get("ATTNFORMS_KERNEL_CACHE") or os.path.join(
    tempfile.gettempdir(), f"attnforms-softmax-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}")
_modules: dict[str, object] = {}
_by_key: dict[str, object] = {}
_lock = threading.Lock()
# The kernel template, in parts that are joined in this order (later parts use the
# helpers of the first).
TEMPLATE_PARTS = ("template.py", "template_backward.py", "template_decode.py")


@functools.cache
def _template_text() -> str:
    texts = []
    for name in TEMPLATE_PARTS:
        with open(os.path.join(os.path.dirname(__file__), name)) as f:
            texts.append(f.read())
    return "\n\n".join(texts)


def _compiler_version() -> str:
    """The tracer's, the emitter's and this file's code name the cache files too."""
    digest = hashlib.sha256()
    for name in ("mod_trace.py", "mod_emit.py", "modc.py"):
        with open(os.path.join(os.path.dirname(__file__), name)) as f:
            digest.update(f.read().encode())
    return digest.hexdigest()


_COMPILER_VERSION = _compiler_version()


def kernels_for(score_graph: Graph | None, mask_graph: Graph | None):
    """The kernel module for these mods (generated and imported once per structure)."""
    key_text = f"{structure(score_graph) if score_graph else '-'}|{structure(mask_graph) if mask_graph else '-'}"
    module = _by_key.get(key_text)  # the per-call fast path: no hashing
    if module is not None:
        return module
    template = _template_text()
    digest = hashlib.sha256((key_text + template + _COMPILER_VERSION).encode()).hexdigest()[:20]
    module = _modules.get(digest)
    if module is not None:
        _by_key[key_text] = module
        return module
    with _lock:
        module = _modules.get(digest)
        if module is not None:
            return module
        sp = capture_params("sc", score_graph)
        mp = capture_params("mc", mask_graph)
        ints = capture_ints("sc", score_graph) + capture_ints("mc", mask_graph)
        source = re.sub(r",(\s*)__SCAPS__", lambda m: "".join(f", {n}" for n in sp), template)
        source = re.sub(r",(\s*)__MCAPS__", lambda m: "".join(f", {n}" for n in mp), source)
        source = re.sub(r",(\s*)__DNS__", lambda m: "".join(f", {n!r}" for n in ints), source)
        assert "__SCAPS__" not in source and "__MCAPS__" not in source and "__DNS__" not in source
        begin, end = source.index("# <mods>"), source.index("# </mods>")
        source = source[:begin] + "# <mods> generated\n" + emit_mods(score_graph, mask_graph) + source[end:]
        source = f"# generated from template.py for: {key_text[:2000]}\n" + source
        os.makedirs(_CACHE_DIR, exist_ok=True)
        path = os.path.join(_CACHE_DIR, f"softmax_kernels_{digest}.py")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        name = f"attnforms_softmax_kernels_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        module.SCORE_PARAMS, module.MASK_PARAMS = sp, mp
        _modules[digest] = module
        _by_key[key_text] = module
        return module
