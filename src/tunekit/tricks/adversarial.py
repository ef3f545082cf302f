"""Adversarial training on the input embeddings: FGM (Miyato et al. 2017) and PGD (Madry et al. 2018, in the
form NLP fine-tuning uses). The embedding weight E (V, H) is moved along the gradient of the loss, the batch
is run again, and the adversarial gradients are added to the clean ones::

    FGM:  r = epsilon * g / ||g||_2                             g = dL/dE of the clean loss, (V, H)
    PGD:  r_0 = 0,  r_k = P(r_{k-1} + step_size * g_{k-1} / ||g_{k-1}||_2),  k = 1..K
          P(r) = r * min(1, epsilon / ||r||_2)                  projection onto the epsilon-ball around E
          g_0 = the clean gradient, g_k = the gradient of the loss at E + r_k
    .grad += dL(E + r)/dtheta  (FGM)   or   dL(E + r_K)/dtheta  (PGD; the steps before the last are discarded)

Norms are Frobenius norms per embedding tensor (rows of tokens absent from the batch have g = 0 and are not
moved, except through a tied output layer). The direction g / ||g|| is invariant to a loss scale (AMP), and
under gradient accumulation g is the current micro-batch's gradient only: the embedding's ``.grad`` before the
clean backward is subtracted. A tensor whose gradient is missing, zero or not finite is left where it is.

The embedding is found through ``model.get_input_embeddings()`` (DDP / DataParallel looked through) or by
exact parameter names; nothing is matched by substring. Weights are moved in place and always restored bit
for bit (the same Parameter objects, so optimizer state and DDP stay valid), exceptions included.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from .._checks import check_count, check_non_negative, describe
from .models import unwrap

logger = logging.getLogger(__name__)

GradSnapshot = Mapping[str, Tensor | None]  # name -> .grad copy, from `grad_snapshot`


def find_embedding_parameters(
    model: nn.Module, param_names: str | Iterable[str] | None = None
) -> dict[str, nn.Parameter]:
    """Name -> parameter for the weights to perturb: those of ``unwrap(model).get_input_embeddings()``, or
    exactly the given names (one name or several) of ``unwrap(model).named_parameters()``.

    Raises:
        ValueError: no `param_names` and no usable ``get_input_embeddings``; a name that is not a parameter;
            a parameter that does not require grad (frozen, e.g. under LoRA: it would get no gradient).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {describe(model)}")
    model = unwrap(model)
    named = dict(model.named_parameters())
    if param_names is None:
        embedding = _input_embeddings(model)
        ids = {id(p) for p in embedding.parameters()}
        found = {name: p for name, p in named.items() if id(p) in ids}
        if not found:
            raise ValueError(
                f"{type(model).__name__}.get_input_embeddings() returned a module with no parameter of the "
                "model; pass param_names=[...]"
            )
    else:
        names = [param_names] if isinstance(param_names, str) else list(param_names)
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(f"param_names must be a non-empty list of parameter names, got {param_names!r}")
        found = {}
        for name in names:
            if name not in named:
                close = difflib.get_close_matches(name, list(named), n=3, cutoff=0.5)
                raise ValueError(
                    f"param_names: {name!r} is not a parameter of {type(model).__name__} (names are matched "
                    f"exactly, as in named_parameters() of the unwrapped model); close names: {close}"
                )
            found[name] = named[name]
    for name, param in found.items():
        if not param.requires_grad:
            raise ValueError(
                f"embedding parameter {name!r} does not require grad, so it gets no gradient to attack "
                "along; unfreeze it or choose another parameter"
            )
    return found


class _EmbeddingAttack:
    """What FGM and PGD share: the model, the names of the perturbed weights, and the attack direction."""

    def __init__(self, model: nn.Module, param_names: str | Iterable[str] | None) -> None:
        self.model = model
        # resolved once, looked up by these exact names at every use (a resized embedding is a new module)
        self.param_names: tuple[str, ...] = tuple(find_embedding_parameters(model, param_names))

    def embedding_parameters(self) -> dict[str, nn.Parameter]:
        """Name -> the perturbed parameters, as the model holds them now."""
        return find_embedding_parameters(self.model, self.param_names)

    def grad_snapshot(self) -> dict[str, Tensor | None]:
        """Copies of the perturbed parameters' ``.grad`` (None where there is none). Under gradient
        accumulation take one before the clean backward and pass it to ``perturbed(grads_before=...)``, so
        that the attack follows this micro-batch's gradient alone. Costs one copy of the embedding's grad."""
        params = self.embedding_parameters()
        return {name: None if p.grad is None else p.grad.detach().clone() for name, p in params.items()}


