"""What every view shares (`View`), whether it watches trainers or not: subscriptions
that hold the view weakly, `close()` that detaches it, a redraw clock, and errors shown
in the view.

A view subscribes through `watch`: the trainer holds only a small forwarder that
reaches the view through a weak reference, so a closed or garbage-collected view
costs the trainer nothing. Displaying a new view of the same kind for the same
trainers retires the older one (it stops updating and says why), so re-running a
cell never multiplies the work.

Every view's output also carries a static snapshot (`text/html`, from `_static_html`)
beside the live widget, so a notebook shows its views where widgets do not run:
nbconvert's HTML, nbviewer, an untrusted notebook in JupyterLab. The snapshot is made
when the view is displayed; `refresh_snapshot` replaces it later (the dashboard and the
run comparison do at the end of each run: JupyterLab then draws the live widget anew,
so views that are looked into, such as the explorer, keep their first snapshot), and
`close` leaves the last snapshot in place of the widget.
"""

from __future__ import annotations

import html
import re
import threading
import time
import uuid
import weakref

from lmlab.adapt import token_ids
from lmlab.errors import LmlabError

REFRESH_S = 0.25  # at most four redraws a second
_current: dict = {}  # (view class, trainer ids) -> weak reference to the newest view
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class View:
    """Mixin for every lmlab view (an ipywidgets container), with or without trainers to
    watch. Subclasses implement `_draw()`, `_show(message, kind)` and `_static_html()`, and
    call `_watch(...)` for each trainer event they use."""

    refresh = REFRESH_S
    shown_step: int | None = None  # the training step a `TimelineView` shows here (None: now)
    _display_id = None  # set when displayed in IPython: the outputs `refresh_snapshot` replaces

    def _init_view(self, trainers, refresh: float = REFRESH_S, key=None, subject: str | None = None):
        """`key`: what this view shows, when not its trainers (e.g. the file it writes to),
        named `subject` in the notice: the older view of the same class and key is retired."""
        self.refresh = refresh
        self._subscriptions = []
        self._last_draw = 0.0
        self._draw_lock = threading.Lock()
        self.closed = False
        if not trainers and key is None:  # a view of no trainer costs no training time: never retired
            return
        key = (type(self).__name__, key if key is not None else tuple(sorted(id(t) for t in trainers)))
        older = _current.get(key)
        older = older() if older is not None else None
        if older is not None and older is not self:
            older.retire(f"a newer view {'of this trainer' if subject is None else subject} was "
                         "displayed (the cell ran again); this one no longer updates")
        _current[key] = weakref.ref(self)

    def _follow(self, trainer, every: int) -> None:
        """Read the model again (`self.update()`) every `every` steps of `trainer` (0:
        never) and whenever it is reset to new weights."""
        self.every = every
        self._watch(trainer, "step", "_update_every")
        self._watch(trainer, "reset", "_update_on_reset")

    def show_step(self, trainer, model, step: int | None) -> None:
        """Show `model`, `trainer`'s weights at training step `step` (None: its model as it
        is now, live), and redraw: what a `TimelineView` calls on the views it links. This
        default is for views that read `self.model` in `update()`."""
        self.model, self.shown_step = model, step
        self.update()

    def _update_every(self, trainer, row) -> None:
        if self.every and trainer.step_count % self.every == 0:
            self.update()

    def _update_on_reset(self, trainer, _) -> None:
        self.update()

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
        """Detach from the trainers and close the widget and the widgets inside it; where
        it was displayed, its last snapshot stays in its place."""
        if not getattr(self, "closed", True):
            self.closed = True
            try:
                self.refresh_snapshot()
            except Exception:  # closing must work whatever the display machinery does (exit, GC)
                pass
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

    # ---- the static snapshot --------------------------------------------------------------

    def _static_html(self) -> str:
        """What the view shows now as HTML that needs no JavaScript and loads nothing."""
        raise NotImplementedError

    def _snapshot(self) -> str:
        try:
            body = self._static_html()
        except Exception as e:  # a broken snapshot must not stop the live view from displaying
            body = message_html(f"no static snapshot of this view: {type(e).__name__}: {e}", "error")
        return f'<div class="lmlab-static {type(self).__name__}">{body}</div>'

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """ipywidgets' bundle (the live widget, and text/plain) plus a `text/html`
        snapshot of the view."""
        # Renderers pick one type. JupyterLab ranks the widget (-10) above HTML (50) in a
        # trusted notebook; untrusted, it shows only "safe" types: the HTML, sanitized (no
        # SVG, no data: images). nbconvert's HTML exporter skips the widget when its
        # model_id is not in the notebook's saved widget state (WidgetsDataTypeFilter), and
        # then takes the HTML; but `nbconvert --execute` (nbclient) saves widget state unless
        # --ExecutePreprocessor.store_widget_state=False, and with it the export shows the
        # widget, drawn by JavaScript from a CDN (unpkg), and none of this snapshot.
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/html"] = self._snapshot()
        return bundle

    def _bundle(self) -> dict:
        if getattr(self, "closed", False):
            return {"text/plain": f"<{type(self).__name__}, closed>", "text/html": self._snapshot()}
        return self._repr_mimebundle_()

    def _ipython_display_(self) -> None:
        """Display the bundle under a display id of this view, so that its snapshot can
        be replaced later (`refresh_snapshot`)."""
        from IPython.display import display

        if self._display_id is None:
            self._display_id = f"lmlab-{uuid.uuid4().hex}"
        display(self._bundle(), raw=True, display_id=self._display_id)

    def refresh_snapshot(self) -> None:
        """Replace the snapshot in the outputs where this view was displayed by one of the
        view as it is now; a closed view's outputs become the snapshot alone. JupyterLab
        draws the live widget again from its state (a view-only zoom is lost), so this
        runs at the end of a run, never on every redraw."""
        if self._display_id is None:
            return
        from IPython.display import update_display

        update_display(self._bundle(), raw=True, display_id=self._display_id)

    def _read_text(self, text: str | None, model=None) -> list[int] | None:
        """For views of a text in `self.text_box`: its token ids for `model` (default
        `self.model`) with `self.tokenizer`; None when there is nothing to draw: `text` was
        put in the box (whose observer comes back to update) or the text is bad (shown in
        the view, the last good view stays)."""
        if text is not None and text != self.text_box.value:
            self.text_box.value = text  # observed: comes back here
            return None
        try:
            return token_ids(model or self.model, self.text_box.value, self.tokenizer)
        except Exception as e:
            self.show_error(e)
            return None

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


