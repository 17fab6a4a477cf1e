"""The component's side of the contract: what `bizon-plugin build` wires a
plugin module into. Imported only inside the component, where componentize-py
provides `wit_world`; everything that can run without it is in destination.py."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import bizon_destination_types as types
from wit_world.imports import host

from . import _host_log
from .batch import BatchSource, OffsetRange
from .destination import Runner, find_destination


def _check(outcome):
    if outcome.kind != "ok":
        raise Err(outcome.value)


def _source():
    """What `host.batch-source` says of the batch being written, as SDK types."""
    origin = host.batch_source()
    if origin is None:
        return None
    ranges = [OffsetRange(r.topic, r.partition, r.first, r.last) for r in origin.ranges]
    return BatchSource(origin.batch_id, ranges)


def export(module):
    """The class componentize-py exports for `module`'s Destination subclass."""
    runner = Runner(find_destination(module))
    version = str(runner.cls.version)
    _host_log.install(host.log, types.LogLevel)

    class Destination(exports.Destination):
        def describe(self):
            return types.PluginInfo(runner.plugin_name, version, types.InputFormat.ARROW_IPC)

        def open(self, config):
            _check(runner.open(json.loads(config)))

        def check_connection(self):
            _check(runner.check_connection())

        def write_records(self, info, batch):
            out = runner.write_records(batch, info.destination_id, info.sequence, info.num_rows, _source())
            if out.kind == "ok":
                return out.value
            if out.kind == "retryable":
                raise Err(types.WriteError_Retryable(out.value))
            if out.kind == "rejected":
                raise Err(types.WriteError_Rejected([types.RejectedRow(r, why) for r, why in out.value]))
            raise Err(types.WriteError_Fatal(out.value))

        def finalize(self):
            _check(runner.finalize())

    return Destination
