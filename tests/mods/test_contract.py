"""Every factory's mod stays within the mod contract (mods/README.md), checked by running
it on symbolic proxies: Python control flow on an argument, methods, in-place updates,
torch functions off the list or computation on captured tensors outside indexing all
raise. The checker is itself tested on mods that break each rule."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from attnforms import mods

ALLOWED = {"where", "exp", "log", "tanh", "sigmoid", "abs", "sqrt", "minimum", "maximum", "clamp", "floor"}
RANK = {"bool": 0, "int": 1, "float": 2}


class ContractError(AssertionError):
    pass


def kind_of(x) -> str:
    if isinstance(x, Sym):
        return x.kind
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    raise ContractError(f"a {type(x).__name__} mixed with a mod argument (only Python numbers may be)")


def promote(*xs) -> str:
    return max((kind_of(x) for x in xs), key=RANK.__getitem__)


class Sym:
    """A symbolic scalar: the stand-in for a mod argument or anything derived from it."""

    def __init__(self, kind: str):
        self.kind = kind

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # lets torch accept Sym
        return NotImplemented

    def __bool__(self):
        raise ContractError("Python control flow (if / while / and / or / not) on a mod argument")

    def __index__(self):
        raise ContractError("a mod argument converted to a Python int")

    __int__ = __float__ = __len__ = __iter__ = __index__

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ContractError(f"method or attribute .{name} of a mod argument")

    def __getitem__(self, item):
        raise ContractError("indexing a mod argument (only captured tensors may be indexed)")

    def __pow__(self, other):
        if isinstance(other, bool) or not isinstance(other, int):
            raise ContractError(f"** with a non-integer exponent {other!r}")
        return Sym(self.kind)

    def __rpow__(self, other):
        raise ContractError("** with a mod argument as the exponent")

    def __neg__(self):
        return Sym(self.kind)

    def __invert__(self):
        if self.kind == "float":
            raise ContractError("~ on a float")
        return Sym(self.kind)


def _arith(op_name, *, result=None):
    def forward(self, other):
        kind = result or promote(self, other)
        return Sym("float" if op_name == "truediv" else kind)

    return forward


for name in ("add", "sub", "mul", "truediv", "floordiv", "mod"):
    setattr(Sym, f"__{name}__", _arith(name))
    setattr(Sym, f"__r{name}__", _arith(name))
for name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(Sym, f"__{name}__", _arith(name, result="bool"))
for name in ("and", "or"):
    setattr(Sym, f"__{name}__", _arith(name))
    setattr(Sym, f"__r{name}__", _arith(name))
for name in ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "iand", "ior", "ipow"):
    setattr(Sym, f"__{name}__", lambda self, other, name=name: (_ for _ in ()).throw(
        ContractError(f"in-place update ({name}) of a mod value")))
Sym.__hash__ = object.__hash__


def _tensor_kind(t: torch.Tensor) -> str:
    return "bool" if t.dtype == torch.bool else "float" if t.is_floating_point() else "int"


class Contract(TorchFunctionMode):
    """Intercepts every torch call made while a mod runs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if name == "__getitem__":
            tensor, index = args
            if not isinstance(tensor, torch.Tensor):
                raise ContractError("indexing something other than a captured tensor")
            index = index if isinstance(index, tuple) else (index,)
            if len(index) != tensor.dim() or not all(isinstance(i, (Sym, int)) for i in index):
                raise ContractError(f"captured tensor {list(tensor.shape)} indexed by {index}: "
                                    "expected one index expression per dimension")
            if any(isinstance(i, Sym) and i.kind == "float" for i in index):
                raise ContractError("a captured tensor indexed by a float expression")
            return Sym(_tensor_kind(tensor))
        if name not in ALLOWED or func is not getattr(torch, name, None):
            raise ContractError(f"torch function {name} is not in the mod contract")
        if "out" in kwargs:
            raise ContractError("out= (in-place) in a mod")
        values = [*args, *kwargs.values()]
        if not any(isinstance(a, Sym) for a in values):
            raise ContractError(f"torch.{name} on captured tensors or constants only (compute them in the factory)")
        if any(isinstance(a, torch.Tensor) for a in values):
            raise ContractError(f"torch.{name} given a whole captured tensor (index it first)")
        numeric = [a for a in values if isinstance(a, (Sym, int, float))]
        if name == "where":
            return Sym(promote(args[1], args[2]))
        if name in ("exp", "log", "tanh", "sigmoid", "sqrt"):
            return Sym("float")
        return Sym(promote(*numeric))


def check_mask_mod(mod) -> None:
    with Contract():
        out = mod(Sym("int"), Sym("int"), Sym("int"), Sym("int"))
    if not isinstance(out, Sym) or out.kind != "bool":
        raise ContractError(f"a mask_mod must return a boolean expression, got {getattr(out, 'kind', out)!r}")