class FGM(_EmbeddingAttack):
    """Fast gradient method: one step of size `epsilon` along the clean gradient, r = epsilon * g / ||g||_2
    per embedding tensor (g and r of the weight's shape, (V, H) for an embedding table).

    Args:
        model: the model (DDP / DataParallel looked through).
        epsilon: the norm of the perturbation, > 0.
        param_names: exact names (as in ``named_parameters()`` of the unwrapped model) of the weights to
            perturb; default the parameters of ``model.get_input_embeddings()``.

    By hand, after the clean backward (the adversarial backward must run inside the block)::

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(8, 1))
        >>> ids = torch.tensor([[1, 2], [3, 4]])
        >>> loss_fn = lambda: model(ids).square().mean()
        >>> fgm = FGM(model, epsilon=0.5, param_names=["0.weight"])
        >>> loss_fn().backward()
        >>> weight = model[0].weight.detach().clone()
        >>> with fgm.perturbed():
        ...     moved = (model[0].weight - weight).norm().item()
        ...     loss_fn().backward()                     # adds the adversarial gradients
        >>> round(moved, 4), torch.equal(model[0].weight, weight)
        (0.5, True)

    or in one call, ``adversarial_loss = fgm.step(loss_fn(), loss_fn)``.
    """

    def __init__(
        self, model: nn.Module, epsilon: float = 1.0, *, param_names: str | Iterable[str] | None = None
    ) -> None:
        self.check_options(epsilon=epsilon)
        super().__init__(model, param_names)
        self.epsilon = epsilon

    @staticmethod
    def check_options(*, epsilon: float = 1.0) -> None:
        """ValueError naming an option the constructor would refuse."""
        check_non_negative("epsilon", epsilon, positive=True)

    def step(
        self, loss: Tensor, closure: Callable[[], Tensor], backward: Callable[[Tensor], object] | None = None
    ) -> Tensor:
        """Backpropagate the clean `loss`, run the batch once more at E + r, backpropagate that too, restore
        the weights: ``.grad`` gains clean + adversarial gradients on top of what it held (earlier
        micro-batches). Returns the adversarial loss, detached.

        Args:
            loss: the clean loss of this micro-batch, not yet backpropagated.
            closure: runs the forward pass on the same batch again and returns the loss (scaled as `loss` is).
            backward: how to backpropagate a loss (``accelerator.backward`` under the Hugging Face Trainer);
                default ``t.backward()``.
        """
        backward = _backward if backward is None else backward
        grads_before = self.grad_snapshot()
        backward(loss)
        with self.perturbed(grads_before):
            adversarial = _adversarial_loss(closure)
            backward(adversarial)
        return adversarial.detach()

    @contextlib.contextmanager
    def perturbed(self, grads_before: GradSnapshot | None = None) -> Iterator[tuple[str, ...]]:
        """Add r = epsilon * g / ||g|| to each embedding weight, g its ``.grad`` (minus `grads_before`, a
        `grad_snapshot` taken before the clean backward); restore the weights on exit, exceptions included.
        Yields the names of the weights moved (those with a usable gradient)."""
        backup: dict[str, tuple[nn.Parameter, Tensor]] = {}
        try:
            with torch.no_grad():
                for name, param in self.embedding_parameters().items():
                    direction = _direction(name, param, grads_before)
                    if direction is None:
                        continue
                    grad, norm = direction
                    backup[name] = (param, param.detach().clone())
                    param.add_(grad, alpha=self.epsilon / norm)  # fused: no (V, H) temporary for r
            yield tuple(backup)
        finally:
            _restore_weights(backup)


