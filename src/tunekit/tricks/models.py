"""Reading a model the way the tricks and the integrations need it: looking through wrappers (`unwrap`), and
finding its layers (`layer_depths`)."""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Sequence

from torch import nn

# the ModuleList of blocks: BERT / RoBERTa / ELECTRA / DeBERTa-v2 / XLNet `layer`, Llama / Mistral / Qwen2
# `layers`, GPT-2 `h`, T5 `block` (one stack in the encoder, one in the decoder)
LAYER_NAME = re.compile(r"^(?P<stack>(?:.*?\.)?(?:layer|layers|h|block))\.(?P<index>\d+)\.")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (their ``.module``) and
    `torch.compile` (its ``_orig_mod``), so that parameter names carry no ``module.`` / ``_orig_mod.``
    prefix and match across wrapped and unwrapped models."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def layer_depths(
    names: Sequence[str], layer_of: Callable[[str], int | None] | None = None
) -> dict[str, int | None]:
    """Parameter name -> depth: 0 for the embeddings, 1..L for the transformer layers, None for the head.

    Read from the names, in the model's order: blocks ``<stack>.<i>.`` of a ModuleList named ``layer``,
    ``layers``, ``h`` or ``block``; several stacks (T5's encoder and decoder) are stacked in the order they
    appear. Names before the first block are depth 0; those between blocks (T5's encoder final norm) take the
    depth of the block before them; those after the last block (final norm, pooler, classifier, LM head) are
    the head. `layer_of`, where given, maps each name to its depth instead.

    Raises:
        ValueError: no block in the names and no `layer_of`; `layer_of` returns something other than an
            integer >= 0 or None.
    """
    if layer_of is not None:
        depths: dict[str, int | None] = {}
        for name in names:
            depth = layer_of(name)
            bad = isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0
            if depth is not None and bad:
                raise ValueError(f"layer_of({name!r}) must be a depth >= 0 or None, got {depth!r}")
            depths[name] = None if depth is None else int(depth)
        return depths
    blocks = [LAYER_NAME.match(name) for name in names]
    if not any(blocks):
        raise ValueError(
            "cannot find the layers of this model: no parameter name has a block '<...>.layer.<i>.', "
            "'layers.<i>.', 'h.<i>.' or 'block.<i>.'; pass layer_of=<function mapping a parameter name to "
            f"its depth> (first names: {list(names[:3])})"
        )
    offsets: dict[str, int] = {}  # stack -> depth before its first block
    sizes: dict[str, int] = {}
    for match in filter(None, blocks):
        stack, index = match["stack"], int(match["index"])
        if stack not in offsets:
            offsets[stack] = sum(sizes.values())
        sizes[stack] = max(sizes.get(stack, 0), index + 1)
    last_block = max(i for i, match in enumerate(blocks) if match)
    depths = {}
    depth = 0
    for i, (name, match) in enumerate(zip(names, blocks, strict=True)):
        if match:
            depth = offsets[match["stack"]] + int(match["index"]) + 1
        depths[name] = None if i > last_block else depth
    return depths
