"""The component's side of the transform contract: what `bizon-plugin build`
wires a transform module into. Imported only inside the component, where
componentize-py provides `wit_world` (world `python-transformer`);
everything that can run without it is in transform.py."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.transform import RecordError, TransformInfo, Transformed
from wit_world.imports import host
from wit_world.imports import bizon_destination_types as types

from . import _host_log
from .transform import TransformRunner, find_transform


def export(module):
    """The class componentize-py exports for `module`'s Transform subclass."""
    runner = TransformRunner(find_transform(module))
    version = str(runner.cls.version)
    _host_log.install(host.log, types.LogLevel)

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
