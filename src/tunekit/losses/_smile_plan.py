"""SMILE's planner: which vocabulary columns each supervised token is scored against, as `Segment`s.

Each sequence's first supervised token (with ``first_token_mle``) is scored against the whole vocabulary,
the others against their subset: "sequence" the distinct ids of the sequence's labels, "random" the label
plus ``num_random`` drawn ids, "reverse" the vocabulary minus the sequence's ids plus the label. A sequence
is a row of the target, or with position_ids a packed sequence (it starts wherever position_ids == 0).

How the segments are laid out depends on what runs them, so that each engine does the least work:

- explicit rows and per-sequence candidates ("sequence"): only the subset's logits are gathered, or for
  the fused forms only the subset's weight rows multiplied. The sizes are read in one host sync.
- every row at once (the Triton kernels, logits form, and fused "random" / "reverse"): ignored tokens carry
  a negative target, and "sequence" / "reverse" become a (-inf, 0) mask per sequence read with the row,
  so nothing is found on the host.

Packed sequences add one sync, to count them (their tables have a row per sequence).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._engine import Segment
from ._objective import every_row_target


def plan_smile_segments(
    target: Tensor,
    valid: Tensor,
    num_classes: int,
    backend: str = "torch",
    fused: bool = False,
    *,
    subset: str,
    num_random: int,
    first_token_mle: bool,
    generator: torch.Generator | None,
    position_ids: Tensor | None = None,
) -> list[Segment]:
    """Segments covering the supervised tokens of target (B, N) (see the module docstring); `backend` and
    `fused` say what runs them. The "random" draw is ``torch.randint(V, (B, N, num_random))`` on every path,
    so each path scores the same subsets."""
    B, N = target.shape
    if B * N == 0:
        return []
    plan = _Plan(target, valid, num_classes, position_ids, first_token_mle)
    if subset == "random":
        device = target.device if generator is None else generator.device
        drawn = torch.randint(num_classes, (B, N, num_random), generator=generator, device=device)
        return plan.random(drawn.to(target.device).view(B * N, num_random), backend, fused)
    if backend == "torch" or (fused and subset == "sequence"):
        return plan.sequence() if subset == "sequence" else plan.reverse()
    return plan.masked(subset)


class _Plan:
    """The quantities every layout shares, over the flat positions (T = B * N) of target (B, N)."""

    def __init__(
        self,
        target: Tensor,
        valid: Tensor,
        num_classes: int,
        position_ids: Tensor | None,
        first_token_mle: bool,
    ) -> None:
        B, N = target.shape
        device = target.device
        self.num_classes = num_classes
        self.flat = target.reshape(-1).long()
        self.valid = valid.reshape(-1)
        self.sequence_of, self.num_sequences = sequence_index(B, N, position_ids, device)
        self.class_ids = torch.where(self.valid, self.flat, 0)  # ignore_index may lie outside the vocabulary
        self.first = torch.zeros_like(self.valid)
        if first_token_mle:  # each sequence's first supervised position, found without a sync
            positions = torch.arange(B * N, device=device)
            supervised_at = torch.where(self.valid, positions, B * N)
            first_at = torch.full((self.num_sequences,), B * N, device=device)
            first_at.scatter_reduce_(0, self.sequence_of, supervised_at, "amin")
            self.first = self.valid & (positions == first_at[self.sequence_of])
        self.rest = self.valid & ~self.first

    def sequence(self) -> list[Segment]:
        """The first tokens against the whole vocabulary, then one segment per sequence against its sorted
        ids. One host sync: the number of ids, of rows and of first tokens, read together."""
        S, device = self.num_sequences, self.flat.device
        in_sequence = torch.zeros(S + 1, self.num_classes, dtype=torch.bool, device=device)
        writes = (torch.where(self.valid, self.sequence_of, S), self.class_ids)  # ignored tokens: row S
        in_sequence.index_put_(writes, torch.ones((), dtype=torch.bool, device=device))
        in_sequence = in_sequence[:S]
        rest_of = torch.zeros(S + 1, dtype=torch.long, device=device)
        rest_of.scatter_add_(0, torch.where(self.rest, self.sequence_of, S), torch.ones_like(self.flat))
        sizes = torch.cat([in_sequence.sum(1), rest_of[:S], self.first.sum().view(1)]).tolist()
        ids_per_sequence, rows_per_sequence, num_first = sizes[:S], sizes[S:-1], sizes[-1]
        first_rows = _nonzero(self.first, num_first)
        segments = [Segment(rows=first_rows, target=self.flat[first_rows])] if num_first else []
        ids = _nonzero(in_sequence, sum(ids_per_sequence))[:, 1].contiguous()  # by sequence, then id
        rows = _nonzero(self.rest, sum(rows_per_sequence))  # increasing, so grouped by sequence
        for seq_ids, seq_rows in zip(ids.split(ids_per_sequence), rows.split(rows_per_sequence), strict=True):
            if seq_rows.numel():
                index = torch.searchsorted(seq_ids, self.flat[seq_rows])
                segments.append(Segment(rows=seq_rows, target=index, candidates=seq_ids))
        return segments

    def random(self, drawn: Tensor, backend: str, fused: bool) -> list[Segment]:
        """The first tokens against the whole vocabulary; the others against (T, 1 + num_random) candidates,
        the label and the drawn ids sorted, duplicates masked with -inf so that each counts once."""
        candidates, _ = torch.cat([self.class_ids.unsqueeze(1), drawn], 1).sort(1)
        duplicate = torch.zeros_like(candidates, dtype=torch.bool)
        duplicate[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
        index = ((candidates == self.class_ids.unsqueeze(1)) & ~duplicate).int().argmax(1)
        padding = torch.zeros(duplicate.shape, device=drawn.device).masked_fill_(duplicate, -math.inf)
        if backend == "triton":
            rest = Segment(
                rows=None, target=every_row_target(index, self.rest), candidates=candidates, padding=padding
            )
            if not fused:  # one launch over every row writes whole gradient rows, zeros where not first
                return [Segment(rows=None, target=every_row_target(self.flat, self.first)), rest]
            # the fused forms multiply only the first tokens (at most one per sequence) by the whole weight:
            # their rows padded to S with row 0, whose padding entries are ignored
            first_rows = _nonzero(self.first, self.num_sequences, pad=0)
            found = torch.arange(self.num_sequences, device=drawn.device) < self.first.sum()
            return [Segment(rows=first_rows, target=torch.where(found, self.flat[first_rows], -1)), rest]
        first_rows, rows = self.first.nonzero().squeeze(1), self.rest.nonzero().squeeze(1)
        segments = [Segment(rows=first_rows, target=self.flat[first_rows])] if first_rows.numel() else []
        rest = Segment(rows=rows, target=index[rows], candidates=candidates[rows], padding=padding[rows])
        return [*segments, rest]

    def reverse(self) -> list[Segment]:
        """The first tokens against the whole vocabulary, the others against it minus their sequence's ids
        (an (S, V) table of -inf at the ids, read per row; the label itself is never dropped)."""
        in_sequence = self._sequence_table(keep=-math.inf, drop=0.0)[: self.num_sequences]
        first_rows, rows = self.first.nonzero().squeeze(1), self.rest.nonzero().squeeze(1)
        segments = [Segment(rows=first_rows, target=self.flat[first_rows])] if first_rows.numel() else []
        segment = Segment(
            rows=rows, target=self.flat[rows], excluded=in_sequence, excluded_row=self.sequence_of[rows]
        )
        return [*segments, segment]

    def masked(self, subset: str) -> list[Segment]:
        """One segment over every row against the whole vocabulary, with a mask row per sequence: keeping
        its ids ("sequence") or dropping them ("reverse"); the first tokens read a row that keeps all."""
        keep, drop = (0.0, -math.inf) if subset == "sequence" else (-math.inf, 0.0)
        table = self._sequence_table(keep, drop)
        table[self.num_sequences] = 0.0
        table_row = torch.where(self.first, self.num_sequences, self.sequence_of)
        return [
            Segment(
                rows=None,
                target=every_row_target(self.flat, self.valid),
                excluded=table,
                excluded_row=table_row,
            )
        ]

    def _sequence_table(self, keep: float, drop: float) -> Tensor:
        """(S + 2, V) float: `keep` at the ids of each sequence's labels, `drop` elsewhere. Row S is free
        for the caller; row S + 1 takes the ignored tokens' writes, so that no write needs a mask of rows."""
        S = self.num_sequences
        table = torch.full((S + 2, self.num_classes), drop, device=self.flat.device)
        writes = (torch.where(self.valid, self.sequence_of, S + 1), self.class_ids)
        return table.index_put_(writes, table.new_tensor(keep))


