"""Step 1 of the mod compiler (modc.py): tracing a `score_mod` / `mask_mod` into an
expression graph.

The mod is called once with proxy objects for its arguments. Python operators and the
allowed torch functions (through `__torch_function__`) record nodes; indexing a captured
tensor (`slopes[h]`) records a load whose leaf is that tensor. Anything outside the
contract (MODS.md) raises `ModError` naming the construct, on first use and before any
kernel is built: `if`/`and`/`or` on a traced value hit `__bool__`, other torch functions
hit `__torch_function__`. The graph records structure only: captured tensors are leaves
by position, so their values, sizes and strides are run-time kernel arguments.
"""
from __future__ import annotations

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
