"""Packed variable-length batches: varlen_attention.

Sequences of different lengths packed one after another along the token
axis, as flash-attn's varlen functions and training loops that pack
documents take them: ``query [total_q, Hq, E]``, ``key [total_k, Hkv, E]``,
``value [total_k, Hkv, Ev]``, and offsets ``cu_seqlens_q`` / ``cu_seqlens_k``
(``[num_seqs + 1]``, from 0 to the totals).

They run on the document-mask path: the packed tensors are one batch entry
(a view, no copy and no padding), and the mask keeps the pairs whose query
and key belong to the same sequence, which the compiled kernel reads from
per-token sequence ids. The kernel summarises those ids per tile when it
runs, so tiles across sequences are skipped, tiles inside one are unmasked,
and new lengths need no new kernel. User mods see each sequence as its own
batch entry: ``b`` is the sequence's index, ``q_idx`` / ``kv_idx`` are
positions within it.
"""

from ._flex import BlockMask, flex_attention

__all__ = ["varlen_attention"]


class _PackedMask(object):
    """mask_mod of a packed batch (see the module's docstring); the ids and
    offsets are attributes, read by the tracer as captured tensors."""

    def __init__(self, mask_mod, causal, shared, ids_q, ids_k, cu_q, cu_k):
        self.mask_mod = mask_mod
        self.causal = causal
        self.shared = shared
        self.ids_q, self.ids_k = ids_q, ids_k
        self.cu_q, self.cu_k = cu_q, cu_k

    def __call__(self, b, h, q_idx, kv_idx):
        seq = self.ids_q[q_idx]
        key_seq = self.ids_k[kv_idx]
        keep = seq == key_seq
        if self.causal:
            if self.shared:
                keep = keep & (q_idx >= kv_idx)
            else:
                # Aligned at the end of the sequence, as flash-attn does:
                # key position - key length <= query position - query length.
                keep = keep & (kv_idx - self.cu_k[seq + 1] <=
                               q_idx - self.cu_q[seq + 1])
        if self.mask_mod is not None:
            # Each index relative to its own sequence, so that the mod never
            # sees a position outside [0, length).
            keep = keep & self.mask_mod(seq, h, q_idx - self.cu_q[seq],
                                        kv_idx - self.cu_k[key_seq])
        return keep

    __call__._attnc_walk = True  # the tracer looks into it


class _PackedScore(object):
    """score_mod of a packed batch: the user's, on sequence-relative
    indices."""

    def __init__(self, score_mod, ids_q, ids_k, cu_q, cu_k):
        self.score_mod = score_mod
        self.ids_q, self.ids_k = ids_q, ids_k
        self.cu_q, self.cu_k = cu_q, cu_k

    def __call__(self, score, b, h, q_idx, kv_idx):
        seq = self.ids_q[q_idx]
        return self.score_mod(score, seq, h, q_idx - self.cu_q[seq],
                              kv_idx - self.cu_k[self.ids_k[kv_idx]])

    __call__._attnc_walk = True


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def _offsets(cu, name, total, library, device, check):
    """`cu` as int32 on the kernel's side, checked (1-D, at least one
    sequence, from 0 to `total`, non-decreasing) where that needs no device
    synchronisation or `check` asks for one."""
    import numpy as np
    if _is_torch(cu):
        import torch
        if cu.dim() != 1 or cu.numel() < 2:
            raise ValueError("varlen_attention: %s must be 1-D with at least "
                             "2 entries ([num_seqs + 1]), got shape %s" %
                             (name, tuple(cu.shape)))
        if cu.is_floating_point() or cu.dtype == torch.bool:
            raise TypeError("varlen_attention: %s must hold integers, got %s"
                            % (name, cu.dtype))
        host = cu if cu.device.type == "cpu" else (cu.cpu() if check
                                                    else None)
        values = None if host is None else host.to(torch.int64).numpy()
    else:
        values = np.asarray(cu)
        if values.ndim != 1 or values.size < 2:
            raise ValueError("varlen_attention: %s must be 1-D with at least "
                             "2 entries ([num_seqs + 1]), got shape %s" %
                             (name, values.shape))
        if values.dtype.kind not in "iu":
            raise TypeError("varlen_attention: %s must hold integers, got %s"
                            % (name, values.dtype))
    if values is not None:
        if values[0] != 0 or values[-1] != total:
            raise ValueError(
                "varlen_attention: %s must run from 0 to the number of packed "
                "tokens (%d), got %d .. %d" % (name, total, values[0],
                                               values[-1]))
        if (np.diff(values) < 0).any():
            raise ValueError("varlen_attention: %s must be non-decreasing" %
                             name)
    if library == "numpy":
        return values.astype(np.int32)
    import torch
    if not _is_torch(cu):
        cu = torch.from_numpy(values)
    return cu.to(device=device, dtype=torch.int32)


