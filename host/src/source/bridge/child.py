"""bizon-host's bridge child: runs one Bizon source, unchanged, and streams its pages to the host.

The host (host/src/source/bridge/) starts this with the Python that has `bizon` installed and
talks to it over pipes, in frames: a 4-byte little-endian length, then the payload, whose first
byte says what it is.

  host -> child (stdin):   I  init, JSON {mode, config, state, run_started_at, log_level}
                           A  acknowledgement, 8-byte little-endian page sequence: every page up to
                              it was written by the destination
  child -> host (stdout):  H  hello, JSON {protocol, bizon, python}
                           S  started, JSON {source_class, total_records, incremental}
                           P  page, JSON [ids, datas, timestamps, destination_ids or null], a column each
                           D  done, JSON {iterations, records, state}
                           K  check_connection's answer, JSON {ok, error}
                           E  error, JSON {message, traceback, hint}

The source is made as Bizon 0.6.4 makes it (bizon/engine/runner/runner.py, producer.py): the
`source:` mapping of the pipeline, its references resolved (bizon/engine/engine.py), handed to
get_source_instance_by_source_and_stream (config class validation, authenticator, internal
sources or `source_file_path`), check_connection(), get_total_records_count(), then get() or,
for an incremental run after a successful one, get_records_after(), until next_pagination is
empty. A record's data is serialized as Bizon's `_dump_data` does (orjson, same options), so
source_data is byte for byte what Bizon hands its destinations.

What user code prints goes to stderr (the host's log), never into the frames: the frames go to
a private duplicate of stdout, and fd 1 is pointed at stderr before anything else runs.
"""

import sys

# `python -c` puts the working directory first on sys.path, where a stray json.py would shadow
# the standard library; Bizon's own `bizon` script does not have it there.
if sys.path and sys.path[0] == "":
    del sys.path[0]

import faulthandler
import json
import logging
import os
import signal
import struct
import threading
import traceback

PROTOCOL = 1
LENGTH = struct.Struct("<I")
SEQUENCE = struct.Struct("<Q")
MEMORY_HINT = "raise source.bridge.memory_mb (the child's address space in MiB, default 4096)"

_frames = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
os.dup2(2, 1)
sys.stdout = sys.stderr
# A hung source's stack, for the host's timeout message; a crash's, for its exit message.
faulthandler.enable(file=sys.stderr, all_threads=True)
faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

_stop = threading.Event()
_write_lock = threading.Lock()


def _on_sigterm(signum, frame):
    sys.stderr.write("bizon-host bridge: SIGTERM received, stopping after the current page\n")
    _stop.set()


signal.signal(signal.SIGTERM, _on_sigterm)


def send(kind, payload):
    with _write_lock:
        _frames.write(LENGTH.pack(len(payload) + 1))
        _frames.write(kind)
        _frames.write(payload)
        _frames.flush()


def send_json(kind, value):
    send(kind, json.dumps(value, default=str).encode())


def read_exactly(stream, n):
    data = stream.read(n)
    if data is None or len(data) < n:
        return None
    return data


def read_frame(stream):
    head = read_exactly(stream, 4)
    if head is None:
        return None, None
    (length,) = LENGTH.unpack(head)
    body = read_exactly(stream, length)
    if body is None or length == 0:
        return None, None
    return body[:1], body[1:]


