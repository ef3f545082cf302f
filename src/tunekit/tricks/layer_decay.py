"""Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; timm's `param_groups_layer_decay`): the
lower a layer, the smaller its learning rate, so fine-tuning moves general features less than task ones.

With L transformer layers numbered 1..L, the embeddings at depth 0 and the head above them::

    lr(depth) = lr * layer_decay ** (L + 1 - depth)     # depth L gets lr * layer_decay, embeddings the least
    lr(head) = head_lr (lr unless given)

Returns ordinary param-group dicts with a plain ``lr`` per group (the Hugging Face Trainer ignores timm's
``lr_scale``), ready for any `torch.optim` optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from .._checks import check_fraction, check_non_negative
from .models import layer_depths, unwrap


def layer_decay_param_groups(
    model: nn.Module,
    lr: float,
    layer_decay: float,
    *,
    weight_decay: float = 0.0,
    head_lr: float | None = None,
    layer_of: Callable[[str], int | None] | None = None,
) -> list[dict[str, Any]]:
    """Param groups with layer-wise decayed learning rates; every trainable parameter is in exactly one.

    Depths are read from parameter names: blocks ``<stack>.<i>.`` of the ModuleList named ``layer``,
    ``layers``, ``h`` or ``block`` (BERT, RoBERTa, DeBERTa-v2, ELECTRA, XLNet, GPT-2, Llama, Mistral,
    Qwen2, T5); several stacks (T5's encoder and decoder) are stacked in the order they appear. Parameters
    before the first block (the embeddings) are depth 0; those between blocks (T5's encoder final norm)
    take the depth of the block before them; those after the last block (final norm, pooler, classifier,
    LM head) form the head.

    Biases and other parameters with fewer than 2 dimensions (norm weights) get no weight decay.

    Args:
        model: the model (a DDP wrapper is looked through); frozen parameters are left out.
        lr: the learning rate of the top layer's neighbour, the head (see the module docstring).
        layer_decay: the factor per layer, in (0, 1].
        weight_decay: for parameters with 2 or more dimensions.
        head_lr: the head's learning rate; default ``lr``.
        layer_of: for architectures whose names this cannot read: maps a parameter name to its depth
            (0 = embeddings, 1..L the blocks) or None for the head.

    Raises:
        ValueError: no block is found in the parameter names and no `layer_of` is given; `layer_of` returns
            something other than an integer >= 0 or None; the model has no trainable parameter.
    """
    check_non_negative("lr", lr, positive=True)
    check_non_negative("weight_decay", weight_decay)
    check_layer_decay_options(layer_decay=layer_decay, head_lr=head_lr)
    params = [(name, p) for name, p in unwrap(model).named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (none requires grad)")
    depths = layer_depths([name for name, _ in params], layer_of)
    num_layers = max((d for d in depths.values() if d is not None), default=0)
    groups: dict[tuple[int | None, bool], dict[str, Any]] = {}
    for name, param in params:
        depth = depths[name]
        decays = param.ndim >= 2
        group = groups.get((depth, decays))
        if group is None:
            group_lr = (
                (head_lr if head_lr is not None else lr)
                if depth is None
                else (lr * layer_decay ** (num_layers + 1 - depth))
            )
            group = groups[(depth, decays)] = {
                "params": [],
                "lr": group_lr,
                "weight_decay": weight_decay if decays else 0.0,
                "layer": "head" if depth is None else depth,
                "param_names": [],
            }
        group["params"].append(param)
        group["param_names"].append(name)
    order = sorted(groups, key=lambda key: (math.inf if key[0] is None else key[0], not key[1]))
    return [groups[key] for key in order]


def check_layer_decay_options(*, layer_decay: float, head_lr: float | None = None) -> None:
    """ValueError naming the option `layer_decay_param_groups` would refuse (`tunekit.hf.TrainerTricks`
    checks its options here, before there is a model)."""
    check_fraction("layer_decay", layer_decay, zero_ok=False, one_ok=True)
    if head_lr is not None:
        check_non_negative("head_lr", head_lr, positive=True)
