"""A trainer's events and their observers: `on(event, fn)` calls `fn(trainer, payload)`;
an observer that raises is noted in the trainer's warnings and never stops training."""

from __future__ import annotations

from .errors import ConfigError

EVENTS = ("step", "eval", "sample", "end", "error", "reset", "config")


class Subscription:
    """What `Trainer.on` returns: `remove()` unsubscribes (idempotent)."""

    def __init__(self, events: Events, event: str, fn):
        self.events, self.event, self.fn = events, event, fn

    @property
    def active(self) -> bool:
        return self.fn in self.events.observers(self.event)

    def remove(self) -> None:
        self.events.off(self.event, self.fn)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"<Subscription {self.event} -> {name}{'' if self.active else ' (removed)'}>"


class Events:
    """The observers of `owner`'s EVENTS. `warn(message)` keeps what an observer raised."""

    def __init__(self, owner, warn):
        self.owner, self.warn = owner, warn
        self._observers: dict[str, list] = {e: [] for e in EVENTS}

    def on(self, event: str, fn) -> Subscription:
        if event not in EVENTS:
            raise ConfigError(f"unknown event {event!r}; choose one of {list(EVENTS)}")
        self._observers[event].append(fn)
        return Subscription(self, event, fn)

    def off(self, event: str, fn) -> None:
        if fn in self._observers.get(event, ()):
            self._observers[event].remove(fn)

    def observers(self, event: str) -> list:
        return list(self._observers[event])

    def count(self) -> int:
        return sum(len(fns) for fns in self._observers.values())

    def emit(self, event: str, payload) -> None:
        for fn in self.observers(event):
            try:
                fn(self.owner, payload)
            except Exception as e:  # an observer never stops training
                name = getattr(fn, "__qualname__", None) or repr(fn)
                self.warn(f"the {event} observer {name} raised {type(e).__name__}: {e}")