def model_and_tokenizer(view: str, model, tokenizer, trainer):
    """The model and tokenizer a view of a text reads: those given, else the trainer's.
    Neither and no trainer is a TypeError naming the two ways to build `view`."""
    if trainer is not None:
        model = trainer.model if model is None else model
        tokenizer = tokenizer or trainer.dataset.tokenizer
    if model is None or tokenizer is None:
        raise TypeError(f"{view}(model, tokenizer, text) or {view}(trainer=trainer, text=text)")
    return model, tokenizer


def message_html(message: str, kind: str) -> str:
    """A status line: kinds 'error' and 'view-error' in red, 'notice' in grey-blue."""
    if not message:
        return ""
    colour = "#345" if kind == "notice" else "#c00"
    return (f'<div class="lmlab-message lmlab-{kind}" style="color:{colour};white-space:pre-wrap">'
            f'{html.escape(message, quote=False)}</div>')


def in_words(message: str, words: dict[str, str]) -> str:
    """The engine's `message` with its setting names said as a view labels them:
    `learning_rate=0.5` becomes `learning rate 0.5`, `batch_size` becomes `batch size`. A
    name without an underscore (`every`) is an English word too: only `every=` is said."""
    for name, label in words.items():
        message = re.sub(rf"\b{name}=", f"{label} ", message)
        if "_" in name:
            message = re.sub(rf"\b{name}\b", label, message)
    return message
