"""A KV-cache layer (a transformers `DynamicLayer` subclass) that writes into preallocated
room instead of concatenating at every step, and the cache built from it."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _roomy_layer_class():
    """DynamicLayer subclass that writes into preallocated room (built on first use)."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self, room: int) -> None:
            super().__init__()
            self.room = room
            self.length = 0
            self._k = self._v = None

        def _fit(self, buf, new, end: int):
            if buf is not None and end <= buf.shape[-2]:
                return buf
            grown = new.new_empty((*new.shape[:2], end + self.room, new.shape[-1]))
            if buf is not None:
                grown[:, :, : self.length] = buf[:, :, : self.length]
            return grown

        def _views(self) -> None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def seed(self, keys, values, batch: int, tokens_to_come: int) -> None:
            """Start `batch` rows from a shared prefix's keys/values ([1, H, p, D])."""
            self.lazy_initialization(keys, values)
            self.length = keys.shape[-2]
            size = self.length + tokens_to_come + self.room
            self._k = keys.new_empty((batch, keys.shape[1], size, keys.shape[-1]))
            self._v = values.new_empty((batch, values.shape[1], size, values.shape[-1]))
            self._k[:, :, : self.length] = keys
            self._v[:, :, : self.length] = values
            self._views()

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self._k = self._fit(self._k, key_states, end)
            self._v = self._fit(self._v, value_states, end)
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def reset(self) -> None:
            self.length = 0
            self._k = self._v = None
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.is_initialized:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.length:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.length:
                self._k = self._k[indices]
                self._v = self._v[indices]
                self._views()

        def reorder_cache(self, beam_idx) -> None:
            self.batch_select_indices(beam_idx.to(self._k.device))

    return RoomyLayer


def _roomy_cache(model: Any, room: int):
    """A DynamicCache whose full-attention layers write into preallocated room.

    The stock DynamicLayer concatenates each new key/value onto the whole cache, copying
    it at every step (for 64 rows of 400-token prompts, about a gigabyte per step on the
    embedded model). This layer allocates the prompt plus `room` slots once and writes in
    place; attention reads a view of the filled part. Sliding-window and other special
    layers keep their own classes.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    roomy = _roomy_layer_class()
    cache = DynamicCache(config=model.config)
    cache.layers = [roomy(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
