"""The chunked engine that every token-level objective plugs into.

An objective supplies its per-token math (`token_math.py`: loss and d loss / d logits of a chunk of rows) and
a list of `Segment`s saying which vocabulary columns each supervised token is scored against. The engine
walks the segments chunk by chunk, reading candidate logits from a `LogitsSource` (materialised logits) or
a `LinearSource` (`hidden @ weight.T + bias` computed per chunk, never tokens x vocab), and computes the
gradient during the forward pass, as Liger-Kernel's chunked losses do. What autograd keeps between forward
and backward is the gradient itself, not logits-sized activations (nor the logits); nothing beyond it and
O(chunk) scratch is allocated (a loss scale other than 1 costs one more pass over the gradient, in place).

This engine serves CPU tensors, and accelerators when the Triton kernels do not (`_backend.py`; the kernels
have their own engine, `_kernel_engine.py`). On CPU, chunks are sized to stay in cache and the supervised
rows are read on the host to find runs of consecutive rows (read as views); on an accelerator chunks are
large and the rows are always gathered, so that the host waits for the device only while planning, never
per chunk or segment.

With reduction="none" the per-token weights of the backward pass (its incoming gradient) are not known in
forward, so forward computes only the losses and backward runs the chunks again with those weights.

What users could trip on, and what happens instead (tests/test_loss_engine_edge_cases.py):

- The gradient buffer is handed out by the first backward (no copy) and never read by the engine again, so
  a caller that modifies it (``g.zero_()``, an optimizer working in place) changes nothing. A second
  backward through a retained graph runs the chunks again from the inputs, which the engine holds only
  weakly (it never keeps logits-sized tensors alive): if they were freed or modified in place since
  forward, it raises.
- The gradient is computed by the chunked pass, not by autograd, so it cannot be differentiated again:
  backward raises when a second-order graph is requested (``create_graph=True``).
- `torch.compile` runs the engine eagerly (a graph break, see `eager_under_compile`): its loop reads
  data-dependent sizes (the supervised rows) that dynamo cannot trace across shapes.
- Meta tensors carry no values to plan or chunk: a stand-in of the loss's shape, dtype and autograd graph
  is returned (`meta_token_loss`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._dtypes import compute_dtype_for
from ._recording import TokenStatistics, new_recording
from ._reduction import reduce_token_losses, token_weights
from ._workspace import Workspace
from .token_math import TokenMath

# Logits path: elements of one (rows x candidates) chunk. 2**19 fp32 = 2 MiB, 1 MiB per thread of two, which
# stays in cache through the several passes of the per-token math.
CHUNK_ELEMENTS = 2**19
# The same on an accelerator (the PyTorch backend there: no triton, or TUNEKIT_BACKEND=torch): no cache to
# fit, so chunks as large as 256 MiB of fp32, whose every op is a large kernel.
DEVICE_CHUNK_ELEMENTS = 2**26
# Fused path: elements of one chunk's logits (rows x candidates), or of its gathered weight rows
# (rows x candidates x hidden) for per-row candidates. Larger (64 MiB of fp32), so that each matmul and each
# read-modify-write of the (V, H) weight gradient covers many rows; the math still runs in cache-sized
# pieces of CHUNK_ELEMENTS.
FUSED_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class Segment:
    """Supervised tokens that are scored against the same kind of candidate set.

    rows: (R,) int64 flat indices of the tokens, strictly increasing (runs of consecutive rows are read as
        slices); or, on the Triton backend only, None for every token (R = T), the ignored ones with a
        negative target (no host sync to find the supervised rows).
    target: (R,) int64 index of each token's target among its candidates; None for probability targets,
        which the job reads chunk by chunk from its last input (`TokenLossJob.soft_target`).
    candidates: None for the whole vocabulary (target is then the class id), (K,) vocabulary ids shared by
        all rows, or (R, K) ids per row.
    padding: (R, K) float, -inf at candidate slots that do not count (duplicates) and 0 elsewhere; per-row
        candidates only.
    excluded: (S, V) float table, -inf at vocabulary ids to drop and 0 elsewhere, with excluded_row (R,) the
        table row of each token; whole-vocabulary segments only. A token's own target is never dropped.
    Masks are additive: adding a float mask is one fast pass, where a bool `masked_fill` is ten times slower
    on CPU.
    """

    rows: Tensor | None
    target: Tensor | None
    candidates: Tensor | None = None
    padding: Tensor | None = None
    excluded: Tensor | None = None
    excluded_row: Tensor | None = None

    def candidates_at(self, part: slice) -> Tensor | None:
        if self.candidates is None or self.candidates.dim() == 1:
            return self.candidates
        return self.candidates[part]

    def mask_at(self, part: slice, workspace: Workspace) -> Tensor | None:
        """(c, K) additive mask of the candidates of rows[part]: -inf where dropped, 0 elsewhere; or None."""
        if self.padding is not None:
            return self.padding[part]
        if self.excluded is None:
            return None
        table_rows = self.excluded_row[part]
        mask = workspace.get("mask", (table_rows.numel(), self.excluded.shape[1]), self.excluded.dtype)
        torch.index_select(self.excluded, 0, table_rows, out=mask)
        return mask.scatter_(1, self.target[part].unsqueeze(1), 0.0)


class LogitsSource:
    """Candidate logits read from materialised logits (..., V); the gradient goes to a (..., V) buffer."""

    def __init__(self, logits: Tensor, need_grad: bool, segments: Sequence[Segment]) -> None:
        num_classes = self.num_classes = logits.shape[-1]
        self.logits = logits
        # A view when possible; otherwise (a strided slice such as logits[:, :-1]) rows are addressed through
        # their multi-dimensional index rather than by copying the logits.
        self.flat = logits.view(-1, num_classes) if _viewable(logits) else None
        self.dtype = compute_dtype_for(logits)
        self.chunk_elements = math_elements(logits.device)
        self.grad = None
        if need_grad:
            dense = all(segment.candidates is None for segment in segments)
            self.grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
            flat_grad = self.grad.view(-1, num_classes)
            if dense:  # every row is written once, except ignored rows, which are zeroed here
                covered = torch.zeros(flat_grad.shape[0], dtype=torch.bool, device=logits.device)
                for segment in segments:
                    covered[segment.rows] = True
                if reads_rows_on_host(logits.device):
                    flat_grad.index_fill_(0, (~covered).nonzero().squeeze(1), 0.0)
                else:  # one pass over the buffer rather than a sync to find the rows
                    flat_grad.masked_fill_(~covered.unsqueeze(1), 0.0)
            else:  # subsets scatter into a few columns per row
                flat_grad.zero_()

    def chunk_rows(self, num_candidates: int, per_row: bool) -> int:
        return max(1, self.chunk_elements // num_candidates)

    def _row_index(self, rows: Tensor) -> tuple[Tensor, ...]:
        if self.flat is not None:
            return (rows,)
        return torch.unravel_index(rows, self.logits.shape[:-1])

    def read(
        self, rows: Tensor, candidates: Tensor | None, span: range | None, workspace: Workspace
    ) -> tuple[Tensor, None]:
        if self.flat is not None and candidates is None:
            if span:  # [c, V]: a view of the caller's logits (the math only reads it)
                z = self.flat[span.start : span.stop]
            else:
                out = workspace.get("rows", (rows.numel(), self.flat.shape[1]), self.flat.dtype)
                z = torch.index_select(self.flat, 0, rows, out=out)
        else:
            index = self._row_index(rows)
            source = self.logits if self.flat is None else self.flat
            if candidates is None:
                z = source[index]
            else:  # [c, K] gathered: O(rows x candidates), never the whole vocabulary
                z = source[(*(i.unsqueeze(1) for i in index), candidates)]
        if z.dtype != self.dtype:
            z = workspace.like("upcast", z, self.dtype).copy_(z)
        return z, None

    def backprop(
        self,
        rows: Tensor,
        candidates: Tensor | None,
        dz: Tensor,
        chunk: None,
        span: range | None,
        workspace: Workspace,
    ) -> None:
        flat_grad = self.grad.view(-1, self.grad.shape[-1])
        if candidates is None and span:
            flat_grad[span.start : span.stop] = dz
            return
        dz = dz.to(flat_grad.dtype)
        if candidates is None:
            flat_grad.index_copy_(0, rows, dz)
        else:
            rows = rows.unsqueeze(1).expand_as(dz)
            flat_grad.index_put_((rows, candidates.expand_as(dz)), dz, accumulate=True)

    def grads(self) -> tuple[Tensor | None, ...]:
        return (self.grad,)


class LinearSource:
    """Candidate logits computed chunk by chunk as hidden @ weight.T + bias, never tokens x vocab.

    hidden (..., H), weight (V, H), bias (V,) or None. Weight and bias gradients accumulate in the compute
    dtype (fp32) and are cast to the parameters' dtype at the end; the hidden gradient is written per row.
    """

    def __init__(
        self, hidden: Tensor, weight: Tensor, bias: Tensor | None, needs: tuple[bool, bool, bool]
    ) -> None:
        self.hidden = hidden.reshape(-1, hidden.shape[-1])
        self.weight = weight
        self.num_classes = weight.shape[0]
        self.bias = bias
        self.dtype = compute_dtype_for(hidden, weight, bias)
        self.chunk_elements = FUSED_CHUNK_ELEMENTS
        self.grad_hidden = torch.zeros_like(self.hidden) if needs[0] else None
        self.grad_weight = torch.zeros_like(weight, dtype=self.dtype) if needs[1] else None
        self.grad_bias = torch.zeros_like(bias, dtype=self.dtype) if bias is not None and needs[2] else None
        self._hidden_shape = hidden.shape

    def chunk_rows(self, num_candidates: int, per_row: bool) -> int:
        per_row_elements = num_candidates * (self.hidden.shape[1] if per_row else 1)
        # at most an eighth of the tokens (but 256 rows), so that the chunk stays small next to the logits
        # it replaces when there are few tokens
        rows = min(self.chunk_elements // per_row_elements, max(256, -(-self.hidden.shape[0] // 8)))
        return max(1, rows)

    def read(
        self, rows: Tensor, candidates: Tensor | None, span: range | None, workspace: Workspace
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h = self.hidden[span.start : span.stop] if span else self.hidden.index_select(0, rows)  # [c, H]
        if candidates is None:
            w = self.weight  # [V, H]
        elif candidates.dim() == 1:
            w = self.weight.index_select(0, candidates)  # [K, H]: only the rows the subset needs
        else:
            w = self.weight[candidates]  # [c, K, H]
        z = workspace.get("matmul", (h.shape[0], w.shape[-2]), h.dtype)
        if w.dim() == 2:
            torch.mm(h, w.T, out=z)  # [c, H] @ [H, K]
        else:
            torch.bmm(w, h.unsqueeze(2), out=z.unsqueeze(2))  # [c, K, H] @ [c, H, 1]
        if z.dtype != self.dtype:
            z = workspace.like("upcast", z, self.dtype).copy_(z)
        if self.bias is not None:
            z += self.bias if candidates is None else self.bias[candidates]
        return z, (h, w)

    def backprop(
        self,
        rows: Tensor,
        candidates: Tensor | None,
        dz: Tensor,
        chunk: tuple[Tensor, Tensor],
        span: range | None,
        workspace: Workspace,
    ) -> None:
        h, w = chunk
        if self.grad_hidden is not None:
            dz_low = dz if dz.dtype == w.dtype else workspace.like("downcast", dz, w.dtype).copy_(dz)
            if candidates is not None and candidates.dim() == 2:
                grad_h = torch.bmm(dz_low.unsqueeze(1), w).squeeze(1)  # [c, 1, K] @ [c, K, H]
            else:
                grad_h = dz_low @ w  # [c, K] @ [K, H]
            if span:
                self.grad_hidden[span.start : span.stop] = grad_h
            else:
                self.grad_hidden.index_copy_(0, rows, grad_h.to(self.grad_hidden.dtype))
        if self.grad_weight is not None:
            h = h.to(self.dtype)
            if candidates is None:
                self.grad_weight.addmm_(dz.T, h)  # [V, c] @ [c, H]
            elif candidates.dim() == 1:
                self.grad_weight.index_add_(0, candidates, dz.T @ h)
            else:
                per_slot = (dz.unsqueeze(2) * h.unsqueeze(1)).flatten(0, 1)  # [c * K, H]
                self.grad_weight.index_add_(0, candidates.flatten(), per_slot)
        if self.grad_bias is not None:
            if candidates is None:
                self.grad_bias += dz.sum(0)
            elif candidates.dim() == 1:
                self.grad_bias.index_add_(0, candidates, dz.sum(0))
            else:
                self.grad_bias.index_add_(0, candidates.flatten(), dz.flatten())

    def grads(self) -> tuple[Tensor | None, ...]:
        grad_hidden = None if self.grad_hidden is None else self.grad_hidden.view(self._hidden_shape)
        grad_weight = None if self.grad_weight is None else self.grad_weight.to(self.weight.dtype)
        grad_bias = None if self.grad_bias is None else self.grad_bias.to(self.bias.dtype)
        return grad_hidden, grad_weight, grad_bias


Source = LogitsSource | LinearSource


# (inputs: logits, or hidden, weight, bias; needs) -> the source the chunks read
MakeSource = Callable[[tuple["Tensor | None", ...], tuple[bool, ...]], Source]


@dataclass
class TokenLossJob:
    """Everything one call of an objective needs but its inputs; `run` is one chunked pass over the
    supervised tokens. The job holds no reference to the inputs, so that autograd, which keeps the job
    until the graph is freed, does not keep logits-sized tensors alive.

    name: the objective's name, for errors.
    statistics: filled by `run` with each supervised token's entropy and top-1 (a recording is open, see
    `_recording.py`): from the chunks it scores against the whole vocabulary, and for the other tokens
    (subsets, excluded ids) from one more read of their logits. With probability targets, top-1 means the
    target's most probable class.
    soft_target: the last input is probability targets (..., V), read chunk by chunk as the logits are
    (through a `LogitsSource`, which also holds their gradient); whole-vocabulary segments only.
    """

    make_source: MakeSource
    segments: Sequence[Segment]
    token_math: TokenMath
    num_tokens: int
    device: torch.device
    dtype: torch.dtype
    name: str
    statistics: TokenStatistics | None = None
    soft_target: bool = False

    def run(
        self, inputs: tuple[Tensor | None, ...], weights: Tensor | None, needs: tuple[bool, ...]
    ) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """Per-token losses (T,) (0 where ignored) and, where `needs`, the gradients of sum_i w_i loss_i."""
        need_grad = any(needs)
        targets = None
        if self.soft_target:
            targets = LogitsSource(inputs[-1], needs[-1], self.segments)
            target_workspace = Workspace(self.device)  # its reads must not reuse the logits' buffers
            inputs, needs = inputs[:-1], needs[:-1]
        need_source_grad = any(needs)  # the logits' (or hidden, weight, bias), not only the targets'
        source = self.make_source(inputs, needs)
        workspace = Workspace(self.device)
        losses = torch.zeros(self.num_tokens, dtype=self.dtype, device=self.device)
        statistics, unrecorded = self.statistics, []
        for segment in self.segments:
            # the logits read as they are (the whole vocabulary, nothing excluded) give the statistics
            record = statistics if segment.candidates is None and segment.excluded is None else None
            if statistics is not None and record is None:
                unrecorded.append(segment.rows)
            candidates = segment.candidates
            num_candidates = source.num_classes if candidates is None else candidates.shape[-1]
            step = source.chunk_rows(num_candidates, per_row=candidates is not None and candidates.dim() == 2)
            # one transfer per segment, to find runs of consecutive rows (read as views); not on accelerators
            row_ids = segment.rows.tolist() if reads_rows_on_host(self.device) else None
            for start in range(0, segment.rows.numel(), step):
                part = slice(start, start + step)
                rows, part_candidates = segment.rows[part], segment.candidates_at(part)
                span = None
                if row_ids is not None:
                    first, last = row_ids[start], row_ids[min(start + step, len(row_ids)) - 1]
                    span = range(first, last + 1) if last - first + 1 == rows.numel() else None
                z, chunk = source.read(rows, part_candidates, span, workspace)
                mask = segment.mask_at(part, workspace)
                if mask is not None:
                    z = torch.add(z, mask, out=workspace.like("masked", z))
                scale = weights.index_select(0, rows) if need_grad else None
                target_grad = None
                if targets is None:
                    target = segment.target[part]
                else:
                    target, _ = targets.read(rows, None, span, target_workspace)
                    target_grad = workspace.like("target_grad", z) if targets.grad is not None else None
                loss, dz = self._math_in_pieces(z, target, scale, workspace, rows, record, target_grad)
                losses.index_copy_(0, rows, loss)
                if need_source_grad:
                    source.backprop(rows, part_candidates, dz, chunk, span, workspace)
                if target_grad is not None:
                    targets.backprop(rows, None, target_grad, None, span, target_workspace)
        if unrecorded:
            self._record_whole_vocabulary(source, torch.cat(unrecorded).sort().values, workspace)
        if not need_grad:
            return losses, ()
        return losses, source.grads() if targets is None else (*source.grads(), *targets.grads())

    def _math_in_pieces(
        self,
        z: Tensor,
        target: Tensor,
        scale: Tensor | None,
        workspace: Workspace,
        rows: Tensor,
        record: TokenStatistics | None,
        target_grad: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        """The token math over z (c, K) in pieces of at most CHUNK_ELEMENTS, which stay in cache (the
        statistics, when recorded, read each piece while it is there). A fused chunk is larger than that, so
        that each update of the weight gradient (V, H) covers many rows. `target` is (c,) class indices or
        (c, K) probabilities, whose gradient goes to `target_grad` (c, K) when given."""
        piece_rows = max(1, math_elements(z.device) // z.shape[1])
        if z.shape[0] <= piece_rows:
            if record is not None:
                record.record(rows, z, _class_ids_of(target), workspace)
            return self.token_math(z, target, scale, workspace, target_grad)
        losses = []
        dz = None if scale is None else workspace.like("dz", z)
        for start in range(0, z.shape[0], piece_rows):
            piece = slice(start, start + piece_rows)
            if record is not None:
                record.record(rows[piece], z[piece], _class_ids_of(target[piece]), workspace)
            loss, dz_piece = self.token_math(
                z[piece],
                target[piece],
                None if scale is None else scale[piece],
                workspace,
                None if target_grad is None else target_grad[piece],
            )
            losses.append(loss)
            if dz is not None:
                dz[piece] = dz_piece
        return torch.cat(losses), dz

    def _record_whole_vocabulary(self, source: Source, rows: Tensor, workspace: Workspace) -> None:
        """The statistics of `rows` (R,) increasing, from their logits over the whole vocabulary."""
        target = torch.empty(self.num_tokens, dtype=torch.long, device=self.device)
        for segment in self.segments:  # each token's class id, whatever its segment scores it against
            ids = segment.target if segment.candidates is None else _class_ids(segment)
            target.index_copy_(0, segment.rows, ids)
        step = source.chunk_rows(source.num_classes, per_row=False)
        piece_rows = max(1, math_elements(self.device) // source.num_classes)
        for start in range(0, rows.numel(), step):
            part = rows[start : start + step]
            z, _ = source.read(part, None, None, workspace)
            for piece_start in range(0, part.numel(), piece_rows):
                piece = part[piece_start : piece_start + piece_rows]
                z_piece = z[piece_start : piece_start + piece_rows]
                self.statistics.record(piece, z_piece, target[piece], workspace)


def reads_rows_on_host(device: torch.device) -> bool:
    """Whether the engine reads row indices on the host to find runs of rows: on CPU, where that costs no
    sync and a run is read as a view; elsewhere rows are always gathered."""
    return device.type == "cpu"


def math_elements(device: torch.device) -> int:
    """Elements of the math's pieces: cache-sized on CPU, large on an accelerator."""
    return CHUNK_ELEMENTS if device.type == "cpu" else DEVICE_CHUNK_ELEMENTS


