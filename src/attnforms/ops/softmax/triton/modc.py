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
3. The kernels (template.py) are re-emitted with these helpers and with the captured
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
from dataclasses import dataclass, field

import torch


class ModError(TypeError):
    """A mod uses a construct the kernel compiler does not support."""


# ----------------------------------------------------------------------------- graph
@dataclass(eq=False)
class Node:
    """One value of the graph. op: 'arg' | 'const' | 'load' | an operator name.
    kind: 'f' float, 'i' integer, 'b' bool. deps: which of the loop coordinates
    ('q', 'k') the value varies with (the score varies with both)."""

    op: str
    args: tuple = ()
    kind: str = "f"
    deps: frozenset = frozenset()
    value: object = None      # const: the Python number; arg: its name; load: capture index
    grad_leaf: bool = False   # a load from a captured float tensor that requires grad
    needs: bool = False       # depends on the score or on a grad leaf (gets an adjoint)


@dataclass
class Graph:
    nodes: list = field(default_factory=list)
    captures: list = field(default_factory=list)  # tensors, in order of first use
    output: Node | None = None

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def capture(self, tensor: torch.Tensor) -> int:
        for i, t in enumerate(self.captures):
            if t is tensor:
                return i
        self.captures.append(tensor)
        return len(self.captures) - 1


_UNARY = {
    torch.exp: "exp", torch.log: "log", torch.tanh: "tanh", torch.sigmoid: "sigmoid",
    torch.abs: "abs", torch.sqrt: "sqrt", torch.floor: "floor",
    torch.Tensor.exp: "exp", torch.Tensor.log: "log", torch.Tensor.tanh: "tanh",
    torch.Tensor.sigmoid: "sigmoid", torch.Tensor.abs: "abs", torch.Tensor.sqrt: "sqrt",
    torch.Tensor.floor: "floor", torch.Tensor.__neg__: "neg", torch.neg: "neg",
    torch.Tensor.__invert__: "invert",
}
_BINARY = {
    torch.minimum: "minimum", torch.maximum: "maximum",
    torch.Tensor.__add__: "add", torch.Tensor.__radd__: "radd", torch.Tensor.__sub__: "sub",
    torch.Tensor.__rsub__: "rsub", torch.Tensor.__mul__: "mul", torch.Tensor.__rmul__: "rmul",
    torch.Tensor.__truediv__: "div", torch.Tensor.__rtruediv__: "rdiv",
    torch.Tensor.__floordiv__: "floordiv", torch.Tensor.__rfloordiv__: "rfloordiv",
    torch.Tensor.__mod__: "mod", torch.Tensor.__rmod__: "rmod",
    torch.Tensor.__lt__: "lt", torch.Tensor.__le__: "le", torch.Tensor.__gt__: "gt",
    torch.Tensor.__ge__: "ge", torch.Tensor.__eq__: "eq", torch.Tensor.__ne__: "ne",
    torch.Tensor.__and__: "and", torch.Tensor.__rand__: "rand", torch.Tensor.__or__: "or",
    torch.Tensor.__ror__: "ror", torch.Tensor.__pow__: "pow",
    torch.add: "add", torch.sub: "sub", torch.mul: "mul", torch.div: "div",
}
_CONSTRUCT_HINT = (
    "mods are traced once with symbolic values and compiled into the kernel; use "
    "torch.where instead of if/else, & | ~ instead of and/or/not, and no chained "
    "comparisons (a < b < c); see src/attnforms/ops/softmax/MODS.md"
)


