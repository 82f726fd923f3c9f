"""Registries of model parts by name (timm's register_model / create_model, in small)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Maps names to constructors of one kind of part ("image encoder", "fusion", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that adds a constructor under name."""

        def add(builder: F) -> F:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def create(self, name: str, **kwargs: Any) -> Any:
        """Builds the part called name.

        Raises:
            ValueError: name is not registered (the message lists what is), or the
                keyword arguments do not fit the part.
        """
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {self.names()}")
        try:
            return self._builders[name](**kwargs)
        except TypeError as e:
            raise ValueError(f"{self.kind} {name!r} does not accept {sorted(kwargs)}: {e}") from e

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders


IMAGE_ENCODERS = Registry("image encoder")
AUDIO_ENCODERS = Registry("audio encoder")
TEXT_ENCODERS = Registry("text encoder")
ENCODERS = {"image": IMAGE_ENCODERS, "audio": AUDIO_ENCODERS, "text": TEXT_ENCODERS}
FUSIONS = Registry("fusion")
HEADS = Registry("head")
