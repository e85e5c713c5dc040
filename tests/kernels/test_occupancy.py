"""kernels/occupancy.py: the sequential passes' value tile narrows until the programs
fill the GPU's multiprocessors (or the asked share of them), and no further than 16; the
split rule."""
import torch

from attnforms.kernels import occupancy


def test_value_tile_narrows_to_fill_the_multiprocessors(monkeypatch):
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 132)
    gpu = torch.device("cuda")
    # S1: 128 sequences·heads x 2 tiles of 64 already fill 132 multiprocessors.
    assert occupancy.narrowed_value_tile(64, 128, 128, gpu) == 64
    # S2: 16 sequences·heads need tiles of 16 (16 x 8 = 128 programs, the narrowest).
    assert occupancy.narrowed_value_tile(64, 128, 16, gpu) == 16
    # A ragged V counts its partial tile: 40 x cdiv(100, 32) = 160 programs at 32.
    assert occupancy.narrowed_value_tile(64, 100, 40, gpu) == 32


def test_value_tile_narrows_to_the_asked_share_of_the_multiprocessors(monkeypatch):
    """The gated delta rule's backward (`NARROW_BACKWARD_FILL` 0.5): S3's 32
    sequences·heads at BV 32 (128 programs) stay wide, S2's 16 (64) narrow; fill 0 never
    narrows."""
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 132)
    gpu = torch.device("cuda")
    assert occupancy.narrowed_value_tile(32, 128, 32, gpu, fill=0.5) == 32
    assert occupancy.narrowed_value_tile(32, 128, 16, gpu, fill=0.5) == 16
    assert occupancy.narrowed_value_tile(32, 128, 1, gpu, fill=0.0) == 32


def test_split_when_too_few_sequences_heads_to_fill(monkeypatch):
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 132)
    gpu = torch.device("cuda")
    assert occupancy.too_few_to_fill(32, 4, gpu)      # 128 < 132
    assert not occupancy.too_few_to_fill(32, 6, gpu)  # 192


def test_off_the_gpu_there_is_one_multiprocessor():
    assert occupancy.multiprocessors(torch.device("cpu")) == 1
    assert occupancy.narrowed_value_tile(64, 128, 1, torch.device("cpu")) == 64
