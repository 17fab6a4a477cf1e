"""The destination an author writes, and the rules that turn what its methods
return or raise into what the host understands. Nothing here needs the
WebAssembly runtime, so the same rules run under `bizon-plugin test`."""

import traceback

from . import _errors
from .batch import Batch

__all__ = ["Destination", "Retryable", "Rejected", "Outcome", "Runner", "find_destination"]


class Retryable(Exception):
    """A passing failure (timeout, busy server): the host retries the whole
    batch with backoff, keeping its `sequence`. `after`: what the server
    asked to wait (seconds, or a Retry-After header's value); the SDK waits
    that long (at most 10 s) before handing the batch back."""

    def __init__(self, message="Retryable", after=None):
        super().__init__(message)
        self.after = after


class Rejected(Exception):
    """These rows were refused and the others written. `rows` is a dict
    {row index: reason} or a list of (row index, reason); a bare list of
    indexes uses `reason` for each."""

    def __init__(self, rows, reason="rejected"):
        if isinstance(rows, dict):
            pairs = list(rows.items())
        else:
            pairs = [r if isinstance(r, tuple) else (r, reason) for r in rows]
        self.rows = [(int(row), str(why)) for row, why in pairs]
        super().__init__(f"{len(self.rows)} row(s) rejected")


class Destination:
    """Subclass this, once per module. Bizon's shape: `check_connection()`,
    `write_records(batch)`, `finalize()`, plus `open(config)` for the
    pipeline's `plugin_config`.

    Class attributes: `name` (shown in the host's logs; defaults to the class
    name), `version`.
    """

    name = None
    version = "0.1.0"

    def open(self, config):
        """Called once per instance with `plugin_config` (a dict) before any
        other method. Raise to stop the pipeline."""
        self.config = config

    def check_connection(self):
        """Can the destination write? Return False or raise to say no."""
        return True

    def write_records(self, batch):
        """Write one batch. Return None, or Bizon's (ok, error) tuple; raise
        `Retryable`, `Rejected` or anything else (fatal)."""
        raise NotImplementedError(f"{type(self).__name__} does not define write_records(self, batch)")

    def finalize(self):
        """Called once after the last batch. Return False or raise to fail."""
        return True


class Outcome:
    """What one call came to: `kind` is "ok", "retryable", "fatal" or
    "rejected"; `value` is the row count, the message or the rejected rows."""

    __slots__ = ("kind", "value")

    def __init__(self, kind, value):
        self.kind = kind
        self.value = value

    def __repr__(self):
        return f"Outcome({self.kind!r}, {self.value!r})"


def _traceback(error):
    """The exception with its traceback as Python prints it, from the
    author's code on (the Runner's own frame says nothing to them)."""
    tb = error.__traceback__
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip()


class Runner:
    """Calls a Destination the way the host does and reports each outcome.
    Catches BaseException: inside the component an escaped exception is an
    anonymous trap, its traceback lost."""

    def __init__(self, cls):
        self.cls = cls
        self.destination = None

    @property
    def plugin_name(self):
        return self.cls.name or self.cls.__name__

    def open(self, config):
        try:
            destination = self.cls()
            destination.open(config)
        except BaseException as e:  # noqa: BLE001 - see the class docstring
            return Outcome("fatal", f"open: {_traceback(e)}")
        self.destination = destination
        return Outcome("ok", None)

    def _ready(self, method):
        if self.destination is None:
            return Outcome("fatal", f"{method} called before open succeeded")
        return None

    def check_connection(self):
        not_ready = self._ready("check_connection")
        if not_ready:
            return not_ready
        try:
            ok = self.destination.check_connection()
        except BaseException as e:  # noqa: BLE001
            return Outcome("fatal", f"check_connection: {_traceback(e)}")
        if ok is False:
            return Outcome("fatal", "check_connection returned False")
        return Outcome("ok", None)

    def write_records(self, data, destination_id, sequence, num_rows, source=None):
        not_ready = self._ready("write_records")
        if not_ready:
            return not_ready
        try:
            batch = data if isinstance(data, Batch) else Batch.from_arrow(data, destination_id, sequence)
            if source is not None:
                batch.source = source
            result = self.destination.write_records(batch)
        except Retryable as e:
            return Outcome("retryable", (str(e) or "Retryable") + _errors.wait(e.after))
        except Rejected as e:
            return Outcome("rejected", e.rows)
        except BaseException as e:  # noqa: BLE001
            # What requests, urllib3, urllib or httpx raise for a timeout, a
            # failed connection, 408, 429 or 5xx is retried as Retryable is.
            passing = _errors.retryable(e)
            if passing is not None:
                message, after = passing
                return Outcome("retryable", message + _errors.wait(after))
            return Outcome("fatal", f"write_records: {_traceback(e)}")
        return _written(result, num_rows)

    def finalize(self):
        not_ready = self._ready("finalize")
        if not_ready:
            return not_ready
        try:
            ok = self.destination.finalize()
        except BaseException as e:  # noqa: BLE001
            return Outcome("fatal", f"finalize: {_traceback(e)}")
        if ok is False:
            return Outcome("fatal", "finalize returned False")
        return Outcome("ok", None)


def _written(result, num_rows):
    """None (all written), Bizon's (ok, error) or a row count."""
    if result is None or result is True:
        return Outcome("ok", num_rows)
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
        ok, error = result
        if ok:
            return Outcome("ok", num_rows)
        # Bizon stops the run on a failed write; so does the host.
        return Outcome("fatal", f"write_records returned (False, {error!r})")
    if isinstance(result, int) and not isinstance(result, bool):
        return Outcome("ok", result)
    return Outcome(
        "fatal",
        f"write_records returned {result!r}; return None, (True, None), (False, error) or the row count",
    )


def find_destination(module):
    """The one Destination subclass a module defines."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Destination)
        and value is not Destination
        and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise TypeError(
            f"{module.__name__}: a plugin module defines exactly one subclass of bizon_plugin.Destination; found {names}"
        )
    return found[0]
