"""Fast Eq. 1 in log space: the masked ``log_softmax(z + log L)`` of ``fuse_log``.

Image-level labels switch whole *channels* off: a VOC image carries 1-3 of
the 21 classes, and every pixel of an absent class is ``-inf`` in the output
with a gradient of exactly 0. So instead of a log-softmax over all N channels,
``fast_masked_log_softmax`` gathers the ``k = max_b |{c: L_bc > 0}|`` channels
that can be finite (present classes first, padded with absent ones, which are
masked), runs the log-softmax on that [B, k, H*W] slab, in float32 for
fp16/bf16, and writes it into an output pre-filled with ``-inf``. Backward
uses the saved slab output: ``grad_z = mask * (g - exp(out) * sum_c g)`` with
the sum over all N channels, exactly what autograd of the reference computes.

With k << N the full-size work is one write forward (the output) and one read
plus one write backward (``sum_c g``, the input gradient): about what a tensor
copy costs. With k = N (the empty-row fallback, dense soft labels) the slab is
the whole tensor and no gather/scatter runs. ``imgpix.fusion.masked_log_softmax``
stays the reference. Double backward raises a clear error.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _SlabLogSoftmax(torch.autograd.Function):
    """Masked log-softmax over dim 1 computed on a [B, k, H*W] slab of the channels.

    ``rows`` [B*k]: flat ``b*N + c`` of the slab's channels (present classes
    first, then distinct absent ones as padding), or None for all N channels in
    order. ``masked`` [M]: slab rows ``b*k + j`` that are absent (-inf).
    ``logw`` [B, k, 1]: ``log L`` on the slab, or None when every present weight is 1.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, rows: Tensor | None, masked: Tensor, logw: Tensor | None) -> Tensor:
        batch, num_classes = logits.shape[:2]
        flat = logits.reshape(batch * num_classes, -1)  # a view for contiguous NCHW
        cdtype = _compute_dtype(logits.dtype)
        if rows is None:
            slab = flat.to(cdtype, copy=masked.numel() > 0 or logw is not None)
        else:
            slab = flat[rows].to(cdtype)  # a fresh tensor (indexing: index_select stalls on a busy CPU)
        slab = slab.view(batch, -1, flat.shape[1])
        if logw is not None:
            slab.add_(logw)
        if masked.numel():
            slab.view(-1, flat.shape[1]).index_fill_(0, masked, float("-inf"))
        out_slab = torch.log_softmax(slab, dim=1)
        if rows is None:
            out = out_slab.to(logits.dtype)
        else:  # absent channels outside the slab: -inf
            out = torch.full_like(flat, float("-inf"), memory_format=torch.contiguous_format)
            out.index_copy_(0, rows, out_slab.view(rows.numel(), -1).to(logits.dtype))
        ctx.save_for_backward(out_slab, rows, masked)
        ctx.logits_shape = logits.shape
        return out.view(logits.shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            raise RuntimeError(
                "fuse_log: double backward (create_graph=True) is not supported by the channel-sparse "
                "fast path; differentiate imgpix.fusion.masked_log_softmax for higher-order gradients"
            )
        out_slab, rows, masked = ctx.saved_tensors
        batch, num_classes = ctx.logits_shape[:2]
        gflat = grad_out.reshape(batch * num_classes, -1)
        if rows is None:  # native fused kernel: g - exp(out) * sum_c g
            gslab = gflat.view(out_slab.shape).to(out_slab.dtype)
            grad = torch._log_softmax_backward_data(gslab, out_slab, 1, out_slab.dtype)
        else:  # the same, with sum_c g over *all* N channels, as autograd of the reference
            total = grad_out.sum(dim=1, dtype=out_slab.dtype).view(batch, 1, -1)
            grad = gflat[rows].view(out_slab.shape).to(out_slab.dtype)
            grad.addcmul_(out_slab.exp(), total, value=-1)
        if masked.numel():
            grad.view(-1, gflat.shape[1]).index_fill_(0, masked, 0)
        if rows is None:
            return grad.to(grad_out.dtype).view(ctx.logits_shape), None, None, None
        full = torch.zeros(gflat.shape, dtype=grad_out.dtype, device=grad_out.device)
        full.index_copy_(0, rows, grad.view(rows.numel(), -1).to(grad_out.dtype))
        return full.view(ctx.logits_shape), None, None, None


def _slab_plan(weights: Tensor) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """``rows``, ``masked``, ``logw`` of ``_SlabLogSoftmax`` from [B, N] weights (on the CPU)."""
    batch, num_classes = weights.shape
    present = weights > 0
    k = int(present.sum(dim=1).max())
    if k == num_classes:
        order, rows = torch.arange(num_classes).expand(batch, -1), None
    else:
        order = torch.sort(present.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :k]
        rows = (order + num_classes * torch.arange(batch)[:, None]).reshape(-1)
    w = weights.gather(1, order)
    masked = (w == 0).reshape(-1).nonzero().squeeze(1)
    logw = None if bool((w[w > 0] == 1).all()) else torch.where(w > 0, w, 1).log()[:, :, None]
    return rows, masked, logw


def fast_masked_log_softmax(logits: Tensor, weights: Tensor) -> Tensor:
    """``masked_log_softmax`` of any float ``logits`` [B,N,H,W], in their dtype.

    ``weights`` [B,N] or [B,N,1,1] in [0, 1] with no all-zero row (as prepared
    by ``fuse_log``). fp16/bf16 are computed in float32. Works on the slab of
    the ``k`` channels that can be present in some image, in one autograd node.
    """
    batch, num_classes = logits.shape[:2]
    rows, masked, logw = _slab_plan(weights.reshape(batch, num_classes).to("cpu", torch.float64))
    dev = logits.device
    rows = None if rows is None else rows.to(dev)
    logw = None if logw is None else logw.to(dev, _compute_dtype(logits.dtype))
    return _SlabLogSoftmax.apply(logits, rows, masked.to(dev), logw)
