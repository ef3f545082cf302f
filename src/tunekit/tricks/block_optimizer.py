"""BAdam (Luo et al., NeurIPS 2024): block-coordinate fine-tuning, one transformer layer at a time.

The trainable parameters are split into blocks, one per layer; a round visits every block once, and each
block is trained alone with the wrapped optimizer for `switch_every` steps::

    for round r = 1, 2, ...:
        for block b in order(r):                  # ascending, descending, or a new permutation per round
            fresh optimizer state for b
            repeat switch_every times:  theta_b <- step(theta_b, grad_b)     # every other block frozen

Only the active block requires grad, so only it holds gradients and optimizer state: for Adam over a model
of L equal layers, gradients + state are ~1/L of full fine-tuning's. Half-precision (fp16 / bf16) weights of
the active block are stepped through fp32 master copies, which are freed at the switch (BAdam's design: the
frozen weights have no fp32 copy).

With the other tricks: layer-wise LR decay's param groups are kept as they are (each block steps with its
layer's lr). `EMA` averages every parameter, the frozen ones too (each is trained in its turn), in fp32 for
half-precision weights: 4 bytes per parameter that BAdam does not save; build it before the BlockOptimizer if
it is to track only trainable parameters (``trainable_only``), as the BlockOptimizer freezes all but one
block. FGM / PGD perturb the input embeddings along their gradient, so they need the embeddings trained at
every step (``outside_layers="trainable"``); otherwise they refuse (the embeddings do not require grad).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._checks import check_choice, check_count, check_integer, describe
from .models import LAYER_NAME, layer_depths, unwrap

logger = logging.getLogger(__name__)

ORDERS = ("random", "ascending", "descending")
OUTSIDE_LAYERS = ("frozen", "blocks", "trainable")
_HALF = (torch.float16, torch.bfloat16)
# the key of the block schedule in `BlockOptimizer.state_dict`, beside the base optimizer's own keys
SCHEDULE_KEY = "block_schedule"


class Block(NamedTuple):
    """One block of `BlockOptimizer`: a label (``"model.layers.3"``, ``"embeddings"``, ``"head"``) and the
    names of its parameters, as in ``named_parameters()`` of the unwrapped model."""

    name: str
    param_names: tuple[str, ...]


class BlockOptimizer(torch.optim.Optimizer):
    """Trains one block of parameters at a time with `base_optimizer` (BAdam); behaves as an optimizer.

    Args:
        model: the model `base_optimizer` was built for (DDP / DataParallel / `torch.compile` looked through).
            Its parameters that require grad and are in `base_optimizer` are the ones trained; every other
            parameter is left as it is.
        base_optimizer: any `torch.optim.Optimizer` over the model's parameters, with any param groups (each
            keeps its own lr, weight decay and other hyper-parameters; LR schedulers change them as usual).
        switch_every: optimizer steps each block is trained for, >= 1.
        order: "random" (a new permutation of the blocks each round, from a generator saved in
            `state_dict`), "ascending" (from the embeddings up) or "descending" (from the head down).
        outside_layers: the parameters outside the transformer layers (embeddings, final norm, head):
            "frozen" (never trained, as in BAdam), "blocks" (the embeddings a block before the first layer,
            the rest a block after the last) or "trainable" (trained at every step, their state kept).
        layer_of: maps a parameter name to its depth (0 embeddings, 1..L the layers, None the head), for
            architectures whose names `layer_decay_param_groups` cannot read.
        blocks: the blocks by hand instead, in order: each a list of parameter names or module prefixes
            (``"model.layers.0"`` takes every parameter under it); the parameters in none of them are
            outside the layers.
        seed: the seed of the random order; None draws one from torch's global generator (so
            ``torch.manual_seed`` fixes it; under torch.distributed rank 0's is used by all).

    Under torch.distributed (more than one process), `step` averages the trained parameters' gradients over
    the processes before stepping, so that every process takes the same step whether or not the model is
    wrapped in DistributedDataParallel: DDP registers only the parameters that required grad when it wrapped
    the model, and the gradients it did average are equal everywhere, so averaging them again changes nothing.
    To clip the norm of the averaged gradient, call `average_gradients` before clipping. A model wrapped in
    DDP, before or after, needs ``find_unused_parameters=True`` (the frozen blocks get no gradient; the
    Hugging Face Trainer's default without activation checkpointing).

    Every block starts with fresh optimizer state (a state the base optimizer held before is dropped). fp16
    weights: `torch.amp.GradScaler` refuses fp16 gradients, so use bf16 weights, or fp32 ones under autocast.
    Under `torch.compile` a switch changes which parameters require grad, so each block compiles its own
    graph (dynamo's ``recompile_limit``, 8 by default, caps that). LBFGS, which re-evaluates its closure
    within a step, cannot be wrapped.

    A plain loop::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential()
        >>> model.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        >>> optimizer = BlockOptimizer(
        ...     model, torch.optim.AdamW(model.parameters(), lr=1e-3), switch_every=2, order="ascending"
        ... )
        >>> [p.requires_grad for p in model.parameters()]
        [True, True, False, False, False, False]
        >>> for _ in range(2):
        ...     sum(layer(torch.ones(4)).sum() for layer in model.layers).backward()
        ...     optimizer.step()
        ...     optimizer.zero_grad()
        >>> optimizer.blocks[optimizer.active_block].name
        'layers.1'

    Raises:
        ValueError: an option out of range; `base_optimizer` holds a tensor that is not a parameter of
            `model`, or is LBFGS; no block is found; a block of `blocks` names nothing, or a parameter is in
            two blocks; a DDP-wrapped model without ``find_unused_parameters``.
    """

    @staticmethod
    def check_options(
        *,
        switch_every: int = 50,
        order: str = "random",
        outside_layers: str = "frozen",
        seed: int | None = None,
    ) -> None:
        """ValueError naming the first option the constructor would refuse (`tunekit.hf.TrainerTricks`
        checks its BAdam options here, before there is a model)."""
        check_count("switch_every", switch_every, minimum=1)
        check_choice("order", order, ORDERS)
        check_choice("outside_layers", outside_layers, OUTSIDE_LAYERS)
        if seed is not None:
            check_integer("seed", seed)

    def __init__(
        self,
        model: nn.Module,
        base_optimizer: torch.optim.Optimizer,
        *,
        switch_every: int = 50,
        order: str = "random",
        outside_layers: str = "frozen",
        layer_of: Callable[[str], int | None] | None = None,
        blocks: Sequence[Sequence[str]] | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {describe(model)}")
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"base_optimizer must be a torch.optim.Optimizer, got {describe(base_optimizer)}"
            )
        if isinstance(base_optimizer, BlockOptimizer):
            raise ValueError("base_optimizer is already a BlockOptimizer")
        if isinstance(base_optimizer, torch.optim.LBFGS):
            raise ValueError("LBFGS re-evaluates its closure within a step: BlockOptimizer cannot wrap it")
        if isinstance(model, nn.parallel.DistributedDataParallel) and not model.find_unused_parameters:
            raise ValueError(
                "the model is wrapped in DistributedDataParallel with find_unused_parameters=False: the "
                "frozen blocks get no gradient and DDP would wait for them; wrap it with "
                "find_unused_parameters=True"
            )
        self.check_options(switch_every=switch_every, order=order, outside_layers=outside_layers, seed=seed)
        if layer_of is not None and blocks is not None:
            raise ValueError("pass layer_of or blocks, not both")
        self.base_optimizer = base_optimizer
        self.switch_every = switch_every
        self.order = order
        self.outside_layers = outside_layers
        self._params = _trained_parameters(model, base_optimizer)
        found = (
            _blocks_by_hand(self._params, _listed(blocks))
            if blocks is not None
            else _layer_blocks(self._params, layer_of)
        )
        layer_blocks, embeddings, head = found
        if not layer_blocks:
            raise ValueError("no parameter of the optimizer is in a transformer layer: nothing to train")
        if outside_layers == "blocks":  # empty blocks are left out
            layer_blocks = [embeddings, *layer_blocks, head]
        self.blocks: tuple[Block, ...] = tuple(block for block in layer_blocks if block.param_names)
        # the parameters outside the layers that are trained at every step
        self.always_trained: tuple[str, ...] = (
            embeddings.param_names + head.param_names if outside_layers == "trainable" else ()
        )
        self._generator = torch.Generator()
        if order == "random":
            self._generator.manual_seed(_shared_seed(seed))
        self._round: list[int] = self._new_round()
        self._position = 0  # in the round
        self._steps_in_block = 0
        self._masters: dict[int, Tensor] = {}  # id(parameter) -> its fp32 master copy (half weights only)
        self._gradients_averaged = False
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        self._share_base()
        for name, param in self._params.items():
            # fresh state for every block (a state the base optimizer held before would outlive its block)
            self.base_optimizer.state.pop(param, None)
            if name not in self.always_trained:
                param.requires_grad_(False)
                param.grad = None
        self._activate(self.always_trained)
        self._activate(self.blocks[self.active_block].param_names)

    # ---- the schedule ----

    @property
    def active_block(self) -> int:
        """The index in `blocks` of the block being trained."""
        return self._round[self._position]

    @property
    def steps_in_block(self) -> int:
        """Optimizer steps the active block has taken (0 .. switch_every - 1)."""
        return self._steps_in_block

    def _new_round(self) -> list[int]:
        count = len(self.blocks)
        if self.order == "ascending":
            return list(range(count))
        if self.order == "descending":
            return list(reversed(range(count)))
        return torch.randperm(count, generator=self._generator).tolist()

    def _advance(self) -> None:
        """Free the active block's state and master copies, freeze it, and unfreeze the next one."""
        self._deactivate(self.blocks[self.active_block].param_names)
        self._position += 1
        if self._position == len(self._round):
            self._round, self._position = self._new_round(), 0
        self._steps_in_block = 0
        self._activate(self.blocks[self.active_block].param_names)
        logger.info("BlockOptimizer: training block %s", self.blocks[self.active_block].name)

    def _activate(self, names: Sequence[str]) -> None:
        for name in names:
            param = self._params[name]
            param.requires_grad_(True)
            if param.dtype in _HALF:
                self._masters[id(param)] = param.detach().to(torch.float32, copy=True)

    def _deactivate(self, names: Sequence[str]) -> None:
        for name in names:
            param = self._params[name]
            param.requires_grad_(False)
            param.grad = None
            master = self._masters.pop(id(param), None)
            self.base_optimizer.state.pop(param if master is None else master, None)

    def _trained_now(self) -> list[nn.Parameter]:
        names = self.always_trained + self.blocks[self.active_block].param_names
        return [self._params[name] for name in names]

    # ---- the optimizer ----

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of the base optimizer on the active block (and the parameters trained always); after
        `switch_every` of them, the next block. A `closure` is evaluated once, before the step, and the base
        optimizer steps on the gradients it leaves."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._gradients_averaged:
            self.average_gradients()
        self._gradients_averaged = False
        if self._masters:
            trained = [p for p in self._trained_now() if id(p) in self._masters]
            for param in trained:
                master = self._masters[id(param)]
                master.grad = None if param.grad is None else param.grad.to(torch.float32)
            with self._masters_in_groups():
                self.base_optimizer.step()
            for param in trained:
                master = self._masters[id(param)]
                param.copy_(master)
                master.grad = None
        else:
            self.base_optimizer.step()
        self._steps_in_block += 1
        if self._steps_in_block == self.switch_every:
            self._advance()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def train(self) -> None:
        """The base optimizer's ``train()``, where it has one (schedule-free optimizers); else nothing."""
        if callable(getattr(self.base_optimizer, "train", None)):
            self.base_optimizer.train()

    def eval(self) -> None:
        """The base optimizer's ``eval()``, where it has one (schedule-free optimizers); else nothing."""
        if callable(getattr(self.base_optimizer, "eval", None)):
            self.base_optimizer.eval()

    def __getstate__(self) -> dict[str, Any]:  # torch.optim.Optimizer keeps only its own three attributes
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @torch.no_grad()
    def average_gradients(self) -> None:
        """Average the gradients of the parameters trained now over the processes of torch.distributed's
        default group (nothing with one process). `step` does it unless this was called since the last step:
        call it after the last backward of a step and before clipping the gradients' norm."""
        self._gradients_averaged = True
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        params = self._trained_now()
        world = dist.get_world_size()
        # a parameter without a gradient on some process counts as zero there, as in DDP; without one on
        # every process it keeps none (the step skips it, as it would in one process)
        present = torch.tensor(
            [p.grad is not None for p in params], dtype=torch.float32, device=params[0].device
        )
        dist.all_reduce(present)
        by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
        for param, count in zip(params, present.tolist(), strict=True):
            if count > 0:
                by_dtype.setdefault(param.dtype, []).append(param)
        for group in by_dtype.values():
            flat = torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
            )
            dist.all_reduce(flat)
            flat.div_(world)
            for param, grad in zip(group, flat.split([p.numel() for p in group]), strict=True):
                param.grad = grad.view_as(param)

    # ---- saving and resuming ----

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (the active block's state, under its usual keys) and the schedule
        under ``"block_schedule"``: the block, the step within it, the round's order, the random generator
        and the fp32 master copies, so that `load_state_dict` continues mid-block exactly. As with torch's
        optimizers, the tensors are the live ones: save or clone them before the next step."""
        with self._masters_in_groups():
            state = self.base_optimizer.state_dict()
        index = self._param_index()
        state[SCHEDULE_KEY] = {
            "blocks": [list(block.param_names) for block in self.blocks],
            "always_trained": list(self.always_trained),
            "order": self.order,
            "switch_every": self.switch_every,
            "round": list(self._round),
            "position": self._position,
            "steps_in_block": self._steps_in_block,
            "generator": self._generator.get_state(),
            "masters": {index[key]: master for key, master in self._masters.items()},
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a `state_dict` of a BlockOptimizer over the same blocks; the caller's dict is not changed.

        Raises:
            ValueError: a state without the schedule (a plain optimizer's), or of other blocks, another
                order or another `switch_every`.
        """
        if not isinstance(state_dict, dict) or SCHEDULE_KEY not in state_dict:
            keys = list(state_dict)[:5] if isinstance(state_dict, dict) else describe(state_dict)
            raise ValueError(
                f"not a BlockOptimizer state: no {SCHEDULE_KEY!r} entry (keys {keys}); was it saved by the "
                "base optimizer alone?"
            )
        state = dict(state_dict)
        schedule = state.pop(SCHEDULE_KEY)
        self._check_schedule(schedule)
        target = schedule["round"][schedule["position"]]
        index = self._param_index()
        names = self.always_trained + self.blocks[target].param_names
        halves = {index[id(self._params[n])] for n in names if self._params[n].dtype in _HALF}
        masters = {int(i): tensor for i, tensor in schedule["masters"].items()}
        if set(masters) != halves:
            raise ValueError(
                f"the state holds fp32 master copies of {len(masters)} parameters, the block it resumes has "
                f"{len(halves)} half-precision ones: was the model loaded in another dtype?"
            )
        switching = target != self.active_block
        if switching:
            self._deactivate(self.blocks[self.active_block].param_names)
        self._round, self._position = list(schedule["round"]), int(schedule["position"])
        if switching:
            self._activate(self.blocks[target].param_names)
        self._steps_in_block = int(schedule["steps_in_block"])
        self._generator.set_state(schedule["generator"].cpu())
        with torch.no_grad():
            for key, master in self._masters.items():
                master.copy_(masters[index[key]])
        with self._masters_in_groups():
            self.base_optimizer.load_state_dict(state)
        self._share_base()

    def _check_schedule(self, schedule: dict[str, Any]) -> None:
        blocks = [list(block.param_names) for block in self.blocks]
        if schedule.get("blocks") != blocks or schedule.get("always_trained") != list(self.always_trained):
            raise ValueError(
                "the state was saved for other blocks: saved "
                f"{[b[:1] for b in schedule.get('blocks', [])]}, these {[b[:1] for b in blocks]} "
                "(first parameter of each)"
            )
        for key in ("order", "switch_every"):
            if schedule.get(key) != getattr(self, key):
                raise ValueError(
                    f"the state was saved with {key}={schedule.get(key)!r}, this optimizer has "
                    f"{key}={getattr(self, key)!r}"
                )

    # ---- helpers ----

    def _share_base(self) -> None:
        """The base optimizer's groups and state are this optimizer's (schedulers set their lr directly);
        the base's `load_state_dict` replaces both objects."""
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults = self.base_optimizer.defaults

    def _param_index(self) -> dict[int, int]:
        """id(parameter) -> its index in the state dict (the parameters of all groups, in order)."""
        params = (p for group in self.base_optimizer.param_groups for p in group["params"])
        return {id(param): i for i, param in enumerate(params)}

    @contextlib.contextmanager
    def _masters_in_groups(self) -> Iterator[None]:
        """Inside, the base optimizer's groups hold the fp32 master copies in place of the half-precision
        weights they stand for (so its state is keyed by, and steps, the copies)."""
        if not self._masters:
            yield
            return
        weights = {
            id(master): param
            for param in self._params.values()
            if (master := self._masters.get(id(param))) is not None
        }
        for group in self.base_optimizer.param_groups:
            group["params"] = [self._masters.get(id(p), p) for p in group["params"]]
        try:
            yield
        finally:  # the groups the base holds now (its load_state_dict makes new ones)
            for group in self.base_optimizer.param_groups:
                group["params"] = [weights.get(id(p), p) for p in group["params"]]

    def __repr__(self) -> str:
        block = self.blocks[self.active_block].name
        return (
            f"BlockOptimizer(block {block!r}, {self._steps_in_block}/{self.switch_every} steps, "
            f"{len(self.blocks)} blocks, order={self.order!r}, base={self.base_optimizer!r})"
        )


def _trained_parameters(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, nn.Parameter]:
    """Name -> parameter, in the model's order, for the parameters of `optimizer` that require grad."""
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    named = list(unwrap(model).named_parameters())
    strangers = in_optimizer - {id(p) for _, p in named}
    if strangers:
        raise ValueError(
            f"base_optimizer holds {len(strangers)} tensors that are not parameters of the model; build it "
            "over the model's parameters"
        )
    params = {name: p for name, p in named if id(p) in in_optimizer and p.requires_grad}
    if not params:
        raise ValueError("no parameter of base_optimizer requires grad: nothing to train")
    return params


def _layer_blocks(
    params: dict[str, nn.Parameter], layer_of: Callable[[str], int | None] | None
) -> tuple[list[Block], Block, Block]:
    """One block per layer, from `layer_depths`; the embeddings (depth 0) and the head (None)."""
    depths = layer_depths(list(params), layer_of)
    by_depth: dict[int | None, list[str]] = {}
    for name, depth in depths.items():
        by_depth.setdefault(depth, []).append(name)
    layers = []
    for depth in sorted(d for d in by_depth if d):
        names = by_depth[depth]
        match = LAYER_NAME.match(names[0]) if layer_of is None else None
        label = f"{match['stack']}.{match['index']}" if match else f"layer {depth}"
        layers.append(Block(label, tuple(names)))
    return (
        layers,
        Block("embeddings", tuple(by_depth.get(0, ()))),
        Block("head", tuple(by_depth.get(None, ()))),
    )


def _blocks_by_hand(
    params: dict[str, nn.Parameter], blocks: Sequence[Sequence[str]]
) -> tuple[list[Block], Block, Block]:
    """The given blocks; the parameters in none of them are outside the layers (one 'head' block)."""
    if isinstance(blocks, str) or not all(
        not isinstance(b, str) and all(isinstance(n, str) for n in b) for b in blocks
    ):
        raise ValueError(f"blocks must be a list of lists of parameter names or prefixes, got {blocks!r}")
    owner: dict[str, int] = {}
    found = []
    for i, prefixes in enumerate(blocks):
        names = [n for n in params if any(n == p or n.startswith(p.rstrip(".") + ".") for p in prefixes)]
        if not names:
            raise ValueError(
                f"blocks[{i}] = {list(prefixes)} names no trained parameter (names are matched as in "
                f"named_parameters() of the unwrapped model, e.g. {next(iter(params))!r})"
            )
        for name in names:
            if name in owner:
                raise ValueError(f"parameter {name!r} is in blocks[{owner[name]}] and blocks[{i}]")
            owner[name] = i
        found.append(Block(",".join(prefixes), tuple(names)))
    rest = tuple(n for n in params if n not in owner)
    return found, Block("embeddings", ()), Block("outside the blocks", rest)


def _listed(blocks: Sequence[Sequence[str]]) -> list[list[str]] | Any:
    """`blocks` as lists (a generator read once), or as given when it is not a sequence of sequences."""
    if isinstance(blocks, str) or not hasattr(blocks, "__iter__"):
        return blocks
    blocks = list(blocks)
    return [b if isinstance(b, str) or not hasattr(b, "__iter__") else list(b) for b in blocks]


def _shared_seed(seed: int | None) -> int:
    """`seed`, or one drawn from torch's generator; under torch.distributed, rank 0's."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shared = [seed]
            dist.broadcast_object_list(shared, src=0)
            seed = int(shared[0])
    return seed
