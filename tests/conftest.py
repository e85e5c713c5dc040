"""Test-wide setup: the Triton interpreter on CPU-only machines, seeding, and
NaN-poisoned allocations.

`torch.empty` / `torch.empty_like` / `Tensor.new_empty` return uninitialised memory, which
is often zero by luck; a kernel or reference that reads an allocation before writing it
would then pass by accident. Here every floating allocation made through them is filled
with NaN, so such a read shows up as NaN in the result.
"""
import os

import torch

# Triton kernels run on CPU tensors through Triton's interpreter. Triton reads this when
# a kernel is defined, so it is set before any test module imports attnforms; `impl="auto"`
# never picks the interpreter, so only tests that ask for impl="triton" use it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Under pytest-xdist (`-n N`) the N worker processes share the machine's cores: each takes
# its share of intra-op threads instead of all of them, which would oversubscribe the cores.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

_empty, _empty_like, _new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty


def _poison(x: torch.Tensor) -> torch.Tensor:
    if x.is_floating_point():
        with torch.no_grad():
            x.fill_(float("nan"))
    return x


@pytest.fixture(autouse=True)
def nan_poisoned_allocations(monkeypatch):
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: _poison(_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: _poison(_empty_like(*a, **kw)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **kw: _poison(_new_empty(self, *a, **kw)))
    yield


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    yield


# Tests of small models push tiny tensors through many small ops: a second intra-op thread
# gains nothing there, and on a machine whose cores are busy with other work every
# parallel op's barrier waits for a descheduled thread (10-100x slower, measured).
ONE_THREAD_DIRECTORIES = ("layers", "models", "tasks", "demo")


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, restoring the count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent.name in ONE_THREAD_DIRECTORIES:
            item.add_marker(pytest.mark.usefixtures("one_thread"))
