"""A generation cache for recurrent architectures: named, batch-first state tensors per layer.

Transformers' `DynamicCache` is shaped around growing key/value tensors; a recurrent model's N x D
synaptic state has no proper home there (its recurrent-state getters return None until a conv state is
written, which silently resets the model every step). This cache stores any tensors a model needs,
keyed by (layer, name), each with the batch on dim 0, so beam search and batch selection are a single
`index_select` over all of them, whatever the architecture keeps (a Hebbian state, an SSM state,
a conv window, or a growing key/value tensor).

This file is copied next to every exported model, so it imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class RecurrentStateCache(Cache):
    """Holds per-layer recurrent state for `generate`, with the hooks beam search and batching call."""

    def __init__(self):
        super().__init__(layers=[])
        self.states: dict[tuple[int, str], torch.Tensor] = {}
        self.seen_tokens = 0  # tokens consumed per row, padding included (what `generate` slices by)

    def __repr__(self) -> str:
        names = sorted({name for _, name in self.states})
        return f"{type(self).__name__}(seen_tokens={self.seen_tokens}, states={names})"

    def __len__(self) -> int:
        return len({layer for layer, _ in self.states})

    def get(self, layer_idx: int, name: str) -> torch.Tensor | None:
        return self.states.get((layer_idx, name))

    def set(self, layer_idx: int, name: str, value: torch.Tensor) -> None:
        self.states[(layer_idx, name)] = value

    def append(self, layer_idx: int, name: str, value: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Concatenate `value` to the stored tensor along `dim` (time) and return the whole: a growing
        key/value cache for softmax attention, kept beside any recurrent state."""
        old = self.states.get((layer_idx, name))
        self.states[(layer_idx, name)] = value if old is None else torch.cat([old, value], dim=dim)
        return self.states[(layer_idx, name)]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # recurrent state has no length limit

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False  # a recurrent state cannot forget its last tokens

    @property
    def is_initialized(self) -> bool:
        return bool(self.states)

    @property
    def batch_size(self) -> int:
        return next(iter(self.states.values())).shape[0] if self.states else 0

    def _map(self, fn) -> None:
        self.states = {key: fn(value) for key, value in self.states.items()}

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row i of the new state is row beam_idx[i] of the old one."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        self.states.clear()
        self.seen_tokens = 0

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a recurrent state cannot be cropped; re-run the prompt instead")
