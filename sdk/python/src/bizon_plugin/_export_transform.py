"""The component's side of the transform contract: what `bizon-plugin build`
wires a transform module into. Imported only inside the component, where
componentize-py provides `wit_world` (world `python-transformer`);
everything that can run without it is in transform.py."""

import json
import logging

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.transform import RecordError, TransformInfo, Transformed
from wit_world.imports import host
from wit_world.imports import types

from .transform import TransformRunner, find_transform

_LEVELS = (
    (logging.ERROR, types.LogLevel.ERROR),
    (logging.WARNING, types.LogLevel.WARN),
    (logging.INFO, types.LogLevel.INFO),
    (logging.DEBUG, types.LogLevel.DEBUG),
)


class HostLogHandler(logging.Handler):
    """Sends `logging` records to the host's log, tagged with the transform."""

    def emit(self, record):
        try:
            level = next((wit for py, wit in _LEVELS if record.levelno >= py), types.LogLevel.TRACE)
            host.log(level, self.format(record))
        except Exception:  # noqa: BLE001 - logging must never fail a record
            self.handleError(record)


def export(module):
    """The class componentize-py exports for `module`'s Transform subclass."""
    runner = TransformRunner(find_transform(module))
    version = str(runner.cls.version)
    root = logging.getLogger()
    root.handlers[:] = [HostLogHandler()]
    root.setLevel(logging.INFO)

    class Transform(exports.Transform):
        def describe(self):
            return TransformInfo(name=runner.plugin_name, version=version, input_format=types.InputFormat.NDJSON)

        def open(self, config):
            refused = runner.open(json.loads(config))
            if refused is not None:
                raise Err(refused)

        def transform_records(self, batch):
            if runner.transform is None:
                raise Err("transform-records called before open succeeded")
            try:
                out, errors = runner.run(batch)
            except Exception as e:  # noqa: BLE001 - a batch the SDK cannot read fails the batch, not a trap
                raise Err(f"transform-records: the batch is not NDJSON records: {e}")
            return Transformed(batch=out, errors=[RecordError(row=row, reason=reason) for row, reason in errors])

    return Transform