class Proxy:
    """A symbolic value during tracing."""

    __slots__ = ("node", "graph")

    def __init__(self, node: Node, graph: Graph):
        self.node, self.graph = node, graph

    # Python control flow on a traced value
    def __bool__(self):
        raise ModError(f"a mod used a traced value as a Python bool (if / and / or / not / "
                       f"chained comparison); {_CONSTRUCT_HINT}")

    def __index__(self):
        raise ModError(f"a mod used a traced value as a Python int (e.g. range(), list "
                       f"index, slicing); {_CONSTRUCT_HINT}")

    __int__ = __float__ = __index__

    def __iter__(self):
        raise ModError(f"a mod iterated over a traced value; {_CONSTRUCT_HINT}")

    def __len__(self):
        raise ModError(f"a mod took len() of a traced value; {_CONSTRUCT_HINT}")

    def __setitem__(self, key, value):
        raise ModError(f"a mod assigned into a traced value (in-place); {_CONSTRUCT_HINT}")

    def __getitem__(self, key):
        raise ModError(f"a mod indexed a traced argument (score[...], q_idx[...]); index "
                       f"captured tensors only; {_CONSTRUCT_HINT}")

    def __getattr__(self, name):
        if name in _METHODS:
            return lambda *a, **kw: _METHODS[name](self, *a, **kw)
        raise ModError(f"a mod used `.{name}` on a traced value, which the kernel compiler "
                       f"does not support; {_CONSTRUCT_HINT}")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        graph = next(a.graph for a in _flatten((args, kwargs)) if isinstance(a, Proxy))
        if func is torch.Tensor.__getitem__:
            return _load(graph, args[0], args[1])
        if func in (torch.where, torch.Tensor.where):
            if func is torch.Tensor.where:  # x.where(cond, y)
                args = (args[1], args[0], args[2])
            if len(args) != 3 or kwargs:
                raise ModError("torch.where in a mod takes three arguments (cond, a, b)")
            return _op(graph, "where", *args)
        if func in (torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip):
            x, *rest = args
            low = rest[0] if len(rest) > 0 else kwargs.get("min")
            high = rest[1] if len(rest) > 1 else kwargs.get("max")
            out = _wrap(graph, x)
            if low is not None:
                out = _op(graph, "maximum", out, low, clamp=True)
            if high is not None:
                out = _op(graph, "minimum", out, high, clamp=True)
            return out
        if func in _UNARY and not kwargs and len(args) == 1:
            return _op(graph, _UNARY[func], args[0])
        if func in _BINARY and not kwargs and len(args) == 2:
            return _op(graph, _BINARY[func], *args)
        name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        raise ModError(f"a mod called torch `{name}`, which the kernel compiler does not "
                       f"support (allowed: + - * / // % ** comparisons & | ~ where exp log tanh "
                       f"sigmoid abs sqrt minimum maximum clamp floor, and indexing captured "
                       f"tensors); {_CONSTRUCT_HINT}")


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flatten(y)
    else:
        yield x


def _binary(name):
    return lambda self, other: _op(self.graph, name, self, other)


for _name in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "floordiv",
              "rfloordiv", "mod", "rmod", "lt", "le", "gt", "ge", "eq", "ne", "and", "rand",
              "or", "ror", "pow", "xor", "rxor", "rpow", "matmul", "rmatmul", "lshift", "rshift"):
    _op_name = {"truediv": "div", "rtruediv": "rdiv"}.get(_name, _name)
    setattr(Proxy, f"__{_name}__", _binary(_op_name))
Proxy.__neg__ = lambda self: _op(self.graph, "neg", self)
Proxy.__pos__ = lambda self: self
Proxy.__invert__ = lambda self: _op(self.graph, "invert", self)
Proxy.__abs__ = lambda self: _op(self.graph, "abs", self)
Proxy.__hash__ = object.__hash__

_METHODS = {
    "exp": lambda x: _op(x.graph, "exp", x), "log": lambda x: _op(x.graph, "log", x),
    "tanh": lambda x: _op(x.graph, "tanh", x), "sigmoid": lambda x: _op(x.graph, "sigmoid", x),
    "abs": lambda x: _op(x.graph, "abs", x), "sqrt": lambda x: _op(x.graph, "sqrt", x),
    "floor": lambda x: _op(x.graph, "floor", x),
    "clamp": lambda x, min=None, max=None: torch.clamp(x, min, max),
    "where": lambda x, cond, other: torch.where(cond, x, other),
}