class Failure(Exception):
    """An error to report with a hint on what to install or fix."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


def fail(message, hint=None, tb=None):
    send_json("E".encode(), {"message": message, "traceback": tb or "", "hint": hint})


def main():
    _, payload = read_frame(sys.stdin.buffer)
    if payload is None:
        return 2
    init = json.loads(payload)
    try:
        from importlib.metadata import version

        bizon_version = version("bizon")
        # `bizon` is a namespace package: a stray `bizon` folder imports too; this does not.
        import bizon.source.discover  # noqa: F401
    except ImportError as e:
        fail(
            f"bizon is not installed in {sys.executable}: {e}",
            hint='pip install "bizon==0.6.4" into that environment (or give bizon-host --python)',
        )
        return 1
    send_json(
        b"H",
        {"protocol": PROTOCOL, "bizon": bizon_version, "python": sys.version.split()[0]},
    )
    try:
        return run(init)
    except Failure as e:
        fail(str(e), hint=e.hint, tb=traceback.format_exc())
    except MemoryError:
        fail("MemoryError: the source used all the memory the host allows it", hint=MEMORY_HINT, tb=traceback.format_exc())
    except Exception as e:
        fail(f"{type(e).__name__}: {e}", tb=traceback.format_exc())
    return 1


def source_section(init):
    """The `source:` mapping as Bizon's runner hands it to the source: YAML read by PyYAML,
    gsm:// / env:// references resolved, bizon-host's own `bridge:` key taken out."""
    import yaml
    from bizon.engine.engine import resolve_config

    raw = yaml.safe_load(init["config"])
    resolved = resolve_config({"source": raw.get("source") or {}, "secrets": raw.get("secrets")})
    source = dict(resolved["source"])
    source.pop("bridge", None)
    # Bizon's runner sets these for the sources to read.
    os.environ["BIZON_SYNC_NAME"] = str(raw.get("name"))
    os.environ["BIZON_SOURCE_NAME"] = str(source.get("name"))
    os.environ["BIZON_SOURCE_STREAM"] = str(source.get("stream"))
    os.environ["BIZON_DESTINATION_NAME"] = str((raw.get("destination") or {}).get("name"))
    return source


def faster_default_timestamp():
    """A record made without a timestamp gets `datetime.now(tz=pytz.UTC)` in Bizon's model; pytz's
    UTC converts in Python, a quarter of a simple source's time per record (2.5 s of a 500k-record
    loop, 1.9 s without). The standard library's UTC gives the same instant, serialized the same
    (`+00:00`), from C. Skipped if the model is not the one this was written against."""
    import datetime
    import functools

    from bizon.source.models import SourceRecord

    field = SourceRecord.model_fields.get("timestamp")
    if field is None or field.default_factory is None:
        return
    field.default_factory = functools.partial(datetime.datetime.now, datetime.timezone.utc)
    SourceRecord.model_rebuild(force=True)


def make_source(section):
    from bizon.source.discover import get_source_instance_by_source_and_stream

    name, stream = section.get("name"), section.get("stream")
    try:
        return get_source_instance_by_source_and_stream(
            source_name=name, stream_name=stream, source_config=section
        )
    except ImportError as e:
        missing = e.name or str(e)
        if section.get("source_file_path"):
            raise Failure(
                f"{section['source_file_path']} imports `{missing}`, which is not installed in {sys.executable}",
                hint=f"pip install the package that provides `{missing}` into that environment",
            ) from e
        from importlib.metadata import metadata

        extras = metadata("bizon").get_all("Provides-Extra") or []
        install = f'"bizon[{name}]=={metadata("bizon")["Version"]}"' if name in extras else f"the package providing `{missing}`"
        raise Failure(
            f"source `{name}` needs `{missing}`, which is not installed in {sys.executable}",
            hint=f"pip install {install} into that environment",
        ) from e


def run(init):
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=init.get("log_level") or "INFO")
    # Libraries' warnings too (urllib3's retries name the host they cannot reach), in loguru's
    # layout so that the host keeps their level.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s | %(levelname)s | %(name)s - %(message)s"
    )
    section = source_section(init)
    faster_default_timestamp()
    source = make_source(section)
    ok, error = source.check_connection()
    if init["mode"] == "check":
        send_json(b"K", {"ok": bool(ok), "error": None if ok else str(error)})
        return 0
    if not ok:
        raise Failure(f"Error while connecting to source: {error}")
    return produce(source, init)


def incremental_state(source, init):
    """What Bizon's producer hands get_records_after, or None for a get() run."""
    from bizon.source.config import SourceSyncModes
    from bizon.source.models import SourceIncrementalState

    config = source.config
    if config.sync_mode != SourceSyncModes.INCREMENTAL or config.reset:
        return None
    last = init.get("state")
    if not last:
        # Bizon: no successful run yet, so the first incremental run is a full one.
        return None
    return SourceIncrementalState(
        last_run=last["last_run"],
        state=last.get("state") or {},
        cursor_field=config.cursor_field,
        run_started_at=init["run_started_at"],
    )


