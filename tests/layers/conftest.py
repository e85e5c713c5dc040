"""Run these tests on one intra-op thread.

They push tiny tensors through many small ops, where a second thread gains nothing; on a
machine whose cores are busy with other work, the OpenMP barrier of every parallel op
then waits for a descheduled thread, which made these tests 10-100x slower.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