def _wrap(graph: Graph, x) -> Proxy:
    if isinstance(x, Proxy):
        return x
    if isinstance(x, bool):
        return Proxy(graph.add(Node("const", kind="b", value=x)), graph)
    if isinstance(x, int):
        return Proxy(graph.add(Node("const", kind="i", value=x)), graph)
    if isinstance(x, float):
        return Proxy(graph.add(Node("const", kind="f", value=x)), graph)
    if isinstance(x, torch.Tensor) and x.ndim == 0:
        return _load(graph, x, ())  # a captured scalar tensor
    if isinstance(x, torch.Tensor):
        raise ModError(f"a mod combined a captured tensor of shape {list(x.shape)} with a "
                       f"traced value without indexing it; index it to one element per "
                       f"pair (e.g. bias[h, q_idx - kv_idx]); {_CONSTRUCT_HINT}")
    raise ModError(f"a mod used a value of type {type(x).__name__} ({x!r}); {_CONSTRUCT_HINT}")


def _kind_of_dtype(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "b"
    if dtype.is_floating_point:
        return "f"
    if dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        return "i"
    raise ModError(f"a mod indexed a captured tensor of dtype {dtype}; the kernel takes "
                   f"bool, integer and float tensors")


def _load(graph: Graph, tensor, index) -> Proxy:
    if not isinstance(tensor, torch.Tensor) or isinstance(tensor, Proxy):
        raise ModError(f"a mod indexed something other than a captured tensor; {_CONSTRUCT_HINT}")
    index = index if isinstance(index, tuple) else (index,)
    if len(index) != tensor.ndim:
        raise ModError(f"a mod indexed a captured tensor of shape {list(tensor.shape)} with "
                       f"{len(index)} indices; give one index per dimension so each pair reads "
                       f"one element (no slices, no partial indexing)")
    if tensor.is_complex():
        raise ModError("a mod indexed a complex tensor")
    kind = _kind_of_dtype(tensor.dtype)
    parts = []
    for d, i in enumerate(index):
        if isinstance(i, (slice, type(Ellipsis))) or i is None:
            raise ModError(f"a mod sliced a captured tensor; {_CONSTRUCT_HINT}")
        if isinstance(i, int) and not isinstance(i, bool):
            i = i + tensor.shape[d] if i < 0 else i  # Python's negative indices
        p = _wrap(graph, i)
        if p.node.kind != "i":
            raise ModError(f"a mod indexed a captured tensor with a {'float' if p.node.kind == 'f' else 'bool'} "
                           f"value; indices must be integers")
        parts.append(p.node)
    slot = graph.capture(tensor)
    deps = frozenset().union(*(n.deps for n in parts)) if parts else frozenset()
    leaf = kind == "f" and tensor.requires_grad
    node = Node("load", tuple(parts), kind, deps, value=slot, grad_leaf=leaf, needs=leaf)
    return Proxy(graph.add(node), graph)


_COMPARE = {"lt", "le", "gt", "ge", "eq", "ne"}
_LOGIC = {"and", "or", "xor"}
_REVERSED = {"radd": "add", "rsub": "sub", "rmul": "mul", "rdiv": "div", "rfloordiv": "floordiv",
             "rmod": "mod", "rand": "and", "ror": "or", "rxor": "xor", "rpow": "pow"}


def _op(graph: Graph, name: str, *args, clamp: bool = False) -> Proxy:
    if name in _REVERSED:
        name, args = _REVERSED[name], args[::-1]
    if name in ("matmul", "rmatmul", "lshift", "rshift"):
        raise ModError(f"a mod used the operator `{name}`; {_CONSTRUCT_HINT}")
    if name == "pow":
        base, exponent = args
        if isinstance(exponent, Proxy) or not isinstance(exponent, int) or isinstance(exponent, bool):
            raise ModError(f"a mod raised to the power {exponent!r}: only constant integer powers "
                           f"(x ** 2) are supported; use torch.exp / torch.sqrt otherwise")
        base = _wrap(graph, base)
        if base.node.kind == "b":
            raise ModError("a mod raised a bool to a power")
        if exponent < 0 and base.node.kind != "f":
            raise ModError("a mod raised an integer to a negative power")
        node = Node("pow", (base.node,), base.node.kind, base.node.deps, value=exponent,
                    needs=base.node.needs)
        return Proxy(graph.add(node), graph)
    nodes = tuple(_wrap(graph, a).node for a in args)
    kinds = [n.kind for n in nodes]
    deps = frozenset().union(*(n.deps for n in nodes))
    if name == "where":
        cond, a, b = nodes
        if cond.kind != "b":
            raise ModError("torch.where in a mod needs a bool condition (a comparison or a mask)")
        kind = _promote(a.kind, b.kind)
    elif name in _COMPARE:
        kind = "b"
    elif name in _LOGIC:
        if "f" in kinds:
            raise ModError(f"a mod applied `{name}` to a float; & | ^ take bools or integers")
        kind = "b" if all(k == "b" for k in kinds) else "i"
    elif name == "invert":
        if kinds[0] == "f":
            raise ModError("a mod applied ~ to a float")
        kind = kinds[0]
    elif name in ("exp", "log", "tanh", "sigmoid", "sqrt", "div"):
        kind = "f"
    elif name == "floor":
        kind = "f" if kinds[0] == "f" else kinds[0]
    else:  # add sub mul floordiv mod neg abs minimum maximum
        kind = _promote(*kinds)
    if clamp and any(n.needs and n.op != "arg" for n in nodes[1:]):
        raise ModError("a mod clamps with bounds that depend on a captured tensor requiring grad; "
                       "the kernel does not differentiate clamp bounds")
    needs = kind == "f" and any(n.needs for n in nodes)
    return Proxy(graph.add(Node(name, nodes, kind, deps, value="clamp" if clamp else None, needs=needs)), graph)


def _promote(*kinds) -> str:
    return "f" if "f" in kinds else "i"


def _needs_grad(node: Node) -> bool:
    """The node depends on the score or on a captured tensor requiring grad."""
    return node.needs


def trace(fn, kind: str) -> Graph:
    """Trace a `score_mod` (kind 'score') or `mask_mod` (kind 'mask') into a Graph."""
    graph = Graph()
    names = ("score", "b", "h", "q_idx", "kv_idx") if kind == "score" else ("b", "h", "q_idx", "kv_idx")
    deps = dict(score=frozenset("qk"), b=frozenset(), h=frozenset(), q_idx=frozenset("q"),
                kv_idx=frozenset("k"))
    args = [Proxy(graph.add(Node("arg", kind="f" if n == "score" else "i", deps=deps[n], value=n,
                                 needs=n == "score")), graph)
            for n in names]
    try:
        out = fn(*args)
    except ModError:
        raise
    except Exception as exc:  # an error inside the mod: say where it happened
        raise ModError(f"tracing the {kind}_mod {getattr(fn, '__name__', fn)!r} failed with "
                       f"{type(exc).__name__}: {exc}; {_CONSTRUCT_HINT}") from exc
    if isinstance(out, torch.Tensor) and not isinstance(out, Proxy):
        raise ModError(f"the {kind}_mod returned a tensor that does not depend on its arguments")
    out = _wrap(graph, out)
    if kind == "mask" and out.node.kind != "b":
        raise ModError("the mask_mod must return a bool (a comparison, & | ~ of comparisons, "
                       "or a bool captured tensor)")
    if kind == "score" and out.node.kind == "b":
        raise ModError("the score_mod returned a bool; it must return a score")
    graph.output = out.node
    return graph


# ----------------------------------------------------------------------------- emission
def structure(graph: Graph) -> str:
    """A text key of the graph: same key, same generated code."""
    ids = {id(n): i for i, n in enumerate(graph.nodes)}
    lines = []
    for n in graph.nodes:
        args = ",".join(str(ids[id(a)]) for a in n.args)
        extra = ""
        if n.op == "load":
            t = graph.captures[n.value]
            extra = f"c{n.value}:{t.ndim}:{n.kind}:{n.grad_leaf}"
        lines.append(f"{n.op}({args}){n.kind}{n.value if n.op != 'load' else ''}{extra}")
    lines.append(f"out={ids[id(graph.output)]}")
    return ";".join(lines)


def capture_params(prefix: str, graph: Graph | None) -> list[str]:
    """Kernel parameter names of the captured tensors of one mod."""
    names = []
    for i, t in enumerate(graph.captures if graph else ()):
        names.append(f"{prefix}{i}")
        names.append(f"{prefix}{i}_g")
        for d in range(t.ndim):
            names += [f"{prefix}{i}_n{d}", f"{prefix}{i}_s{d}"]
    return names


def capture_ints(prefix: str, graph: Graph | None) -> list[str]:
    return [n for n in capture_params(prefix, graph) if "_n" in n or "_s" in n]


def capture_values(prefix: str, graph: Graph | None, grads: dict | None = None) -> dict:
    """Keyword arguments for the kernels: pointer, gradient buffer, sizes and strides."""
    values = {}
    for i, t in enumerate(graph.captures if graph else ()):
        values[f"{prefix}{i}"] = t.detach()
        g = (grads or {}).get(i)
        values[f"{prefix}{i}_g"] = g if g is not None else t.detach()
        for d in range(t.ndim):
            values[f"{prefix}{i}_n{d}"] = t.shape[d]
            values[f"{prefix}{i}_s{d}"] = t.stride(d)
    return values


class _Emitter:
    def __init__(self, graph: Graph, prefix: str):
        self.graph, self.prefix = graph, prefix
        self.lines: list[str] = []
        self.names: dict[int, str] = {}
        self.counter = 0
        self.index = {id(n): i for i, n in enumerate(graph.nodes)}

    def fresh(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def let(self, expr: str) -> str:
        name = self.fresh()
        self.lines.append(f"    {name} = {expr}")
        return name

    def val(self, node: Node) -> str:
        return self.names[id(node)]

    def as_float(self, node: Node) -> str:
        v = self.val(node)
        if node.op == "const":
            return repr(float(node.value))
        return v if node.kind == "f" else f"{v}.to(tl.float32)"

    def as_int(self, node: Node) -> str:
        v = self.val(node)
        return f"{v}.to(tl.int32)" if node.kind == "b" and node.op != "const" else v

    def forward(self):
        for n in self.graph.nodes:
            self.names[id(n)] = self._node(n)

    def _node(self, n: Node) -> str:
        a = n.args
        if n.op == "arg":
            return {"score": "score", "b": "b", "h": "h", "q_idx": "q_idx", "kv_idx": "kv_idx"}[n.value]
        if n.op == "const":
            return repr(n.value) if n.kind != "b" else ("True" if n.value else "False")
        if n.op == "load":
            p = f"{self.prefix}{n.value}"
            offset, inside = "0", "True"
            for d, i in enumerate(a):
                if i.op == "const":
                    ix = repr(int(i.value))
                else:
                    ix = self.let(f"_wrap_index({self.as_int(i)}, {p}_n{d})")
                offset = f"{offset} + {ix} * {p}_s{d}"
                inside = f"{inside} & ({ix} >= 0) & ({ix} < {p}_n{d})"
            off = self.let(offset)
            ok = self.let(inside)
            self.lines.append(f"    {self.prefix}off_{self.index[id(n)]} = {off}")
            self.lines.append(f"    {self.prefix}ok_{self.index[id(n)]} = {ok}")
            loaded = f"tl.load({p} + {off}, mask={ok}, other=0)"
            if n.kind == "f":
                return self.let(f"{loaded}.to(tl.float32)")
            if n.kind == "b":
                return self.let(f"{loaded} != 0")
            return self.let(loaded)
        if n.op in ("add", "sub", "mul"):
            sym = {"add": "+", "sub": "-", "mul": "*"}[n.op]
            if n.kind == "f":
                return self.let(f"{self.as_float(a[0])} {sym} {self.as_float(a[1])}")
            return self.let(f"{self.as_int(a[0])} {sym} {self.as_int(a[1])}")
        if n.op == "div":
            return self.let(f"{self.as_float(a[0])} / {self.as_float(a[1])}")
        if n.op == "floordiv":
            if n.kind == "f":
                return self.let(f"tl.floor({self.as_float(a[0])} / {self.as_float(a[1])})")
            return self.let(f"_floordiv({self.as_int(a[0])}, {self.as_int(a[1])})")
        if n.op == "mod":
            if n.kind == "f":
                x, y = self.as_float(a[0]), self.as_float(a[1])
                return self.let(f"{x} - tl.floor({x} / {y}) * {y}")
            x, y = self.as_int(a[0]), self.as_int(a[1])
            return self.let(f"{x} - _floordiv({x}, {y}) * {y}")
        if n.op == "neg":
            return self.let(f"-{self.val(a[0]) if a[0].kind != 'b' else self.as_int(a[0])}")
        if n.op == "pow":
            x = self.as_float(a[0]) if n.kind == "f" else self.val(a[0])
            e = abs(n.value)
            expr = "1.0" if n.kind == "f" else "1"
            if e > 0:
                expr = " * ".join([x] * e)
            return self.let(f"1.0 / ({expr})" if n.value < 0 else f"({expr}) + 0")
        if n.op in _COMPARE:
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[n.op]
            if "f" in (a[0].kind, a[1].kind):
                return self.let(f"{self.as_float(a[0])} {sym} {self.as_float(a[1])}")
            return self.let(f"{self.as_int(a[0])} {sym} {self.as_int(a[1])}")
        if n.op in _LOGIC:
            sym = {"and": "&", "or": "|", "xor": "^"}[n.op]
            if n.kind == "b":
                return self.let(f"({self.val(a[0])}) {sym} ({self.val(a[1])})")
            return self.let(f"{self.as_int(a[0])} {sym} {self.as_int(a[1])}")
        if n.op == "invert":
            return self.let(f"~({self.val(a[0])})" if n.kind == "i" else f"tl.where({self.val(a[0])}, 0, 1) != 0")
        if n.op == "where":
            if n.kind == "f":
                return self.let(f"tl.where({self.val(a[0])}, {self.as_float(a[1])}, {self.as_float(a[2])})")
            return self.let(f"tl.where({self.val(a[0])}, {self.as_int(a[1])}, {self.as_int(a[2])})")
        if n.op in ("minimum", "maximum"):
            fn = "tl.minimum" if n.op == "minimum" else "tl.maximum"
            if n.kind == "f":
                return self.let(f"{fn}({self.as_float(a[0])}, {self.as_float(a[1])})")
            return self.let(f"{fn}({self.as_int(a[0])}, {self.as_int(a[1])})")
        if n.op == "abs":
            return self.let(f"tl.abs({self.as_float(a[0]) if n.kind == 'f' else self.as_int(a[0])})")
        if n.op == "floor":
            return self.let(f"tl.floor({self.val(a[0])})" if n.kind == "f" else self.val(a[0]))
        if n.op in ("exp", "log", "sqrt"):
            return self.let(f"tl.{n.op}({self.as_float(a[0])})")
        if n.op == "tanh":
            x = self.as_float(a[0])  # tanh(x) = 1 - 2 / (e^{2x} + 1): finite for every x
            return self.let(f"1.0 - 2.0 / (tl.exp(2.0 * {x}) + 1.0)")
        if n.op == "sigmoid":
            return self.let(f"1.0 / (1.0 + tl.exp(-{self.as_float(a[0])}))")
        raise ModError(f"internal: no emission rule for {n.op}")

    def backward(self, grad: str, keep: str) -> tuple[str, list[str]]:
        """Reverse-mode lines after `forward`; returns the score gradient expression and
        the atomic-add lines of the captured leaves."""
        adj: dict[int, str] = {id(self.graph.output): grad}
        atomics = []
        score_grad = "0.0"
        for n in reversed(self.graph.nodes):
            if id(n) not in adj or not _needs_grad(n):
                continue
            g = adj[id(n)]
            a = n.args

            def push(node, expr):
                if not _needs_grad(node):
                    return
                if id(node) in adj:
                    adj[id(node)] = self.let(f"{adj[id(node)]} + {expr}")
                else:
                    adj[id(node)] = self.let(expr)

            v = self.val(n)
            if n.op == "arg":
                score_grad = g
            elif n.op == "load":
                if not n.grad_leaf:
                    continue
                p = f"{self.prefix}{n.value}"
                total = self.let(f"tl.where(keep, {g}, 0.0) + tl.zeros_like(keep.to(tl.float32))")
                off, ok = f"{self.prefix}off_{self.index[id(n)]}", f"{self.prefix}ok_{self.index[id(n)]}"
                if "q" not in n.deps and "k" not in n.deps:
                    atomics.append(f"tl.atomic_add({p}_g + {off}, tl.sum(tl.sum({total}, 1), 0), mask={ok})")
                elif "k" not in n.deps:  # varies with the query only: reduce over keys
                    atomics.append(f"tl.atomic_add({p}_g + {off}, tl.expand_dims(tl.sum({total}, KEYS_AXIS), "
                                   f"KEYS_AXIS), mask={ok})")
                elif "q" not in n.deps:  # with the key only: reduce over queries
                    atomics.append(f"tl.atomic_add({p}_g + {off}, tl.expand_dims(tl.sum({total}, QUERY_AXIS), "
                                   f"QUERY_AXIS), mask={ok})")
                else:
                    atomics.append(f"tl.atomic_add({p}_g + {off}, {total}, mask={ok} & keep)")
            elif n.op == "add":
                push(a[0], g); push(a[1], g)
            elif n.op == "sub":
                push(a[0], g); push(a[1], f"-{g}")
            elif n.op == "mul":
                push(a[0], f"{g} * {self.as_float(a[1])}"); push(a[1], f"{g} * {self.as_float(a[0])}")
            elif n.op == "div":
                x, y = self.as_float(a[0]), self.as_float(a[1])
                push(a[0], f"{g} / {y}"); push(a[1], f"-{g} * {x} / ({y} * {y})")
            elif n.op == "mod":
                x, y = self.as_float(a[0]), self.as_float(a[1])
                push(a[0], g); push(a[1], f"-{g} * tl.floor({x} / {y})")
            elif n.op in ("floordiv", "floor"):
                pass  # piecewise constant: zero gradient (as torch)
            elif n.op == "neg":
                push(a[0], f"-{g}")
            elif n.op == "pow":
                x, e = self.as_float(a[0]), n.value
                if e != 0:
                    powm1 = " * ".join([x] * (abs(e) - 1)) if abs(e) > 1 else "1.0"
                    if e > 0:
                        push(a[0], f"{g} * {e}.0 * ({powm1})")
                    else:
                        push(a[0], f"{g} * {e}.0 * {v} / {x}")
            elif n.op == "exp":
                push(a[0], f"{g} * {v}")
            elif n.op == "log":
                push(a[0], f"{g} / {self.as_float(a[0])}")
            elif n.op == "sqrt":
                push(a[0], f"{g} * 0.5 / {v}")
            elif n.op == "tanh":
                push(a[0], f"{g} * (1.0 - {v} * {v})")
            elif n.op == "sigmoid":
                push(a[0], f"{g} * {v} * (1.0 - {v})")
            elif n.op == "abs":
                x = self.as_float(a[0])
                push(a[0], f"tl.where({x} > 0, {g}, tl.where({x} < 0, -{g}, 0.0))")
            elif n.op == "where":
                push(a[1], f"tl.where({self.val(a[0])}, {g}, 0.0)")
                push(a[2], f"tl.where({self.val(a[0])}, 0.0, {g})")
            elif n.op in ("minimum", "maximum"):
                x, y = self.as_float(a[0]), self.as_float(a[1])
                if n.value == "clamp":  # clamp: the gradient passes inside [min, max] inclusive
                    inside = f"{x} <= {y}" if n.op == "minimum" else f"{x} >= {y}"
                    push(a[0], f"tl.where({inside}, {g}, 0.0)")
                else:  # torch splits a tie evenly
                    first = f"{x} < {y}" if n.op == "minimum" else f"{x} > {y}"
                    second = f"{y} < {x}" if n.op == "minimum" else f"{y} > {x}"
                    push(a[0], f"tl.where({first}, {g}, tl.where({x} == {y}, 0.5 * {g}, 0.0))")
                    push(a[1], f"tl.where({second}, {g}, tl.where({x} == {y}, 0.5 * {g}, 0.0))")
            else:
                raise ModError(f"internal: no gradient rule for {n.op}")
        return score_grad, atomics


def emit_mods(score_graph: Graph | None, mask_graph: Graph | None) -> str:
    """Source of the three helpers the kernels call."""
    sp = ", ".join(capture_params("sc", score_graph))
    mp = ", ".join(capture_params("mc", mask_graph))
    sp, mp = (", " + sp) if sp else "", (", " + mp) if mp else ""
    out = []
    if score_graph is None:
        out.append(f"@triton.jit\ndef _score_mod(score, b, h, q_idx, kv_idx{sp}):\n    return score\n")
        out.append(f"@triton.jit\ndef _score_mod_bwd(score, b, h, q_idx, kv_idx, grad, keep, "
                   f"ACCUMULATE: tl.constexpr, KEYS_AXIS: tl.constexpr, QUERY_AXIS: tl.constexpr{sp}):\n"
                   f"    return grad\n")
    else:
        e = _Emitter(score_graph, "sc")
        e.forward()
        body = "\n".join(e.lines)
        ret = e.as_float(score_graph.output)
        out.append(f"@triton.jit\ndef _score_mod(score, b, h, q_idx, kv_idx{sp}):\n{body}\n"
                   f"    return {ret} + tl.zeros_like(score)\n")
        e2 = _Emitter(score_graph, "sc")
        e2.forward()
        score_grad, atomics = e2.backward("grad", "keep")
        body2 = "\n".join(e2.lines)
        acc = "\n".join(f"        {line}" for line in atomics) or "        pass"
        out.append(f"@triton.jit\ndef _score_mod_bwd(score, b, h, q_idx, kv_idx, grad, keep, "
                   f"ACCUMULATE: tl.constexpr, KEYS_AXIS: tl.constexpr, QUERY_AXIS: tl.constexpr{sp}):\n{body2}\n    if ACCUMULATE:\n{acc}\n"
                   f"    return tl.where(keep, {score_grad} + tl.zeros_like(grad), 0.0)\n")
    if mask_graph is None:
        out.append(f"@triton.jit\ndef _mask_mod(b, h, q_idx, kv_idx{mp}):\n    return q_idx >= -2147483647\n")
    else:
        e = _Emitter(mask_graph, "mc")
        e.forward()
        body = "\n".join(e.lines) or "    pass"
        ret = e.val(mask_graph.output)
        out.append(f"@triton.jit\ndef _mask_mod(b, h, q_idx, kv_idx{mp}):\n{body}\n"
                   f"    return ({ret}) | (q_idx < -2147483647)\n")
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- modules
_CACHE_DIR = os.environ.get("ATTNFORMS_KERNEL_CACHE") or os.path.join(
    tempfile.gettempdir(), f"attnforms-softmax-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}")
_modules: dict[str, object] = {}
_by_key: dict[str, object] = {}
_lock = threading.Lock()
TEMPLATE = os.path.join(os.path.dirname(__file__), "template.py")


@functools.cache
def _template_text() -> str:
    with open(TEMPLATE) as f:
        return f.read()


with open(__file__) as _f:  # the emitter's own code names the cache files too
    _COMPILER_VERSION = hashlib.sha256(_f.read().encode()).hexdigest()


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
