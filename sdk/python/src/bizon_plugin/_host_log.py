"""`logging` into the host's log, for both worlds (destination and
transform): each passes its own bindings' `host.log` and `LogLevel`, which
exist only inside the component."""

import logging


def install(log, levels):
    """Routes the root logger's records to `log(level, text)`."""
    order = (
        (logging.ERROR, levels.ERROR),
        (logging.WARNING, levels.WARN),
        (logging.INFO, levels.INFO),
        (logging.DEBUG, levels.DEBUG),
    )

    class HostLogHandler(logging.Handler):
        def emit(self, record):
            try:
                level = next((wit for py, wit in order if record.levelno >= py), levels.TRACE)
                log(level, self.format(record))
            except Exception:  # noqa: BLE001 - logging must never fail a write or a record
                self.handleError(record)

    root = logging.getLogger()
    root.handlers[:] = [HostLogHandler()]
    root.setLevel(logging.INFO)
