"""Per-token math of the token-level objectives, written once for every path.

Each function takes a chunk of candidate logits `z` (R, K) in the compute dtype (fp32, or fp64 for fp64
inputs; read only: it may be a view of the caller's logits) and `target` (R,) int64 indices into the K
candidates (or, for `soft_target_cross_entropy`, probabilities (R, K)), and returns the per-token loss (R,)
and, when `grad_scale` (R,) is given, the gradient of ``sum_r grad_scale_r * loss_r`` with respect to
`z` (R, K). Chunk-sized temporaries come from `workspace` (see `_workspace.py`), so the returned gradient is
only valid until the next chunk. Candidates set to -inf (outside a SMILE subset) get probability 0 and
gradient 0.

The chunked logits path, the fused-linear path and every SMILE subset call these same functions, so an
objective's formula lives in exactly one place; the naive references in tests/reference.py check them.
`TokenMath` names an objective's math and its constants, so that the Triton kernels (`triton_kernels.py`)
run the same formula on a GPU. Transcendental passes dominate on CPU, so each function spends as few as its
formula allows: one exp for cross-entropy (F.cross_entropy's forward and backward spend two) and for GCE;
one exp and a quarter of a log for DeCE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    class_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Cross-entropy with label smoothing eps and class weights w (K,) (None: all 1) over K candidates,
    ``F.cross_entropy(z, y, weight=w, label_smoothing=eps, reduction="none")``.

    loss_r = a_r logsumexp(z_r) - (1 - eps) w_y z_{r,y} - eps/K sum_j w_j z_{r,j},
        a_r = (1 - eps) w_y + eps/K sum_j w_j
    grad_r = grad_scale_r * (a_r softmax(z_r) - (1 - eps) w_y onehot(y_r) - eps/K w)
    """
    index = target.unsqueeze(1)
    num_classes = z.shape[-1]
    target_logit = z.gather(1, index)  # [R, 1]
    e, s, lse = _exp_shifted(z, workspace)
    if class_weight is None:  # a_r = 1
        on_label, total, weight_sum = 1 - label_smoothing, None, num_classes
    else:
        on_label = class_weight[target].unsqueeze(1).mul_(1 - label_smoothing)  # (1 - eps) w_y  [R, 1]
        weight_sum = class_weight.sum()
        total = on_label + weight_sum * (label_smoothing / num_classes)  # a_r  [R, 1]
    # (lse - z_y) first: exact where it is 0 (one class, a saturated row), however large w and z
    loss = torch.sub(lse, target_logit).mul_(on_label)
    if label_smoothing:  # + eps/K (sum_j w_j lse - sum_j w_j z_j)
        z_sum = z.sum(-1, keepdim=True) if class_weight is None else (z @ class_weight).unsqueeze(1)
        loss.add_((lse * weight_sum).sub_(z_sum), alpha=label_smoothing / num_classes)
    loss = loss.squeeze(1)
    if grad_scale is None:
        return loss, None
    scale = grad_scale.unsqueeze(1)
    grad = e.mul_(scale / s if total is None else total.mul_(scale).div_(s))
    grad.scatter_add_(1, index, (scale * on_label).neg_())
    if label_smoothing:
        if class_weight is None:
            grad.sub_(scale * (label_smoothing / num_classes))
        else:  # broadcast (R, 1) x (K,) in place: no [R, K] temporary
            grad.addcmul_(scale, class_weight, value=-label_smoothing / num_classes)
    return loss, grad