def produce(source, init):
    import operator

    import orjson
    from bizon.source.callback import NoOpSourceCallback
    from bizon.source.models import _dump_data, _json_default

    config = source.config
    state = incremental_state(source, init)
    previous_state = (init.get("state") or {}).get("state") or {}
    total = source.get_total_records_count()
    send_json(
        b"S",
        {
            "source_class": f"{type(source).__module__}.{type(source).__qualname__}",
            "total_records": total,
            "incremental": state is not None,
        },
    )
    callback = source.get_source_callback_instance()
    acks = Acks(callback if not isinstance(callback, NoOpSourceCallback) else None)
    acks.start()

    ids = operator.attrgetter("id")
    datas = operator.attrgetter("data")
    stamps = operator.attrgetter("timestamp")
    dests = operator.attrgetter("destination_id")
    option = orjson.OPT_NON_STR_KEYS
    dumps = orjson.dumps
    fragment = orjson.Fragment

    pagination = {}
    iteration = 0
    records = 0
    next_state = None
    max_iterations = config.max_iterations
    while True:
        if _stop.is_set():
            return 0
        # Bizon's producer: `iteration > max_iterations` ends the run.
        if max_iterations and iteration > max_iterations:
            break
        try:
            if state is not None:
                page = source.get_records_after(source_state=state, pagination=pagination)
                if page is None:
                    raise Failure(
                        f"{type(source).__name__}.get_records_after() returned None: the source does not "
                        "implement incremental syncs",
                        hint="use sync_mode: full_refresh for this source",
                    )
            else:
                page = source.get(pagination=pagination)
        except Failure:
            raise
        except Exception as e:
            raise Failure(
                f"Error while fetching data from source at iteration {iteration}: {type(e).__name__}: {e}",
                hint=MEMORY_HINT if isinstance(e, MemoryError) else None,
            ) from e
        if page.next_state is not None:
            next_state = page.next_state
        items = page.records
        # A page in columns, one orjson call for all of it: 0.53 us a record against 0.61 for
        # rows and 2.5 for Arrow IPC, whose string column needs one dumps call per record.
        data = list(map(datas, items))
        where = list(map(dests, items))
        columns = [
            list(map(ids, items)),
            data,
            list(map(stamps, items)),
            None if where.count(None) == len(where) else where,
        ]
        try:
            body = dumps(columns, default=_json_default, option=option)
        except TypeError:
            # Bizon's _dump_data falls back to the standard encoder for what orjson refuses
            # (integers beyond 64 bits); its text is kept as is.
            columns[1] = [fragment(_dump_data(d)) for d in data]
            body = dumps(columns, default=_json_default, option=option)
        acks.keep(iteration, page)
        send(b"P", body)
        records += len(items)
        iteration += 1
        pagination = page.next_pagination
        if not pagination:
            break
    send_json(
        b"D",
        {
            "iterations": iteration,
            "records": records,
            # Bizon keeps the last state a page gave, else the previous run's.
            "state": next_state if next_state is not None else previous_state,
        },
    )
    acks.join()
    return 0


class Acks(threading.Thread):
    """Reads the host's acknowledgements; Bizon's source callback (on_iterations_written) hears
    of the pages the destination wrote, as Bizon's consumer tells it after a write."""

    def __init__(self, callback):
        super().__init__(name="bizon-host-acks", daemon=True)
        self.callback = callback
        self.pending = []
        self.lock = threading.Lock()

    def keep(self, iteration, page):
        if self.callback is not None:
            with self.lock:
                self.pending.append((iteration, page))

    def run(self):
        stdin = sys.stdin.buffer
        while True:
            kind, payload = read_frame(stdin)
            if kind is None:
                # The host closed the pipe: the run is over, or the host is gone.
                _stop.set()
                return
            if kind != b"A" or self.callback is None:
                continue
            (done,) = SEQUENCE.unpack(payload)
            with self.lock:
                written = [page for i, page in self.pending if i <= done]
                self.pending = [(i, page) for i, page in self.pending if i > done]
            if written:
                self.callback.on_iterations_written(written)


if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:
        # The host is gone; nothing to tell it.
        code = 1
    try:
        _frames.flush()
    except BrokenPipeError:
        pass
    sys.stderr.flush()
    # Everything is said: no interpreter teardown (a tenth of a second and more with Bizon's
    # imports), which the host's run would wait for.
    os._exit(code)
