"""A tiny model for the training tests: any nn.Module from ids to logits will do."""
import pytest
import torch
from torch import nn


class TinyCausalModel(nn.Module):
    """ids `[B, T]` -> logits `[B, T, V]`: an embedding, a causal mixing layer (each
    position sees its own embedding and the mean of the prefix up to it), dropout (so that
    resuming must restore the RNG) and a head."""

    def __init__(self, vocab_size: int, width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.mix = nn.Linear(2 * width, width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # [B, T, W]
        prefix_mean = x.cumsum(dim=1) / torch.arange(1, ids.shape[1] + 1, device=ids.device)[:, None]
        h = torch.relu(self.mix(torch.cat([x, prefix_mean], dim=-1)))  # [B, T, W]
        return self.head(self.dropout(h))  # [B, T, V]


@pytest.fixture
def tiny_model():
    """tiny_model(vocab_size, seed=0): a TinyCausalModel initialised from `seed`."""

    def make(vocab_size: int, seed: int = 0) -> TinyCausalModel:
        torch.manual_seed(seed)
        return TinyCausalModel(vocab_size)

    return make
