"""A tiny name -> object registry filled by a decorator; one instance per kind
(chunkers, readers, retrieval methods)."""

from __future__ import annotations

from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects; an unknown name is an error listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None

    def parse_names(self, value: str | Iterable[str]) -> list[str]:
        """'a,b' (or a list) -> ['a', 'b']: stripped, deduplicated, each one known."""
        items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
        items = [s for s in items if s]
        if not items:
            raise ValueError(f"no {self.kind} given; known: {', '.join(self.names())}")
        for name in items:
            self.get(name)
        return list(dict.fromkeys(items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