class PGD(_EmbeddingAttack):
    """Projected gradient descent (ascent on the loss): K steps of size `step_size` along the normalised
    gradient, each projected onto the ball ||r||_2 <= epsilon around the original weight (per embedding
    tensor; r of the weight's shape). Every step runs forward and backward; only the last step's gradients
    are kept::

        back up all .grad (clean + earlier micro-batches)
        for k in 1..K:  r = P(r + step_size * g / ||g||)
                        zero all .grad (k < K) or restore the backup (k = K)
                        forward + backward at E + r
        restore E                                       # .grad = backup + gradients at E + r_K

    Memory: the gradient backup is one copy of every ``.grad``, r one fp32 copy of the embedding.

    Args:
        model: the model (DDP / DataParallel looked through).
        epsilon: the radius of the ball, > 0.
        step_size: the size of each step, > 0.
        steps: K >= 1, the number of adversarial forward and backward passes.
        param_names: exact names (as in ``named_parameters()`` of the unwrapped model) of the weights to
            perturb; default the parameters of ``model.get_input_embeddings()``.

    By hand, after the clean backward, iterate the yielded steps and backpropagate in each::

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(8, 1))
        >>> ids = torch.tensor([[1, 2], [3, 4]])
        >>> loss_fn = lambda: model(ids).square().mean()
        >>> pgd = PGD(model, epsilon=0.5, step_size=0.3, steps=3, param_names=["0.weight"])
        >>> loss_fn().backward()
        >>> weight = model[0].weight.detach().clone()
        >>> with pgd.perturbed() as steps:
        ...     for k in steps:                             # k = 0, 1, 2: the weight is at E + r_(k+1)
        ...         moved = (model[0].weight - weight).norm().item()
        ...         loss_fn().backward()
        >>> round(moved, 4), torch.equal(model[0].weight, weight)
        (0.5, True)

    or in one call, ``adversarial_loss = pgd.step(loss_fn(), loss_fn)``.
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float = 1.0,
        step_size: float = 0.3,
        steps: int = 3,
        *,
        param_names: str | Iterable[str] | None = None,
    ) -> None:
        self.check_options(epsilon=epsilon, step_size=step_size, steps=steps)
        super().__init__(model, param_names)
        self.epsilon = epsilon
        self.step_size = step_size
        self.steps = steps

    @staticmethod
    def check_options(*, epsilon: float = 1.0, step_size: float = 0.3, steps: int = 3) -> None:
        """ValueError naming the first option the constructor would refuse."""
        check_non_negative("epsilon", epsilon, positive=True)
        check_non_negative("step_size", step_size, positive=True)
        check_count("steps", steps, minimum=1)

    def step(
        self, loss: Tensor, closure: Callable[[], Tensor], backward: Callable[[Tensor], object] | None = None
    ) -> Tensor:
        """As `FGM.step`, with K adversarial forward and backward passes: ``.grad`` gains the clean gradients
        and those at E + r_K. Returns the last adversarial loss, detached."""
        backward = _backward if backward is None else backward
        grads_before = self.grad_snapshot()
        backward(loss)
        with self.perturbed(grads_before) as steps:
            for _ in steps:
                adversarial = _adversarial_loss(closure)
                backward(adversarial)
        return adversarial.detach()

    @contextlib.contextmanager
    def perturbed(self, grads_before: GradSnapshot | None = None) -> Iterator[Iterator[int]]:
        """Back up every parameter's ``.grad`` and yield an iterator over the K steps: before yielding step
        k it moves the weights to E + r_(k+1) and zeroes the gradients (k < K - 1) or restores the backup
        (k = K - 1); run forward and backward in each step. On exit the weights are restored, and unless all
        K steps ran to the end without an exception (or a ``break``) the gradients too. Do not zero the
        gradients inside the loop: the iterator does, and restores them for the last step. `grads_before`:
        as in `FGM.perturbed`."""
        params = self.embedding_parameters()
        trainable = [p for p in unwrap(self.model).parameters() if p.requires_grad]
        grad_backup = [(p, None if p.grad is None else p.grad.detach().clone()) for p in trainable]
        origins: dict[str, tuple[nn.Parameter, Tensor]] = {}
        deltas: dict[str, Tensor] = {}  # r per weight, in fp32 at least: small steps survive in bf16
        finished = False

        def attack() -> Iterator[int]:
            nonlocal finished
            for k in range(self.steps):
                with torch.no_grad():
                    for name, param in params.items():
                        self._move(name, param, grads_before if k == 0 else None, origins, deltas)
                    if k < self.steps - 1:
                        _zero_grads(trainable)
                    else:
                        _load_grads(grad_backup)
                yield k
            finished = True

        completed = False
        try:
            yield attack()
            completed = finished
        finally:
            _restore_weights(origins)
            if not completed:  # an aborted attack leaves no partial adversarial gradients behind
                _load_grads(grad_backup)

    def _move(
        self,
        name: str,
        param: nn.Parameter,
        grads_before: GradSnapshot | None,
        origins: dict[str, tuple[nn.Parameter, Tensor]],
        deltas: dict[str, Tensor],
    ) -> None:
        """r = P(r + step_size * g / ||g||) and param = origin + r; no move without a usable gradient."""
        direction = _direction(name, param, grads_before)
        if direction is None:
            return
        grad, norm = direction
        if name not in origins:
            origins[name] = (param, param.detach().clone())
            deltas[name] = torch.zeros_like(param, dtype=torch.promote_types(param.dtype, torch.float32))
        delta = deltas[name]
        delta.add_(grad, alpha=self.step_size / norm)
        radius = torch.linalg.vector_norm(delta).item()
        if radius > self.epsilon:
            delta.mul_(self.epsilon / radius)
        param.copy_(origins[name][1]).add_(delta)


def _direction(name: str, param: Tensor, grads_before: GradSnapshot | None) -> tuple[Tensor, float] | None:
    """(g, ||g||_2) for `param`'s current gradient minus its snapshot, or None when there is no gradient or
    its norm is zero or not finite (skipped: a NaN direction would poison the weights)."""
    grad = param.grad
    if grad is None:
        return None
    before = None if grads_before is None else grads_before.get(name)
    if before is not None:
        grad = grad - before
    if grad.layout != torch.strided:  # nn.Embedding(sparse=True)
        grad = grad.to_dense()
    # in fp32: the norm of an fp16 gradient overflows above 65504 (a loss-scaled one easily does). One host
    # sync per tensor and step, to skip in Python: cheap next to the forward pass that follows.
    norm = torch.linalg.vector_norm(grad, dtype=torch.float32).item()
    if not 0.0 < norm < float("inf"):  # also False for NaN
        logger.debug("%s: gradient norm %s, not perturbed", name, norm)
        return None
    return grad, norm


def _restore_weights(backup: Mapping[str, tuple[nn.Parameter, Tensor]]) -> None:
    with torch.no_grad():
        for param, saved in backup.values():
            param.copy_(saved)


def _zero_grads(params: list[nn.Parameter]) -> None:
    """Zero in place (keeps the grad tensors, e.g. DDP's bucket views); sparse gradients are dropped."""
    for param in params:
        if param.grad is not None and param.grad.layout != torch.strided:
            param.grad = None
    dense = [p.grad for p in params if p.grad is not None]
    if dense:
        torch._foreach_zero_(dense)


def _load_grads(backup: list[tuple[nn.Parameter, Tensor | None]]) -> None:
    """Put the backed-up gradients back, in place where the current grad tensor can hold them."""
    for param, saved in backup:
        current = param.grad
        if saved is None:
            param.grad = None
        elif (
            current is not None
            and current.layout == saved.layout == torch.strided
            and current.shape == saved.shape
            and current.dtype == saved.dtype
        ):
            current.copy_(saved)
        else:  # a copy: backward accumulates into .grad in place, and the backup may be needed again
            param.grad = saved.clone()


def _input_embeddings(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    embedding = None
    if callable(get):
        with contextlib.suppress(NotImplementedError):  # transformers' default for unknown layouts
            embedding = get()
    if not isinstance(embedding, nn.Module):
        raise ValueError(
            f"cannot find the input embedding of {type(model).__name__}: it has no get_input_embeddings() "
            "returning a module; pass param_names=[<exact name from named_parameters()>] "
            f"(first names: {[name for name, _ in model.named_parameters()][:5]})"
        )
    return embedding


def _adversarial_loss(closure: Callable[[], Tensor]) -> Tensor:
    loss = closure()
    if not isinstance(loss, Tensor):
        raise ValueError(f"closure must return the adversarial loss as a tensor, got {describe(loss)}")
    return loss


def _backward(loss: Tensor) -> None:
    loss.backward()