def _class_ids_of(target: Tensor) -> Tensor:
    """Class ids (R,) of targets (R,), or of probability targets (R, K): their most probable class."""
    return target.argmax(-1) if target.is_floating_point() else target


def _class_ids(segment: Segment) -> Tensor:
    """The vocabulary id of each token's target in a subset segment: its candidate at the target index."""
    if segment.candidates.dim() == 1:
        return segment.candidates[segment.target]
    return segment.candidates.gather(1, segment.target.unsqueeze(1)).squeeze(1)


class _ChunkedTokenLoss(torch.autograd.Function):
    """Returns the reduced loss; its gradient is computed during forward, or in backward when deferred.

    The gradient is deferred to backward, where the incoming gradient is known and becomes part of the
    per-token weights, for reduction="none" (a per-token incoming gradient) and for fp16 inputs, whose
    pre-scaled gradient would underflow, and overflow once multiplied by a loss scale such as GradScaler's.

    A gradient computed in forward is saved for backward (so that saved-tensor hooks such as
    `torch.autograd.graph.save_on_cpu` see it) and handed out by the first backward, scaled in place: no copy,
    as in Liger-Kernel. A second backward (a retained graph) never reads it again, since the caller may have
    modified it (``g.zero_()``): it runs the chunks again from the inputs, as a deferred backward does. The
    inputs are held only weakly (autograd keeps nothing logits-sized), so they must still be alive and
    unmodified then. `job` is a `TokenLossJob`, or any object with its `run`, `dtype`, `name` and
    `statistics` (R-Drop's).
    """

    @staticmethod
    def forward(ctx, job: TokenLossJob, weights: Tensor, reduction: str, shape: torch.Size, needs, *inputs):
        ctx.job, ctx.needs, ctx.weights = job, needs, weights
        ctx.deferred = reduction == "none" or any(t is not None and t.dtype == torch.float16 for t in inputs)
        if ctx.deferred:
            losses, _ = job.run(inputs, None, tuple(False for _ in needs))
            # backward reads the inputs again; autograd reports them changed in place since forward
            ctx.save_for_backward(*inputs)
        else:
            losses, grads = job.run(inputs, weights, needs)
            # Saved tensors are freed after backward unless the graph is retained (gradcheck, retain_graph).
            ctx.save_for_backward(*grads)
            ctx.handed_out = False
            ctx.inputs = _WeakInputs(inputs)
        job.statistics = None  # recorded: a backward's pass need not again
        return reduce_token_losses(losses, weights, reduction, shape)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: autograd would build a graph of our gradient
            raise RuntimeError(_second_order_message(ctx.job.name))
        return (None, None, None, None, None, *_ChunkedTokenLoss._input_grads(ctx, grad_output))

    @staticmethod
    def _input_grads(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.deferred and not ctx.handed_out:  # the first backward: hand the gradients out
            grads, ctx.handed_out = ctx.saved_tensors, True
            # A plain backward's incoming gradient is 1; reading it syncs, so accelerators always scale.
            if grad_output.device.type != "cpu" or grad_output.item() != 1:
                for grad in grads:
                    if grad is not None:
                        grad.mul_(grad_output.to(grad.dtype))
            return grads
        inputs = ctx.saved_tensors if ctx.deferred else ctx.inputs.get(ctx.job.name)
        weights = grad_output.reshape(-1).to(ctx.job.dtype) * ctx.weights
        _, grads = ctx.job.run(inputs, weights, ctx.needs)
        return grads


class _WeakInputs:
    """Weak references to the inputs of a call and their versions, for a second backward."""

    def __init__(self, inputs: tuple[Tensor | None, ...]) -> None:
        self._refs = [None if t is None else (weakref.ref(t), t._version) for t in inputs]

    def get(self, name: str) -> tuple[Tensor | None, ...]:
        inputs = []
        for ref in self._refs:
            if ref is None:
                inputs.append(None)
                continue
            tensor = ref[0]()
            if tensor is None or tensor._version != ref[1]:
                what = "freed" if tensor is None else "modified in place"
                raise RuntimeError(
                    f"a second backward through {name} (a retained graph) recomputes its gradient from its "
                    f"inputs, which have been {what} since forward: the first backward handed out the "
                    "gradient computed in forward. Keep the inputs (logits, or hidden and weight) alive and "
                    "unmodified until the last backward."
                )
            inputs.append(tensor)
        return tuple(inputs)


def _second_order_message(name: str) -> str:
    return (
        f"{name} is differentiable once: its gradient is computed by a chunked pass, not by autograd, so "
        "a second-order graph (create_graph=True: gradient penalties, Hessian-vector products, "
        "double backward) cannot be built through it. Compute that loss with plain PyTorch ops on "
        "materialised logits instead, e.g. F.cross_entropy(logits.flatten(0, -2), target.flatten()) for "
        "cross_entropy, or the naive formula in the objective's docstring."
    )


_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch < 2.3 has none


def eager_under_compile(fn: Callable) -> Callable:
    """`fn` run eagerly when a `torch.compile`d caller reaches it: a graph break, never a trace of it.

    The engine's loop reads data-dependent sizes (the supervised rows, runs of consecutive rows) that dynamo
    cannot trace across changing shapes. `torch.compiler.disable` is applied only while compiling, so
    importing tunekit never imports torch._dynamo (2 s).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_compiling():
            return torch.compiler.disable(fn)(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def chunked_token_loss(
    inputs: tuple[Tensor | None, ...],
    make_source: MakeSource,
    segments: Sequence[Segment],
    token_math: TokenMath,
    *,
    name: str,
    valid: Tensor,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    shape: torch.Size,
    backend: str = "torch",
    target: Tensor | None = None,
    target_weight: Tensor | None = None,
    soft_target: bool = False,
) -> Tensor:
    """Reduce `token_math` over `segments`; differentiable w.r.t. `inputs` (logits, or hidden, weight, bias;
    then the probability targets when `soft_target`).

    name: the objective's, for errors; valid: (T,) bool, the supervised tokens; shape: the loss's shape
    for reduction="none" (the targets' leading shape). backend: "torch" runs this module's chunked loop over
    `make_source`, "triton" the kernels (`_kernel_engine.py`), which also need `target` (the class ids, for
    the statistics). target_weight: (T,) class weight of each token's target, for a class-weighted "mean"
    (`_reduction.py`).
    """
    dtype = compute_dtype_for(*inputs)
    weights = token_weights(valid.reshape(-1), reduction, num_items_in_batch, dtype, target_weight)
    statistics = new_recording(shape, dtype, valid.device)
    if backend == "triton":
        from ._kernel_engine import KernelTokenLossJob  # imports triton

        job = KernelTokenLossJob(
            segments, token_math, target.reshape(-1), valid.reshape(-1), name, statistics
        )
    else:
        job = TokenLossJob(
            make_source,
            segments,
            token_math,
            valid.numel(),
            valid.device,
            dtype,
            name,
            statistics,
            soft_target,
        )
    needs = tuple(t is not None and t.requires_grad and torch.is_grad_enabled() for t in inputs)
    if not any(needs):  # evaluation: no gradient buffers, no gradient work
        losses, _ = job.run(inputs, None, needs)
        return reduce_token_losses(losses, weights, reduction, shape)
    return _ChunkedTokenLoss.apply(job, weights, reduction, shape, needs, *inputs)


def meta_token_loss(
    per_token: Tensor,
    valid: Tensor,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    target_weight: Tensor | None = None,
) -> Tensor:
    """The loss of meta inputs, which carry no values to plan or chunk: `per_token` (...) is any
    differentiable function of the inputs of the targets' shape in the compute dtype (a stand-in, e.g.
    ``logits.sum(-1)``), reduced as the engine reduces, so that the result has the loss's shape, dtype
    and autograd graph. An open statistics recording gets its (meta) entry."""
    weights = token_weights(valid.reshape(-1), reduction, num_items_in_batch, per_token.dtype, target_weight)
    new_recording(per_token.shape, per_token.dtype, per_token.device)
    return reduce_token_losses(per_token.reshape(-1), weights, reduction, per_token.shape)


def _viewable(tensor: Tensor) -> bool:
    try:
        tensor.view(-1, tensor.shape[-1])
    except RuntimeError:
        return False
    return True
