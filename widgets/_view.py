"""What every widget that watches trainers shares: subscriptions that hold the view
weakly, `close()` that detaches it, a redraw clock, and errors shown in the view.

A view subscribes through `watch`: the trainer holds only a small forwarder that
reaches the view through a weak reference, so a closed or garbage-collected view
costs the trainer nothing. Displaying a new view of the same kind for the same
trainers retires the older one (it stops updating and says why), so re-running a
cell never multiplies the work.
"""

from __future__ import annotations

import html
import threading
import time
import weakref

from lmlab.errors import LmlabError

REFRESH_S = 0.25  # at most four redraws a second
_current: dict = {}  # (view class, trainer ids) -> weak reference to the newest view


class TrainerView:
    """Mixin for an ipywidgets container. Subclasses implement `_draw()` and
    `_show(message, kind)`, and call `_watch(...)` for each trainer event they use."""

    refresh = REFRESH_S

    def _init_view(self, trainers, refresh: float = REFRESH_S):
        self.refresh = refresh
        self._subscriptions = []
        self._last_draw = 0.0
        self._draw_lock = threading.Lock()
        self.closed = False
        if not trainers:  # a view of no trainer costs no training time: never retired
            return
        key = (type(self).__name__, tuple(sorted(id(t) for t in trainers)))
        older = _current.get(key)
        older = older() if older is not None else None
        if older is not None and older is not self:
            older.retire("a newer view of this trainer was displayed (the cell ran again); "
                         "this one no longer updates")
        _current[key] = weakref.ref(self)

    def _watch(self, trainer, event: str, method: str) -> None:
        """Call `self.<method>(trainer, payload)` on the trainer's `event`, guarded: an
        exception is shown in this view and training goes on."""
        ref = weakref.ref(self)
        holder = []

        def forward(tr, payload):
            view = ref()
            if view is None or view.closed:
                holder[0].remove()
                return
            try:
                getattr(view, method)(tr, payload)
            except Exception as e:  # shown in the view, never raised into training
                view._show(f"this view failed to update on a {event} event: {type(e).__name__}: "
                           f"{e}. Training goes on.", "view-error")
                raise

        forward.__qualname__ = f"{type(self).__name__}.{method}"
        holder.append(trainer.on(event, forward))
        self._subscriptions.append(holder[0])

    def _unwatch(self) -> None:
        subscriptions = getattr(self, "_subscriptions", [])  # none if __init__ failed early
        for sub in subscriptions:
            sub.remove()
        subscriptions.clear()

    def retire(self, why: str) -> None:
        """Stop updating (another view took over); the widget stays on screen."""
        self._unwatch()
        self._show(why, "notice")
        for child in self._controls():
            child.disabled = True

    def _controls(self) -> list:
        return []

    def close(self):
        """Detach from the trainers and close the widget and the widgets inside it."""
        self.closed = True
        self._unwatch()
        stack = list(getattr(self, "children", ()))
        while stack:
            child = stack.pop()
            stack.extend(getattr(child, "children", ()))
            child.close()
        super().close()

    def _tick(self, *_):
        """On a trainer event: redraw if the last redraw is older than `refresh`."""
        if time.monotonic() - self._last_draw >= self.refresh:
            self.redraw()

    def redraw(self, force: bool = False) -> None:
        """Bring the view up to date (`_draw`). Without `force`, skipped while another
        thread is drawing."""
        if not self._draw_lock.acquire(blocking=force):
            return
        try:
            self._last_draw = time.monotonic()
            self._draw()
        finally:
            self._draw_lock.release()

    def _draw(self) -> None:
        raise NotImplementedError

    def guarded(self, handler):
        """A UI handler whose error is shown in this view, never raised."""
        def run(*args):
            try:
                handler(*args)
            except Exception as e:  # the widget must stay usable
                self.show_error(e)
        return run

    def show_error(self, error) -> None:
        if isinstance(error, (str, LmlabError)):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
        self._show(message, "error")

    def _show(self, message: str, kind: str) -> None:
        raise NotImplementedError


def message_html(message: str, kind: str) -> str:
    """A status line: kinds 'error' and 'view-error' in red, 'notice' in grey-blue."""
    if not message:
        return ""
    colour = "#345" if kind == "notice" else "#c00"
    return (f'<div class="lmlab-message lmlab-{kind}" style="color:{colour};white-space:pre-wrap">'
            f'{html.escape(message, quote=False)}</div>')
