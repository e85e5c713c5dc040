"""Step 2 of the mod compiler (modc.py): a traced graph (mod_trace.py) becomes the
body of `@triton.jit` helpers (`_score_mod`, `_score_mod_bwd`, `_mask_mod`), and the
captured tensors become kernel parameters (pointer, gradient buffer, sizes, strides).

The backward helper is the graph differentiated in reverse mode: it returns
d(score_mod)/d(score) times the incoming gradient and, in the kernel that owns them,
adds the gradients of captured float tensors with atomics.
"""
from __future__ import annotations

from .mod_trace import _COMPARE, _LOGIC, Graph, ModError, Node, _needs_grad


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

    def operands(self, as_float: bool, *nodes: Node) -> list[str]:
        """The nodes' values all as float32 (`as_float`) or all as integers: the operands
        of one binary or ternary operator."""
        return [self.as_float(x) if as_float else self.as_int(x) for x in nodes]

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
            x, y = self.operands(n.kind == "f", a[0], a[1])
            return self.let(f"{x} {sym} {y}")
        if n.op == "div":
            return self.let(f"{self.as_float(a[0])} / {self.as_float(a[1])}")
        if n.op == "floordiv":
            if n.kind == "f":
                return self.let(f"tl.floor({self.as_float(a[0])} / {self.as_float(a[1])})")
            return self.let(f"_floordiv({self.as_int(a[0])}, {self.as_int(a[1])})")
        if n.op == "mod":
            x, y = self.operands(n.kind == "f", a[0], a[1])
            floor = f"tl.floor({x} / {y})" if n.kind == "f" else f"_floordiv({x}, {y})"
            return self.let(f"{x} - {floor} * {y}")
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
            x, y = self.operands("f" in (a[0].kind, a[1].kind), a[0], a[1])
            return self.let(f"{x} {sym} {y}")
        if n.op in _LOGIC:
            sym = {"and": "&", "or": "|", "xor": "^"}[n.op]
            if n.kind == "b":
                return self.let(f"({self.val(a[0])}) {sym} ({self.val(a[1])})")
            x, y = self.operands(False, a[0], a[1])
            return self.let(f"{x} {sym} {y}")
        if n.op == "invert":
            return self.let(f"~({self.val(a[0])})" if n.kind == "i" else f"tl.where({self.val(a[0])}, 0, 1) != 0")
        if n.op == "where":
            x, y = self.operands(n.kind == "f", a[1], a[2])
            return self.let(f"tl.where({self.val(a[0])}, {x}, {y})")
        if n.op in ("minimum", "maximum"):
            fn = "tl.minimum" if n.op == "minimum" else "tl.maximum"
            x, y = self.operands(n.kind == "f", a[0], a[1])
            return self.let(f"{fn}({x}, {y})")
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
