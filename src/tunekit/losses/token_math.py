"""Per-token math of the token-level objectives, written once for every path.

Each function takes a chunk of candidate logits `z` (R, K) in the compute dtype (fp32, or fp64 for fp64
inputs; read only: it may be a view of the caller's logits) and `target` (R,) int64 indices into the K
candidates, and returns the per-token loss (R,) and, when `grad_scale` (R,) is given, the gradient of
``sum_r grad_scale_r * loss_r`` with respect to `z` (R, K). Chunk-sized temporaries come from `workspace`
(see `_workspace.py`), so the returned gradient is only valid until the next chunk. Candidates set to -inf
(outside a SMILE subset) get probability 0 and gradient 0.

The chunked logits path, the fused-linear path and every SMILE subset call these same functions, so an
objective's formula lives in exactly one place; the naive references in tests/reference.py check them.
`TokenMath` names an objective's math and its constants, so that the Triton kernels (`triton_kernels.py`)
run the same formula on a GPU. Transcendental passes dominate on CPU, so each function spends as few as its
formula allows: one exp for cross-entropy (F.cross_entropy's forward and backward spend two) and for GCE;
one exp and a quarter of a log for DeCE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._workspace import Workspace, scratch

# DeCE's reference implementation clamps the probabilities at this floor before mixing; below it the
# gradient is zero.
DECE_PROB_FLOOR = 1e-7


def _exp_shifted(z: Tensor, workspace: Workspace | None) -> tuple[Tensor, Tensor, Tensor]:
    """e = exp(z - max) (R, K), its row sums s (R, 1) and log-sum-exp (R, 1)."""
    row_max = z.amax(dim=-1, keepdim=True)
    e = torch.sub(z, row_max, out=scratch(workspace, "exp", z)).exp_()  # [R, K]: z stays untouched
    s = e.sum(dim=-1, keepdim=True)
    return e, s, s.log().add_(row_max)


# Smallest product of `2 ** folds` values that `_sum_of_logs` lets through: well above each dtype's tiny.
_SAFE_PRODUCT = {torch.float32: 1e-30, torch.float64: 1e-300}


def _sum_of_logs(x: Tensor, folds: int, workspace: Workspace | None) -> Tensor:
    """sum_j log x_j over the last dim of x (R, K), as logs of products of 2**folds values: elementwise
    products are cheap, logs are not. The caller guarantees each product stays a normal float."""
    leftovers = []
    for fold in range(folds):
        if x.shape[-1] % 2:
            leftovers.append(x[:, -1:])
            x = x[:, :-1]
        half = x.shape[-1] // 2
        x = torch.mul(x[:, :half], x[:, half:], out=scratch(workspace, f"fold{fold}", x[:, :half]))
    x = torch.log(x, out=x if folds else scratch(workspace, "log", x))
    total = x.sum(-1)
    for column in leftovers:
        total += column.log().squeeze(1)
    return total


def softmax_cross_entropy(
    z: Tensor,
    target: Tensor,
    grad_scale: Tensor | None = None,
    workspace: Workspace | None = None,
    *,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """Cross-entropy with label smoothing eps over K candidates, `F.cross_entropy(z, y, label_smoothing=eps)`.

    loss_r = logsumexp(z_r) - (1 - eps) z_{r,y} - eps/K sum_j z_{r,j}
    grad_r = grad_scale_r * (softmax(z_r) - (1 - eps) onehot(y_r) - eps/K)
    """
    index = target.unsqueeze(1)
    target_logit = z.gather(1, index)  # [R, 1]
    e, s, lse = _exp_shifted(z, workspace)
    loss = lse.sub_(target_logit, alpha=1 - label_smoothing)
    if label_smoothing:
        num_classes = z.shape[-1]
        loss.sub_(z.sum(-1, keepdim=True), alpha=label_smoothing / num_classes)
    loss = loss.squeeze(1)
    if grad_scale is None:
        return loss, None
    scale = grad_scale.unsqueeze(1)
    grad = e.mul_(scale / s)
    grad.scatter_add_(1, index, scale * (label_smoothing - 1))
    if label_smoothing:
        grad.sub_(scale * (label_smoothing / num_classes))
    return loss, grad


def generalized_cross_entropy(
    z: Tensor,
    target: Tensor,
    grad_scale: Tensor | None = None,
    workspace: Workspace | None = None,
    *,
    q: float,
) -> tuple[Tensor, Tensor | None]:
    """GCE (Zhang & Sabuncu 2018), the L_q loss: cross-entropy as q -> 0, 1 - p_y (MAE / 2) at q = 1.

    loss_r = (1 - p_y^q) / q,  p_y^q = exp(q log p_y),  log p_y = (z_y - max z) - log sum_j exp(z_j - max z)
    grad_r = grad_scale_r * p_y^q * (softmax(z_r) - onehot(y_r))
    p_y^q comes from log p_y, never from p_y, so it is exact when p_y underflows (saturated logits: loss
    1/q, gradient 0), and the loss is -expm1(q log p_y) / q, exact when p_y is close to 1 or q is small.
    """
    index = target.unsqueeze(1)
    row_max = z.amax(dim=-1, keepdim=True)
    # log p_y from z_y - max, not z_y - logsumexp: no cancellation between two large numbers
    log_p_target = z.gather(1, index).sub_(row_max)  # [R, 1]
    e = torch.sub(z, row_max, out=scratch(workspace, "exp", z)).exp_()  # [R, K]: the one exp pass
    s = e.sum(dim=-1, keepdim=True)
    q_log_p = log_p_target.sub_(s.log()).mul_(q)  # [R, 1], <= 0
    loss = torch.expm1(q_log_p).div_(-q).squeeze(1)
    if grad_scale is None:
        return loss, None
    scale = q_log_p.exp_().mul_(grad_scale.unsqueeze(1))  # grad_scale * p_y^q
    grad = e.mul_(scale / s)
    grad.scatter_add_(1, index, scale.neg_())
    return loss, grad


def deceptive_cross_entropy(
    z: Tensor,
    target: Tensor,
    grad_scale: Tensor | None = None,
    workspace: Workspace | None = None,
    *,
    alpha: float,
    label_smoothing: float,
) -> tuple[Tensor, Tensor | None]:
    """DeCE (Yang et al. 2024): cross-entropy of a smoothed target against a target-mixed prediction.

    t_j = 1 - eps on the label, eps/(K-1) elsewhere;  p = softmax(z)
    q = alpha * clamp(p, 1e-7, 1) + (1 - alpha) * t;  loss = -sum_j t_j log q_j
    d loss / d z = alpha * (p sum_j t_j r_j - t r),  r_j = p_j / q_j where p_j >= 1e-7, else 0
    (the softmax Jacobian applied to d loss / d p = -alpha t / q, zero where the clamp is active).
    """
    num_classes = z.shape[-1]
    off_label = label_smoothing / (num_classes - 1)
    on_label = 1.0 - label_smoothing
    index = target.unsqueeze(1)

    e, s, _ = _exp_shifted(z, workspace)
    probs = e.div_(s)  # [R, K]
    # q: clamp, then lerp towards t (one pass each); off the label first, then the label's column
    mixed = torch.clamp(probs, min=DECE_PROB_FLOOR, out=scratch(workspace, "mixed", z))
    mixed.lerp_(mixed.new_tensor(off_label), 1 - alpha)
    mixed_on_label = (
        probs.gather(1, index).clamp_(min=DECE_PROB_FLOOR).mul_(alpha).add_((1 - alpha) * on_label)
    )
    mixed.scatter_(1, index, mixed_on_label)

    # -sum_j t_j log q_j = (off - on) log q_y - off * sum_j log q_j
    loss = mixed_on_label.log().squeeze(1).mul_(off_label - on_label)
    if off_label:
        smallest = alpha * DECE_PROB_FLOOR + (1 - alpha) * min(off_label, on_label)
        folds = 2 if smallest**4 > _SAFE_PRODUCT[z.dtype] else 0
        loss.sub_(_sum_of_logs(mixed, folds, workspace), alpha=off_label)
    if grad_scale is None:
        return loss, None

    # r = p / q, and 0 where the clamp is active (threshold: one pass; a bool mask costs ten times more)
    ratio = torch.threshold(probs, DECE_PROB_FLOOR, 0.0, out=scratch(workspace, "ratio", z)).div_(mixed)
    ratio_on_label = ratio.gather(1, index)
    t_ratio_sum = ratio.sum(-1, keepdim=True).mul_(off_label).add_(ratio_on_label, alpha=on_label - off_label)
    scale = grad_scale.unsqueeze(1) * alpha
    grad = ratio.mul_(scale * -off_label).addcmul_(probs, t_ratio_sum * scale)  # off-label t
    grad.scatter_add_(1, index, ratio_on_label * (scale * (off_label - on_label)))  # the label's t
    return loss, grad


@dataclass(frozen=True)
class TokenMath:
    """An objective's per-token math: ``kind`` ("cross_entropy", "gce" or "dece"; "none" scores nothing,
    for a pass that only records statistics) and its constants (``param`` is GCE's q or DeCE's alpha).
    Called as the functions above, ``math(z, target, grad_scale, workspace)``; the Triton backend reads the
    same fields."""

    kind: str
    label_smoothing: float = 0.0
    param: float = 0.0

    def __call__(
        self, z: Tensor, target: Tensor, grad_scale: Tensor | None = None, workspace: Workspace | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if self.kind == "none":
            return z.new_zeros(z.shape[0]), None
        if self.kind == "cross_entropy":
            return softmax_cross_entropy(
                z, target, grad_scale, workspace, label_smoothing=self.label_smoothing
            )
        if self.kind == "gce":
            return generalized_cross_entropy(z, target, grad_scale, workspace, q=self.param)
        return deceptive_cross_entropy(
            z, target, grad_scale, workspace, alpha=self.param, label_smoothing=self.label_smoothing
        )
