"""Aaren: attention as an RNN, one query per head, as a prefix scan of softmax triples."""
from .api import FAMILY, aaren