def sequence_index(B: int, N: int, position_ids: Tensor | None, device: torch.device) -> tuple[Tensor, int]:
    """(B * N,) int64 sequence of each flat position, and the number of sequences S. A sequence starts at
    each row's first position and, with position_ids (B, N), wherever position_ids == 0."""
    if position_ids is None:
        return torch.arange(B * N, device=device) // N, B
    starts = position_ids == 0
    starts[:, :1] = True
    sequence_of = starts.reshape(-1).cumsum(0) - 1
    # S sizes the (S, V) tables of the planner: one scalar read per call, never one per chunk
    return sequence_of, int(sequence_of[-1]) + 1 if sequence_of.numel() else 0


def _nonzero(mask: Tensor, size: int, pad: int = 0) -> Tensor:
    """Indices where the 1-D `mask` is True ((size,)) or of a 2-D one ((size, 2)), their count known, so
    no host sync (`torch.nonzero_static`); entries past the count are `pad`."""
    if hasattr(torch, "nonzero_static"):
        found = torch.nonzero_static(mask, size=size, fill_value=pad)
    else:  # torch < 2.1
        found = mask.nonzero()
        found = torch.cat([found, found.new_full((size - found.shape[0], mask.dim()), pad)])
    return found.squeeze(1) if mask.dim() == 1 else found
