"""Name -> implementation tables filled by a decorator (encoders, mask sources, camera plans).

One small class so every stage extends the same way: decorate a class or function with
``@TABLE.register("name")`` and it becomes selectable by that name (open_clip's model registry,
not if-chains). Lookups and their error messages stay with each stage.
"""
from __future__ import annotations

from typing import Any


class Registry(dict):
    """A dict of name -> implementation; ``attr`` also records the name on the implementation."""

    def __init__(self, attr: str | None = None):
        super().__init__()
        self.attr = attr

    def register(self, name: str):
        def deco(obj: Any):
            self[name] = obj
            if self.attr:
                setattr(obj, self.attr, name)
            return obj
        return deco

    def names(self) -> list[str]:
        return sorted(self)