def check_score_mod(mod) -> None:
    with Contract():
        out = mod(Sym("float"), Sym("int"), Sym("int"), Sym("int"), Sym("int"))
    if not isinstance(out, Sym) or out.kind != "float":
        raise ContractError(f"a score_mod must return a float expression, got {getattr(out, 'kind', out)!r}")


DOCS = torch.tensor([0, 0, 1, 1, 1])
MASKS = {
    "causal": mods.causal(),
    "sliding_window": mods.sliding_window(4),
    "prefix_lm-int": mods.prefix_lm(3),
    "prefix_lm-tensor": mods.prefix_lm(torch.tensor([1, 2])),
    "document-[T]": mods.document(DOCS),
    "document-[B,T]": mods.document(DOCS[None].repeat(2, 1)),
    "sink_tokens": mods.sink_tokens(2, 3),
    "neighbourhood_2d": mods.neighbourhood_2d(4, 5, 3),
    "and_masks": mods.and_masks(mods.causal(), mods.document(DOCS)),
    "or_masks": mods.or_masks(mods.sliding_window(2), mods.prefix_lm(1), mods.causal()),
}
SCORES = {
    "alibi": mods.alibi(6),
    "alibi-bidirectional": mods.alibi(5, bidirectional=True),
    "tanh_softcap": mods.tanh_softcap(30.0),
    "t5_relative_bias-encoder": mods.t5_relative_bias(torch.zeros(2, 32)),
    "t5_relative_bias-decoder": mods.t5_relative_bias(torch.zeros(2, 32), bidirectional=False),
    "forgetting": mods.forgetting(torch.zeros(2, 3, 5)),
    "box_rpb": mods.box_rpb(torch.zeros(2, 3, 4, 2), torch.zeros(2, 3, 5, 2)),
    "compose_scores": mods.compose_scores(mods.alibi(2), mods.tanh_softcap(5.0)),
}


def test_catalogue_is_covered():
    """A new factory must be added to this checker (MASKS / SCORES above)."""
    covered = {name.split("-")[0] for name in [*MASKS, *SCORES]} - {"and_masks", "or_masks", "compose_scores"}
    assert covered == set(mods.MASK_MODS) | set(mods.SCORE_MODS)


@pytest.mark.parametrize("name", MASKS)
def test_mask_mods_obey_the_contract(name):
    check_mask_mod(MASKS[name])


@pytest.mark.parametrize("name", SCORES)
def test_score_mods_obey_the_contract(name):
    check_score_mod(SCORES[name])


TABLE = torch.zeros(4)
BROKEN_MASKS = {
    "python-if": lambda b, h, q, kv: (kv <= q) if q > 3 else (kv == q),
    "python-and": lambda b, h, q, kv: (kv <= q) and (kv >= 0),
    "python-not": lambda b, h, q, kv: not (kv > q),
    "method": lambda b, h, q, kv: (q - kv).abs() < 3,
    "item": lambda b, h, q, kv: kv <= q.item(),
    "torch-function": lambda b, h, q, kv: torch.remainder(q, 2) == 0,
    "whole-tensor": lambda b, h, q, kv: kv < torch.exp(TABLE).sum(),
    "constant": lambda b, h, q, kv: True,
    "float-index": lambda b, h, q, kv: TABLE[q / 2] > 0,
    "not-bool": lambda b, h, q, kv: kv - q,
}


def _in_place(score, b, h, q, kv):
    score += 1.0
    return score


BROKEN_SCORES = {
    "in-place": _in_place,
    "fractional-power": lambda score, b, h, q, kv: score + (q - kv) ** 0.5,
    "torch-function": lambda score, b, h, q, kv: torch.softmax(score, dim=-1),
    "mask-returned": lambda score, b, h, q, kv: kv <= q,
}


@pytest.mark.parametrize("name", BROKEN_MASKS)
def test_checker_catches_broken_mask_mods(name):
    with pytest.raises(ContractError):
        check_mask_mod(BROKEN_MASKS[name])


@pytest.mark.parametrize("name", BROKEN_SCORES)
def test_checker_catches_broken_score_mods(name):
    with pytest.raises(ContractError):
        check_score_mod(BROKEN_SCORES[name])


def test_checker_accepts_the_contract_examples():
    slopes, doc_id, table = torch.zeros(3), torch.zeros(2, 8, dtype=torch.long), torch.zeros(3, 128)
    check_score_mod(lambda s, b, h, q, kv: s - slopes[h] * torch.abs(q - kv))
    check_mask_mod(lambda b, h, q, kv: doc_id[b, q] == doc_id[b, kv])
    check_score_mod(lambda s, b, h, q, kv: s + table[h, torch.clamp(q - kv, 0, 127)])
    check_score_mod(lambda s, b, h, q, kv: torch.where(q >= kv, s, -s) * (q - kv) ** 2)
