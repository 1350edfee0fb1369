"""Fast Eq. 1 in log space: the masked ``log_softmax(z + log L)`` of ``fuse_log``.

Image-level labels switch whole *channels* off: an image of VOC carries 1-3 of
its 21 classes, and every pixel of an absent class is ``-inf`` in the output
and gets a gradient of exactly 0. So instead of a log-softmax over all N
channels, ``fast_masked_log_softmax`` gathers the ``k = max_b |{c: L_bc > 0}|``
channels that can be non-trivial (present classes first, padded with absent
ones), runs the log-softmax on that [B, k, H*W] slab and writes it into an
output pre-filled with ``-inf``. With k << N the full-size work is one write
of the output forward, and one read of the upstream gradient (its sum over
all classes, exactly what autograd of the reference computes) plus one write
of the input gradient backward: about a tensor copy forward + backward.

Images whose labels select every class (the empty-row fallback, dense soft
labels) leave nothing to skip; then the reference ``masked_log_softmax`` runs
under plain autograd. Results match the reference up to float rounding;
fp16/bf16 are computed in float32. Double backward is not supported on the
sparse path (it raises a clear error).
"""

from __future__ import annotations

import torch
from torch import Tensor

from imgpix.fusion import masked_log_softmax


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


REFERENCE_ONLY = False  # True: always the plain reference (for comparisons)


class _SparseMaskedLogSoftmax(torch.autograd.Function):
    """Masked log-softmax over dim 1 computed on the gathered rows ``rows`` only.

    ``logits`` [B,N,H,W]; ``order`` [B,k] class indices per image (present ones
    first, then distinct absent ones as padding); ``rows`` = flat ``b*N + c``.
    ``rows=None`` means all N channels (k = N): no gather, no scatter.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, weights: Tensor, order: Tensor | None, rows: Tensor | None) -> Tensor:
        batch, num_classes = logits.shape[:2]
        flat = logits.reshape(batch * num_classes, -1)  # a view for contiguous NCHW
        if rows is None:
            sub, w = flat.view(batch, num_classes, -1), weights[:, :, None]
        else:
            sub, w = flat.index_select(0, rows).view(batch, order.shape[1], -1), weights.gather(1, order)[:, :, None]
        valid = w > 0
        cdtype = _compute_dtype(logits.dtype)
        if bool((w == 1).all()):  # binary labels, nothing to mask or shift
            shifted = sub
        else:
            shifted = torch.where(valid, sub.to(cdtype) + w.log().to(cdtype), float("-inf"))
        out_sub = torch.log_softmax(shifted, dim=1, dtype=cdtype)  # padding rows come out -inf
        if rows is None:
            out = out_sub.to(logits.dtype)
        else:
            out = torch.full_like(flat, float("-inf"), memory_format=torch.contiguous_format)
            out.index_copy_(0, rows, out_sub.view(rows.numel(), -1).to(logits.dtype))
        ctx.save_for_backward(out_sub, valid, rows)
        ctx.logits_shape = logits.shape
        return out.view(logits.shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            raise RuntimeError(
                "fuse_log: double backward (create_graph=True) is not supported by the channel-sparse "
                "fast path; differentiate imgpix.fusion.masked_log_softmax for higher-order gradients"
            )
        out_sub, valid, rows = ctx.saved_tensors
        batch, num_classes = ctx.logits_shape[:2]
        gflat = grad_out.reshape(batch * num_classes, -1)
        if rows is None:  # native fused kernel: g - exp(out) * sum_c g
            grad = torch._log_softmax_backward_data(gflat.view(out_sub.shape).to(out_sub.dtype), out_sub, 1, out_sub.dtype)
            grad = grad.masked_fill_(~valid, 0) if not bool(valid.all()) else grad
            return grad.to(grad_out.dtype).view(ctx.logits_shape), None, None, None
        # d out_c / d z_j = delta_cj - softmax_j, summed over *all* c like autograd of the reference.
        total = grad_out.sum(dim=1, dtype=out_sub.dtype).view(batch, 1, -1)
        grad_sub = gflat.index_select(0, rows).view(out_sub.shape).to(out_sub.dtype)
        grad_sub.addcmul_(out_sub.exp(), total, value=-1).masked_fill_(~valid, 0)
        grad = torch.zeros(gflat.shape, dtype=grad_out.dtype, device=grad_out.device)
        grad.index_copy_(0, rows, grad_sub.view(rows.numel(), -1).to(grad_out.dtype))
        return grad.view(ctx.logits_shape), None, None, None


def fast_masked_log_softmax(logits: Tensor, weights: Tensor) -> Tensor:
    """``masked_log_softmax`` of any float ``logits`` [B,N,H,W], in their dtype.

    ``weights`` [B,N] or [B,N,1,1] in [0, 1] with no all-zero row (as prepared
    by ``fuse_log``). fp16/bf16 are computed in float32. Takes the channel-sparse
    path when every image has an absent class (``k < N``), else the reference.
    """
    batch, num_classes = logits.shape[:2]
    weights = weights.reshape(batch, num_classes).float()
    present = weights > 0
    k = int(present.sum(dim=1).max())
    if REFERENCE_ONLY or logits.dim() != 4:
        work = logits.to(_compute_dtype(logits.dtype))
        return masked_log_softmax(work, weights[:, :, None, None]).to(logits.dtype)
    if k == num_classes:
        return _SparseMaskedLogSoftmax.apply(logits, weights, None, None)
    order = torch.sort(present.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :k]
    rows = (order + num_classes * torch.arange(batch, device=order.device)[:, None]).reshape(-1)
    return _SparseMaskedLogSoftmax.apply(logits, weights, order, rows)