def _sequence_ids(cu, total, library):
    """The sequence of each of `total` packed tokens (int32 [total])."""
    if library == "numpy":
        import numpy as np
        return (np.searchsorted(cu[1:], np.arange(total), side="right")
                .astype(np.int32))
    import torch
    positions = torch.arange(total, device=cu.device, dtype=torch.int32)
    return torch.searchsorted(cu[1:], positions, right=True, out_int32=True)


def varlen_attention(query, key, value, cu_seqlens_q, cu_seqlens_k=None,
                     score_mod=None, mask_mod=None, causal=False, scale=None,
                     enable_gqa=False, return_lse=False, check=True):
    """Attention within each of several packed sequences.

    query [total_q, Hq, E], key [total_k, Hkv, E], value [total_k, Hkv, Ev]
    (numpy arrays or torch tensors, CPU or CUDA, as flex_attention takes);
    sequence i is rows cu_seqlens_q[i]:cu_seqlens_q[i + 1] of query and
    cu_seqlens_k[i]:cu_seqlens_k[i + 1] of key and value (cu_seqlens_k
    defaults to cu_seqlens_q). A query attends to the keys of its own
    sequence only; with `causal`, to those at or before its position, the
    two ends aligned as in flash-attn when a sequence has more keys than
    queries. score_mod(score, b, h, q_idx, kv_idx) and mask_mod(b, h, q_idx,
    kv_idx) see b = the sequence's index and positions within it. Returns
    the output [total_q, Hq, Ev] (a view of a [1, Hq, total_q, Ev] result)
    and with `return_lse` the logsumexp [Hq, total_q]. A query without keys
    (an empty key sequence, or every key masked) gets 0 and LSE -inf.
    Differentiable as flex_attention is; no recompilation when the lengths
    change.

    The offsets are checked (from 0 to the totals, non-decreasing); offsets
    on a GPU are copied to the host for that, a synchronisation, unless
    `check=False`, which a CUDA graph capture needs (unchecked offsets that
    are wrong give wrong results, never a fault)."""
    libraries = {"torch" if _is_torch(x) else "numpy"
                 for x in (query, key, value)}
    if len(libraries) != 1:
        raise TypeError("varlen_attention: query, key and value must all be "
                        "numpy arrays or all torch tensors")
    library = libraries.pop()
    for x, name, what in ((query, "query", "[total_q, Hq, E]"),
                          (key, "key", "[total_k, Hkv, E]"),
                          (value, "value", "[total_k, Hkv, Ev]")):
        if len(x.shape) != 3:
            raise ValueError("varlen_attention: %s must have rank 3 %s, got "
                             "shape %s" % (name, what, tuple(x.shape)))
    shared = cu_seqlens_k is None or cu_seqlens_k is cu_seqlens_q
    if shared:
        cu_seqlens_k = cu_seqlens_q
    device = query.device if library == "torch" else None
    total_q, total_k = int(query.shape[0]), int(key.shape[0])
    cu_q = _offsets(cu_seqlens_q, "cu_seqlens_q", total_q, library, device,
                    check)
    cu_k = cu_q if shared else _offsets(cu_seqlens_k, "cu_seqlens_k",
                                        total_k, library, device, check)
    if shared and total_k != total_q:
        raise ValueError("varlen_attention: query has %d tokens and key %d; "
                         "pass cu_seqlens_k for keys packed differently" %
                         (total_q, total_k))
    if cu_q.shape[0] != cu_k.shape[0]:
        raise ValueError("varlen_attention: cu_seqlens_q has %d sequences, "
                         "cu_seqlens_k %d" % (cu_q.shape[0] - 1,
                                              cu_k.shape[0] - 1))
    ids_q = _sequence_ids(cu_q, total_q, library)
    ids_k = ids_q if shared else _sequence_ids(cu_k, total_k, library)
    mask = _PackedMask(mask_mod, bool(causal), shared, ids_q, ids_k, cu_q,
                       cu_k)
    score = (None if score_mod is None else
             _PackedScore(score_mod, ids_q, ids_k, cu_q, cu_k))

    def batched(x):  # [total, H, E] -> [1, H, total, E], a view
        return x.transpose(0, 1)[None] if library == "torch" else \
            x.transpose(1, 0, 2)[None]
    result = flex_attention(
        batched(query), batched(key), batched(value), score_mod=score,
        block_mask=BlockMask(mask, None, None, total_q, total_k),
        scale=scale, enable_gqa=enable_gqa, return_lse=return_lse)
    if return_lse:
        out, lse = result
        return (out[0].transpose(1, 0, 2) if library == "numpy" else
                out[0].transpose(0, 1)), lse[0]
    return (result[0].transpose(1, 0, 2) if library == "numpy" else
            result[0].transpose(0, 1))

