"""Name -> class registries with loud lookups (timm style), shared by models and encoders.

A registry is filled by a class decorator (`@REGISTRY.register`) in the module defining the
class; the modules of the built-in entries are imported on the first lookup, so `import mmrec`
stays light and a new model or encoder needs no edit anywhere else. An unknown name raises the
registry's error type with the available names and the closest matches ("Did you mean ...?").
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from mmrec.errors import MMRecError

C = TypeVar("C", bound=type)
R = TypeVar("R", bound=type)


class Registry(Generic[C]):
    """Classes by their `name` attribute.

    Args:
        kind: what is registered ("model", "encoder"), for messages.
        builtin_modules: modules whose import registers the built-in entries.
        error: the exception family of the lookups (ModelError, ConfigError, ...).
        optional_builtins: a built-in module that does not exist (a checkout without it) is
            skipped; a module that exists but misses a dependency still raises.
    """

    def __init__(
        self, kind: str, builtin_modules: Iterable[str], error: type[MMRecError], optional_builtins: bool = False
    ) -> None:
        self.kind = kind
        self.builtin_modules = tuple(builtin_modules)
        self.error = error
        self.optional_builtins = optional_builtins
        self._classes: dict[str, C] = {}
        self._loaded = False

    def register(self, cls: R) -> R:
        """Class decorator: make `cls` available under `cls.name`; a second class with that name is an error."""
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes and self._classes[name] is not cls:
            raise self.error(
                f"{self.kind} name {name!r} is registered twice ({self._classes[name].__module__} and {cls.__module__})"
            )
        self._classes[name] = cls  # type: ignore[assignment]  # R is a subclass of what C stands for
        return cls

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        for mod in self.builtin_modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if not self.optional_builtins or exc.name != mod:  # a real missing dependency
                    raise
        self._loaded = True

    def classes(self) -> dict[str, C]:
        """Every registered class by name (built-ins loaded)."""
        self._load_builtins()
        return dict(self._classes)

    def names(self, where: Callable[[C], bool] | None = None) -> list[str]:
        """Registered names, sorted; optionally only those whose class passes `where`."""
        return sorted(n for n, c in self.classes().items() if where is None or where(c))

    def get(self, name: str, listing: Callable[[], str] | None = None) -> C:
        """The class registered as `name`.

        Raises:
            the registry's error: unknown name, with the closest matches and `listing()` (default:
            every registered name).
        """
        classes = self.classes()
        if name not in classes:
            hint = difflib.get_close_matches(name, classes, n=3, cutoff=0.5)
            did_you_mean = f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
            raise self.error(
                f"unknown {self.kind} {name!r}.{did_you_mean} Available {self.kind}s: {listing() if listing else ', '.join(sorted(classes))}"
            )
        return classes[name]
