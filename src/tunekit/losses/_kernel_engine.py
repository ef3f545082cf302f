"""The engine on the Triton backend: the same segments and the same gradient-in-forward contract as
`_engine.TokenLossJob`, sized for a GPU and free of host synchronisation.

- Logits form: one kernel launch per segment over all its rows. The kernel reads each row where it lies in
  the caller's logits (through a row index, never a gather) and writes its gradient row into the (..., V)
  buffer that autograd keeps; ignored rows are written as zeros, so the buffer needs no zeroing pass.
- Fused-linear form: chunks of rows, each ``hidden[chunk] @ weight.T (+ bias)`` in the inputs' dtype; the
  kernel writes the gradient in place of that chunk (as Liger-Kernel does), which then multiplies into the
  hidden and weight gradients. A chunk holds at most ``DEVICE_CHUNK_BYTES`` of logits (a quarter of the
  free GPU memory when that is less): thousands of rows, so every matmul is large. The weight gradient
  accumulates in the weight's dtype, one rounding per chunk (fp32 accumulation inside each matmul).
- Subsets with per-row candidates (SMILE "random") gather their few logits per row, as the PyTorch engine
  does, and scatter their gradient back.

Segments may cover every token (``rows=None``, ignored tokens marked by a negative target), which is how
`_objective.py` and SMILE plan on this backend: no `nonzero`, no `.tolist()`, no `.item()` per call,
segment or chunk. Statistics (an open `tunekit.losses.statistics` recording) cost one more pass over the
supervised rows, found with one host sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._engine import Segment
from ._recording import TokenStatistics
from ._workspace import Workspace
from .token_math import TokenMath
from .triton_kernels import token_rows

# Most bytes of logits one fused chunk holds (and of gathered weight rows for per-row candidates).
DEVICE_CHUNK_BYTES = 2**28


class KernelTokenLossJob:
    """One call of an objective on the Triton backend; `run` as `_engine.TokenLossJob.run`.

    target: (T,) class ids (any value where ignored), valid: (T,) bool; both for the statistics only.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        math: TokenMath,
        target: Tensor,
        valid: Tensor,
        name: str,
        statistics: TokenStatistics | None,
    ) -> None:
        self.segments = segments
        self.math = math
        self.num_tokens = valid.numel()
        self.device = valid.device
        self.dtype = torch.float32  # fp64 inputs run the PyTorch engine (see `_backend.py`)
        self.name = name
        self.statistics = statistics
        self._target = target
        self._valid = valid

    def run(
        self, inputs: tuple[Tensor | None, ...], weights: Tensor | None, needs: tuple[bool, ...]
    ) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """Per-token losses (T,) (0 where ignored) and, where `needs`, the gradients of sum_i w_i loss_i."""
        losses = torch.zeros(self.num_tokens, dtype=self.dtype, device=self.device)
        workspace = Workspace(self.device)
        if self.math.kind == "none":  # a statistics pass: nothing to score
            grads = tuple(None for _ in needs)
        elif len(inputs) == 1:
            grads = self._run_logits(inputs[0], weights, any(needs), losses, workspace)
        else:
            grads = self._run_linear(*inputs, weights, needs, losses, workspace)
        if self.statistics is not None:
            self._record(inputs, workspace)
        return losses, grads

    def _run_logits(
        self, logits: Tensor, weights: Tensor | None, need_grad: bool, losses: Tensor, workspace: Workspace
    ) -> tuple[Tensor | None, ...]:
        num_classes = logits.shape[-1]
        z = _rows_view(logits)
        grad = flat_grad = None
        if need_grad:
            # a segment over every row writes every gradient row (zeros where ignored); subsets only add
            covering = any(s.rows is None and s.candidates is None for s in self.segments)
            grad = (torch.empty_like if covering else torch.zeros_like)(
                logits, memory_format=torch.contiguous_format
            )
            flat_grad = grad.view(-1, num_classes)
        for segment in self._covering_first():
            scale = _rows_of(weights, segment.rows) if need_grad else None
            if segment.candidates is None:
                loss = token_rows(
                    self.math,
                    z,
                    segment.target,
                    rows=segment.rows,
                    mask=segment.excluded,
                    mask_rows=segment.excluded_row,
                    grad_scale=scale,
                    grad=flat_grad,
                )
                _add_at(losses, segment.rows, loss)
                continue
            step = max(1, DEVICE_CHUNK_BYTES // (4 * segment.candidates.shape[-1]))
            for start in range(0, segment.target.numel(), step):
                part = slice(start, start + step)
                rows = _chunk_rows(segment.rows, part, segment.target[part].numel(), self.device)
                candidates = segment.candidates_at(part)
                zc = _gather(logits, rows, candidates)  # (c, K): a few logits per row
                dz = workspace.like("dz", zc, torch.float32) if need_grad else None
                loss = token_rows(
                    self.math,
                    zc,
                    segment.target[part],
                    mask=segment.mask_at(part, workspace),
                    grad_scale=None if scale is None else scale[part],
                    grad=dz,
                )
                losses.index_add_(0, rows, loss)
                if need_grad:
                    index = (rows.unsqueeze(1).expand_as(dz), candidates.expand_as(dz))
                    flat_grad.index_put_(index, dz.to(flat_grad.dtype), accumulate=True)
        return (grad,)

    def _run_linear(
        self,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        weights: Tensor | None,
        needs: tuple[bool, ...],
        losses: Tensor,
        workspace: Workspace,
    ) -> tuple[Tensor | None, ...]:
        need_grad = any(needs)
        h = hidden.reshape(-1, hidden.shape[-1])
        grad_h = torch.zeros_like(h) if needs[0] else None
        grad_w = torch.zeros_like(weight) if needs[1] else None
        grad_b = torch.zeros(weight.shape[0], device=h.device) if bias is not None and needs[2] else None
        for segment in self._covering_first():
            scale = _rows_of(weights, segment.rows) if need_grad else None
            candidates = segment.candidates
            per_row = candidates is not None and candidates.dim() == 2
            width = weight.shape[0] if candidates is None else candidates.shape[-1]
            row_bytes = width * h.element_size() * (h.shape[1] if per_row else 1)
            step = _fused_chunk_rows(row_bytes, h.device)
            for start in range(0, segment.target.numel(), step):
                part = slice(start, start + step)
                count = segment.target[part].numel()
                rows = None if segment.rows is None else segment.rows[part]
                hc = h[start : start + count] if rows is None else h.index_select(0, rows)
                part_candidates = segment.candidates_at(part)
                w = weight if part_candidates is None else weight[part_candidates]  # (K, H) or (c, K, H)
                zc = workspace.get("logits", (count, width), h.dtype)
                if w.dim() == 2:
                    b = bias if bias is None or part_candidates is None else bias[part_candidates]
                    torch.mm(hc, w.T, out=zc) if b is None else torch.addmm(b, hc, w.T, out=zc)
                else:
                    torch.bmm(w, hc.unsqueeze(2), out=zc.unsqueeze(2))  # (c, K, H) @ (c, H, 1)
                    if bias is not None:
                        zc += bias[part_candidates]
                mask_rows = None if segment.excluded_row is None else segment.excluded_row[part]
                loss = token_rows(
                    self.math,
                    zc,
                    segment.target[part],
                    mask=segment.excluded if segment.padding is None else segment.padding[part],
                    mask_rows=mask_rows,
                    grad_scale=None if scale is None else scale[part],
                    grad=zc if need_grad else None,  # in place: the chunk's logits become its gradient
                )
                if rows is None:
                    losses[start : start + count] += loss
                else:
                    losses.index_add_(0, rows, loss)
                if not need_grad:
                    continue
                dz = zc  # (c, K) in the inputs' dtype
                if grad_h is not None:
                    gh = torch.bmm(dz.unsqueeze(1), w).squeeze(1) if w.dim() == 3 else dz @ w
                    if rows is None:
                        grad_h[start : start + count] += gh
                    else:
                        grad_h.index_add_(0, rows, gh)
                if grad_w is not None:
                    if part_candidates is None:
                        grad_w.addmm_(dz.T, hc)  # (V, c) @ (c, H)
                    elif part_candidates.dim() == 1:
                        grad_w.index_add_(0, part_candidates, dz.T @ hc)
                    else:
                        per_slot = (dz.unsqueeze(2) * hc.unsqueeze(1)).flatten(0, 1)  # (c * K, H)
                        grad_w.index_add_(0, part_candidates.flatten(), per_slot)
                if grad_b is not None:
                    if part_candidates is None:
                        grad_b += dz.sum(0, dtype=torch.float32)
                    else:
                        ids = part_candidates.expand_as(dz).flatten()
                        grad_b.index_add_(0, ids, dz.flatten().float())
        if grad_h is not None:
            grad_h = grad_h.view(hidden.shape)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b

    def _covering_first(self) -> list[Segment]:
        """Segments over every row first: they write whole gradient rows, which the others then add to."""
        return sorted(self.segments, key=lambda s: not (s.rows is None and s.candidates is None))

    def _record(self, inputs: tuple[Tensor | None, ...], workspace: Workspace) -> None:
        """Entropy and top-1 of every supervised token over the whole vocabulary, in chunks (one host sync:
        finding the supervised rows)."""
        rows = self._valid.nonzero().squeeze(1)
        if len(inputs) == 1:
            logits = inputs[0]
            step = max(1, DEVICE_CHUNK_BYTES // (4 * logits.shape[-1]))
        else:
            hidden, weight, bias = inputs
            h = hidden.reshape(-1, hidden.shape[-1])
            step = _fused_chunk_rows(4 * weight.shape[0], h.device)
        for start in range(0, rows.numel(), step):
            part = rows[start : start + step]
            if len(inputs) == 1:
                z = _gather(logits, part, None).float()
            else:
                z = torch.nn.functional.linear(h.index_select(0, part), weight, bias).float()
            self.statistics.record(part, z, self._target.index_select(0, part), workspace)


def _rows_view(logits: Tensor) -> Tensor:
    """The logits (..., V) as rows the kernel can address in place: a (T, V) view, or the (B, N, V) tensor
    itself when no view exists (a slice such as logits[:, :-1]); a copy only beyond that."""
    num_classes = logits.shape[-1]
    if logits.stride(-1) == 1:
        try:
            return logits.view(-1, num_classes)
        except RuntimeError:
            if logits.dim() == 3:
                return logits
    return logits.reshape(-1, num_classes).contiguous()


def _gather(logits: Tensor, rows: Tensor, candidates: Tensor | None) -> Tensor:
    """Logits of flat `rows` (c,) at `candidates` ((K,), (c, K), or None for all): (c, K) or (c, V)."""
    if logits.dim() == 1:  # one token: its row is the whole tensor
        logits = logits.unsqueeze(0)
    index = torch.unravel_index(rows, logits.shape[:-1])
    if candidates is None:
        return logits[index]
    return logits[(*(i.unsqueeze(1) for i in index), candidates)]


def _rows_of(weights: Tensor, rows: Tensor | None) -> Tensor:
    return weights if rows is None else weights.index_select(0, rows)


def _chunk_rows(rows: Tensor | None, part: slice, count: int, device: torch.device) -> Tensor:
    if rows is not None:
        return rows[part]
    return torch.arange(part.start, part.start + count, device=device)


def _add_at(losses: Tensor, rows: Tensor | None, loss: Tensor) -> None:
    if rows is None:
        losses += loss
    else:
        losses.index_add_(0, rows, loss)


def _fused_chunk_rows(row_bytes: int, device: torch.device) -> int:
    budget = DEVICE_CHUNK_BYTES
    if device.type == "cuda":  # a driver query, not a stream sync
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, max(free // 4, 2**24))
    return max(1, budget // max(1, row_bytes))
