"""Document mask for packed sequences: tokens only see tokens of their own document."""
from __future__ import annotations

from typing import Callable

import torch

from ._naming import check_captured, named


def document(doc_ids: torch.Tensor) -> Callable:
    """`mask_mod` keeping pairs whose tokens belong to the same document.

    Several documents packed into one row of a `[B, T, ...]` batch attend only inside
    their own document; AND it with causality (`causal=True` in the call, or
    `and_masks(causal(), document(ids))`). `cu_seqlens` does the same for a `B == 1`
    packing without a mod; this mask is for fixed-shape batches whose rows each hold
    several documents.

    Args:
        doc_ids: integer tensor `[B, T]` (per row) or `[T]` (shared by all rows): the
            document of each position, on the device of the call. Positions are the
            mod's absolute `q_idx` / `kv_idx`, so the ids must cover every position the
            call uses (with a KV cache, the whole stream). Indices are clamped into
            `[0, T - 1]` so that an empty cache slot (position -1) reads in bounds; a
            position beyond the table would read its last entry.

    Source: intra-document masking of packed pre-training batches, as used for Llama 3
    (Dubey et al., "The Llama 3 Herd of Models", 2024).
    """
    ids = check_captured("doc_ids", doc_ids, ndims=(1, 2), floating=False)
    last = ids.shape[-1] - 1

    if ids.dim() == 1:

        def document_mask(b, h, q_idx, kv_idx):
            q = torch.clamp(q_idx, 0, last)
            kv = torch.clamp(kv_idx, 0, last)
            return ids[q] == ids[kv]

        return named(document_mask, f"document(doc_ids[{ids.shape[0]}])")

    def document_mask(b, h, q_idx, kv_idx):
        q = torch.clamp(q_idx, 0, last)
        kv = torch.clamp(kv_idx, 0, last)
        return ids[b, q] == ids[b, kv]

    return named(document_mask, f"document(doc_ids[{ids.shape[0]}, {ids.shape[1]}])")