def soft_target_cross_entropy(
    z: Tensor,
    target: Tensor,
    grad_scale: Tensor | None = None,
    workspace: Workspace | None = None,
    *,
    label_smoothing: float = 0.0,
    class_weight: Tensor | None = None,
    target_grad: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Cross-entropy against probability targets t (R, K) (any non-negative values: not renormalised, as in
    PyTorch), ``F.cross_entropy(z, t, weight=w, label_smoothing=eps, reduction="none")``.

    u = w * ((1 - eps) t + eps/K)     (the smoothed, weighted target; w = 1 when None)
    loss_r = sum_j u_{r,j} (logsumexp(z_r) - z_{r,j})
    grad_r = grad_scale_r * (softmax(z_r) sum_j u_{r,j} - u_r)
    When `target_grad` (R, K) is given, the gradient with respect to t is written into it:
    grad_scale_r * (1 - eps) w (logsumexp(z_r) - z_r).
    """
    num_classes = z.shape[-1]
    u = torch.mul(target, 1 - label_smoothing, out=scratch(workspace, "smoothed", z))
    if label_smoothing:
        u.add_(label_smoothing / num_classes)
    if class_weight is not None:
        u.mul_(class_weight)
    mass = u.sum(-1, keepdim=True)  # [R, 1]
    e, s, lse = _exp_shifted(z, workspace)
    # sum_j u_j z_j as a batched dot product: no [R, K] product
    loss = (lse * mass).squeeze(1).sub_(torch.bmm(u.unsqueeze(1), z.unsqueeze(2)).view(-1))
    if target_grad is not None:
        # (1 - eps) w (lse - z) grad_scale: the chunk's rows of the target's gradient
        torch.sub(lse, z, out=target_grad).mul_(grad_scale.unsqueeze(1) * (1 - label_smoothing))
        if class_weight is not None:
            target_grad.mul_(class_weight)
    if grad_scale is None:
        return loss, None
    scale = grad_scale.unsqueeze(1)
    grad = e.mul_(mass.mul_(scale).div_(s)).sub_(u.mul_(scale))
    return loss, grad


def generalized_cross_entropy(
    z: Tensor,
    target: Tensor,
    grad_scale: Tensor | None = None,
    workspace: Workspace | None = None,
    *,
    q: float,
    class_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """GCE (Zhang & Sabuncu 2018), the L_q loss: cross-entropy as q -> 0, 1 - p_y (MAE / 2) at q = 1.

    loss_r = w_y (1 - p_y^q) / q,  p_y^q = exp(q log p_y),
    log p_y = (z_y - max z) - log sum_j exp(z_j - max z)
    grad_r = grad_scale_r * w_y * p_y^q * (softmax(z_r) - onehot(y_r))
    with class weights w (K,) (None: all 1), as ``F.cross_entropy``'s weight scales -log p_y.
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
    target_weight = None if class_weight is None else class_weight[target]  # [R]
    if target_weight is not None:
        loss.mul_(target_weight)
    if grad_scale is None:
        return loss, None
    scale = grad_scale if target_weight is None else grad_scale * target_weight
    scale = q_log_p.exp_().mul_(scale.unsqueeze(1))  # grad_scale * w_y * p_y^q
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
    for a pass that only records statistics) and its constants (``param`` is GCE's q or DeCE's alpha;
    ``class_weight`` (K,) in the compute dtype, cross-entropy's and GCE's per-class weights, whole-vocabulary
    candidates only). Called as the functions above, ``math(z, target, grad_scale, workspace)``, where
    cross-entropy's target may also be probabilities (R, K) (`soft_target_cross_entropy`, which also fills
    `target_grad`). The Triton backend reads the same fields and takes neither class weights nor
    probability targets (`_objective.py` runs those on the PyTorch engine)."""

    kind: str
    label_smoothing: float = 0.0
    param: float = 0.0
    class_weight: Tensor | None = field(default=None, compare=False)

    def __call__(
        self,
        z: Tensor,
        target: Tensor,
        grad_scale: Tensor | None = None,
        workspace: Workspace | None = None,
        target_grad: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if self.kind == "none":
            return z.new_zeros(z.shape[0]), None
        if self.kind == "cross_entropy":
            math = soft_target_cross_entropy if target.is_floating_point() else softmax_cross_entropy
            options = {"target_grad": target_grad} if target.is_floating_point() else {}
            return math(
                z,
                target,
                grad_scale,
                workspace,
                label_smoothing=self.label_smoothing,
                class_weight=self.class_weight,
                **options,
            )
        if self.kind == "gce":
            return generalized_cross_entropy(
                z, target, grad_scale, workspace, q=self.param, class_weight=self.class_weight
            )
        return deceptive_cross_entropy(
            z, target, grad_scale, workspace, alpha=self.param, label_smoothing=self.label_smoothing
        )
