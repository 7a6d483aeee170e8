"""Forward hooks on the DiT blocks: the one place that finds the blocks, registers hooks on them
(always removed, even on error) and reads or replaces a block's video tokens.

Used by the capture (`capture.Recorder`) and the probes. Block outputs differ by family: Wan blocks
return a (1, N, D) tensor, LTX-2.3 blocks a (video, audio) pair of ``TransformerArgs`` whose ``x``
holds the tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from stepscope.errors import StepScopeError

BlockHook = Callable[[torch.nn.Module, Any, Any], Any]


def check_hookable(dit: torch.nn.Module, block_list_name: str) -> None:
    """Refuse models whose compiled graphs would bypass Python forward hooks."""
    blocks = getattr(dit, block_list_name, None)
    if blocks is None:
        raise StepScopeError(f"{type(dit).__name__} has no `{block_list_name}`: cannot capture its blocks")
    compiled = [
        module
        for module in [dit, *blocks]
        if getattr(module, "_compiled_call_impl", None) is not None
        or type(module).__name__ == "OptimizedModule"
    ]
    if compiled:
        raise StepScopeError(
            "the DiT (or its blocks) is torch.compile'd: compiled graphs ignore hooks registered afterwards, "
            "so captures would be silently missing. Load the pipeline without compile_pipeline() to capture."
        )


def dit_blocks(dits: dict[str, torch.nn.Module], block_list_name: str) -> dict[str, Any]:
    """{expert: block list} of every DiT, refusing compiled models (hooks would not fire)."""
    blocks = {}
    for expert, dit in dits.items():
        check_hookable(dit, block_list_name)
        blocks[expert] = getattr(dit, block_list_name)
    return blocks


def pipe_blocks(pipe, adapter) -> dict[str, Any]:
    """{expert: block list} of a pipeline's DiTs (see `dit_blocks`)."""
    return dit_blocks(adapter.dit_modules(pipe), adapter.block_list_name)


def num_blocks(pipe, adapter) -> int:
    """Blocks every DiT of the pipeline has (the fewest, where experts differ)."""
    return min(len(blocks) for blocks in pipe_blocks(pipe, adapter).values())


def block_hooks(
    blocks: dict[str, Any], layers: Iterable[int], make_hook: Callable[[int, str], BlockHook]
) -> list[tuple[torch.nn.Module, BlockHook]]:
    """(block, `make_hook(layer, expert)`) for every listed layer of every DiT, checking the layers exist."""
    pairs = []
    for expert, listed in blocks.items():
        for layer in layers:
            if layer >= len(listed) or layer < -len(listed):
                raise StepScopeError(
                    f"layer {layer} does not exist: the {expert} DiT has {len(listed)} blocks (0-{len(listed) - 1})"
                )
            pairs.append((listed[layer], make_hook(layer, expert)))
    return pairs


@contextmanager
def forward_hooks(pairs: Iterable[tuple[torch.nn.Module, BlockHook]]) -> Iterator[None]:
    """Register each (module, hook) as a forward hook for the duration of the block; always removed."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def block_tokens(output: Any) -> torch.Tensor:
    """The (N, D) video tokens of a block output (Wan: a (1, N, D) tensor; LTX: (video, audio) args)."""
    hidden = output[0] if isinstance(output, tuple) else output
    hidden = getattr(hidden, "x", hidden)
    return hidden[0] if hidden.dim() == 3 else hidden


def replace_block_tokens(output: Any, tokens: torch.Tensor) -> Any:
    """The block output with its video tokens replaced (same structure, device and dtype)."""
    if isinstance(output, tuple):
        return (replace_block_tokens(output[0], tokens), *output[1:])
    if hasattr(output, "x") and dataclasses.is_dataclass(output):
        return dataclasses.replace(output, x=replace_block_tokens(output.x, tokens))
    if tokens.numel() != output.numel():
        raise StepScopeError(
            f"cannot swap tokens: the source block output has {tuple(tokens.shape)} but the target has "
            f"{tuple(output.shape)}; source and target must share resolution and frame count"
        )
    return tokens.reshape(output.shape).to(device=output.device, dtype=output.dtype)
