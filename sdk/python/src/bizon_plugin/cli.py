"""`bizon-plugin build app.py -o my_plugin.wasm` and `bizon-plugin test app.py`,
for a destination (a bizon_plugin.Destination subclass) or a transform (a
bizon_plugin.Transform subclass): the module says which."""

import argparse
import ast
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .batch import Batch
from .destination import Runner, find_destination
from .transform import TransformRunner, find_transform

_PACKAGE = Path(__file__).resolve().parent
_ENTRY = "bizon_plugin_main"


class CliError(Exception):
    """A message for the author; printed without a traceback."""


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bizon-plugin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build a WebAssembly component from a plugin module")
    build.add_argument(
        "app", type=Path, help="the module that defines one bizon_plugin.Destination or bizon_plugin.Transform subclass"
    )
    build.add_argument("-o", "--output", type=Path, help="the component to write (default: APP's name with .wasm)")
    build.add_argument(
        "-p", "--path", type=Path, action="append", default=[], help="another directory of modules to bundle (repeatable)"
    )
    build.add_argument(
        "--no-check", action="store_true", help="skip `bizon-host plugin test` on the result (destinations only)"
    )
    _host_options(build)
    build.set_defaults(run=_build)

    test = commands.add_parser("test", help="run the destination or transform in this Python on sample records")
    test.add_argument("app", type=Path)
    test.add_argument("--plugin-config", default="{}", help="what open() receives, as JSON (default {})")
    test.add_argument(
        "--records", type=Path, help="a JSONL file of records (source_data): one more batch, or a transform's input"
    )
    test.set_defaults(run=_test)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as e:
        print(f"bizon-plugin: {e}", file=sys.stderr)
        return 1


def _host_options(parser):
    parser.add_argument("--plugin-config", default=None, help="for the check: what open() receives, as JSON")
    parser.add_argument("--allow-dir", action="append", default=[], help="for the check: HOST[:GUEST][:rw] (repeatable)")
    parser.add_argument("--allow-env", action="append", default=[], help="for the check: NAME (repeatable)")
    parser.add_argument("--allow-host", action="append", default=[], help="for the check: SCHEME://HOST:PORT (repeatable)")
    parser.add_argument(
        "--bizon-host", default=os.environ.get("BIZON_HOST", "bizon-host"), help="the bizon-host binary (default: on PATH)"
    )


# What a module may define, and what `build` makes of it: (componentize-py
# world, the export module in this package).
_KINDS = {
    "Destination": ("python-plugin", "_export"),
    "Transform": ("python-transformer", "_export_transform"),
}


def _plugin_classes(app):
    """(base, "Class (line N)") for each class in `app` whose base is spelled
    Destination, Transform or bizon_plugin.<either>."""
    try:
        tree = ast.parse(app.read_text(encoding="utf-8"), filename=str(app))
    except SyntaxError as e:
        raise CliError(f"{app}:{e.lineno}: {e.msg}") from None
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
                if name in _KINDS:
                    found.append((name, f"{node.name} (line {node.lineno})"))
    return found


def _app(path):
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix != ".py":
        raise CliError(f"{path}: a plugin is a Python module (.py)")
    found = _plugin_classes(path)
    if len(found) != 1:
        names = ", ".join(name for _, name in found) or "none"
        raise CliError(
            f"{path}: a plugin module defines exactly one subclass of bizon_plugin.Destination or "
            f"bizon_plugin.Transform; found {names}"
        )
    return path.resolve(), found[0][0]


def _componentize_py():
    beside = Path(sys.executable).parent / "componentize-py"
    found = str(beside) if beside.exists() else shutil.which("componentize-py")
    if not found:
        raise CliError("componentize-py is not installed: pip install componentize-py==0.25.1")
    return found


def _stage(app, work, kind, required):
    """The entry module, this package and the app's own modules, copied under
    `work`: componentize-py bundles whole directories, so the app's directory
    (a virtualenv, data files) is not handed to it as it is. The entry
    module imports the app (and the modules of `required` distributions)
    with sockets refused, then routes the HTTP libraries it imported through
    wasi:http (_compat.py)."""
    lib = work / "lib"
    export = _KINDS[kind][1]
    shutil.copytree(_PACKAGE, lib / "bizon_plugin", ignore=shutil.ignore_patterns("__pycache__", "cli.py", "wit"))
    for item in app.parent.iterdir():
        if item.suffix == ".py" and item.is_file():
            shutil.copy2(item, lib / item.name)
        elif item.is_dir() and (item / "__init__.py").is_file() and item.name != "bizon_plugin":
            shutil.copytree(item, lib / item.name, ignore=shutil.ignore_patterns("__pycache__"))
    imports = "".join(f"    import {module}\n" for module in required)
    (lib / f"{_ENTRY}.py").write_text(
        "# Generated by bizon-plugin build.\nfrom bizon_plugin import _compat\n\n"
        f"with _compat.building():\n    import {app.stem} as app\n{imports}"
        f"_compat.install()\n\nfrom bizon_plugin.{export} import export\n\n{kind} = export(app)\n",
        encoding="utf-8",
    )
    return lib


def _site_packages():
    """Where this Python's installed packages are: what a plugin may bundle."""
    paths = sysconfig.get_paths()
    found = []
    for key in ("purelib", "platlib"):
        path = Path(paths[key])
        if path.is_dir() and path not in found:
            found.append(path)
    return found


def _requirements(app):
    """The top-level modules of the distributions a requirements.txt beside
    `app` names, each installed in this Python; [] without one."""
    listed = app.parent / "requirements.txt"
    if not listed.is_file():
        return []
    modules = []
    for number, line in enumerate(listed.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if not name:
            raise CliError(f"{listed}:{number}: not a requirement: {line!r}")
        try:
            dist = importlib.metadata.distribution(name.group(0))
        except importlib.metadata.PackageNotFoundError:
            raise CliError(
                f"{listed}:{number}: {name.group(0)} is not installed in this Python ({sys.prefix}): "
                f"pip install -r {listed}"
            ) from None
        modules += _top_level(dist)
    return sorted(set(modules))


def _top_level(dist):
    text = dist.read_text("top_level.txt")
    if text:
        return [m for m in text.split() if m.isidentifier()]
    names = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
            continue
        name = first[:-3] if first.endswith(".py") else first
        if name.isidentifier() and (len(file.parts) > 1 or first.endswith(".py")):
            names.add(name)
    return sorted(names)


# Imports the app (and the required modules) in this Python as the build
# will inside the component, then prints the extension modules loaded.
_PROBE = """
import importlib, importlib.machinery, json, sys
paths, modules = json.loads(sys.argv[1])
sys.path[:0] = paths
from bizon_plugin import _compat
with _compat.building():
    for module in modules:
        importlib.import_module(module)
suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
native = {n: m.__file__ for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "")).endswith(suffixes)}
print()
print("bizon-plugin-native " + json.dumps(native))
"""


def _refuse_native(lib, app, required):
    """Imports the plugin in this Python, and refuses it if it loads an
    installed package's native extension that has no pure-Python twin:
    CPython inside the component runs Python code only."""
    command = [sys.executable, "-c", _PROBE, json.dumps([[str(lib)], [app.stem, *required]])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=app.parent)
    marker = "bizon-plugin-native "
    line = next((l for l in reversed(done.stdout.splitlines()) if l.startswith(marker)), None)
    if done.returncode != 0 or line is None:
        raise CliError(f"importing {app.name} failed:\n{done.stderr.strip()}")
    installed = [str(p) for p in _site_packages()] + [str(lib)]
    refused = {}
    for module, file in json.loads(line[len(marker):]).items():
        path = Path(file)
        if not file.startswith(tuple(installed)):
            continue  # the standard library's own, which the component has
        # mypyc-compiled packages (charset_normalizer) ship the module's
        # source beside it, and the component's CPython imports that.
        if path.with_name(path.name.split(".")[0] + ".py").is_file():
            continue
        top = module.split(".")[0]
        dists = importlib.metadata.packages_distributions().get(top, [top])
        root = next((p for p in installed if file.startswith(p)), "")
        refused.setdefault(", ".join(dists), []).append(os.path.relpath(file, root))
    if refused:
        lines = [f"  {name}: {files[0]}" + (f" and {len(files) - 1} more" if len(files) > 1 else "")
                 for name, files in sorted(refused.items())]
        raise CliError(
            f"{app.name} imports packages with native extensions, which cannot run inside WebAssembly "
            "(a plugin bundles pure-Python packages only):\n" + "\n".join(lines) + "\n"
            "Use a pure-Python alternative; if a library imports one of these only when it is there, "
            "uninstall it from this environment."
        )


def _build(args):
    app, kind = _app(args.app)
    if not app.stem.isidentifier():
        raise CliError(f"{args.app}: the file name must be a Python module name")
    output = (args.output or app.with_suffix(".wasm")).resolve()
    command = [_componentize_py(), "-d", str(_PACKAGE / "wit"), "-w", _KINDS[kind][0], "componentize", _ENTRY]
    required = _requirements(app)
    with tempfile.TemporaryDirectory(prefix="bizon-plugin-") as tmp:
        work = Path(tmp)
        lib = _stage(app, work, kind, required)
        _refuse_native(lib, app, required)
        # The packages come from this Python's environment (the active
        # virtualenv), whatever VIRTUAL_ENV says.
        for path in [lib, *args.path, *_site_packages()]:
            command += ["-p", str(path)]
        command += ["-o", str(output)]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise CliError(f"componentize-py failed building {args.app}:\n{done.stdout}{done.stderr}".rstrip())
    print(f"built {output} ({output.stat().st_size / 1e6:.1f} MB)")
    if args.no_check:
        return 0
    if kind == "Transform":
        # `bizon-host plugin test` speaks the destination contract only.
        print("not checked: `bizon-host plugin test` checks destinations; run the transform in a pipeline")
        return 0
    return _check(output, args)


def _check(wasm, args):
    host = shutil.which(args.bizon_host) or (args.bizon_host if Path(args.bizon_host).is_file() else None)
    if host is None:
        raise CliError(
            f"built {wasm}, but `{args.bizon_host}` was not found to check it: put bizon-host on PATH, "
            "set BIZON_HOST or --bizon-host, or pass --no-check"
        )
    command = [host, "plugin", "test", str(wasm)]
    if args.plugin_config is not None:
        command += ["--plugin-config", args.plugin_config]
    for flag, values in (("--allow-dir", args.allow_dir), ("--allow-env", args.allow_env), ("--allow-host", args.allow_host)):
        for value in values:
            command += [flag, value]
    print("checking:", " ".join(command), flush=True)
    return subprocess.run(command).returncode


def _load(app):
    sys.path.insert(0, str(app.parent))
    spec = importlib.util.spec_from_file_location(app.stem, app)
    module = importlib.util.module_from_spec(spec)
    sys.modules[app.stem] = module
    spec.loader.exec_module(module)
    return module


def sample_batches():
    """Batches in Bizon's layout, like `bizon-host plugin test` sends: plain
    rows, an empty batch, unicode, quotes and newlines."""
    now = dt.datetime.now(dt.timezone.utc)
    samples = [
        ("plain rows", [{"id": i, "name": f"user {i}"} for i in range(3)]),
        ("empty batch", []),
        ("unicode", [{"text": "Zoë 🚀"}, {"text": "日本語"}, {"text": "e\u0301"}]),
        ("quotes and newlines", [{"text": 'say "hi"\nthen\ttab \\ done'}, {"quote": "'"}]),
    ]
    for number, (label, records) in enumerate(samples):
        yield label, _bizon_batch([json.dumps(r) for r in records], "conformance", number, now)


def _bizon_batch(source_data, destination_id, sequence, now):
    n = len(source_data)
    return Batch.from_columns(
        {
            "bizon_id": [f"id-{sequence}-{i}" for i in range(n)],
            "bizon_extracted_at": [now] * n,
            "bizon_loaded_at": [now] * n,
            "source_record_id": [str(i) for i in range(n)],
            "source_timestamp": [now] * n,
            "source_data": source_data,
            "destination_id": [destination_id] * n,
        },
        destination_id,
        sequence,
    )


def _test(args):
    app, kind = _app(args.app)
    try:
        config = json.loads(args.plugin_config)
    except json.JSONDecodeError as e:
        raise CliError(f"--plugin-config is not JSON: {e}") from None
    if kind == "Transform":
        return _test_transform(app, config, args.records)
    runner = Runner(find_destination(_load(app)))
    batches = list(sample_batches())
    if args.records:
        lines = [line for line in args.records.read_text(encoding="utf-8").splitlines() if line.strip()]
        batches.append((str(args.records), _bizon_batch(lines, "records", len(batches), dt.datetime.now(dt.timezone.utc))))
    failed = 0

    def report(step, outcome, detail=""):
        nonlocal failed
        if outcome.kind == "ok":
            print(f"PASS  {step}{detail}")
        else:
            failed += 1
            print(f"FAIL  {step}: {outcome.kind}: {outcome.value}")

    report("open", runner.open(config))
    if failed:
        return 1
    report("check_connection", runner.check_connection())
    for label, batch in batches:
        outcome = runner.write_records(batch, batch.destination_id, batch.sequence, batch.num_rows)
        if outcome.kind == "ok" and outcome.value != batch.num_rows:
            outcome.kind, outcome.value = "fatal", f"wrote {outcome.value} row(s) of {batch.num_rows}"
        report(f"write: {label}", outcome, f": {batch.num_rows} row(s)")
    report("finalize", runner.finalize())
    return 1 if failed else 0



def _sample_records():
    """The records `bizon-plugin test` hands a transform without --records:
    a Kafka record as Bizon's source wraps it, plain rows, unicode."""
    return [
        {
            "topic": "users",
            "partition": 0,
            "offset": 7,
            "timestamp": "2024-01-01T00:00:00+00:00",
            "keys": {"id": "1"},
            "headers": {},
            "value": {"id": 1, "email": "a@example.com"},
        },
        {"id": 2, "name": "user 2"},
        {"text": "Zoë 🚀 日本語"},
    ]


def _test_transform(app, config, records):
    """Runs the transform over records in this Python and prints what comes
    out of each, as the host would write it."""
    runner = TransformRunner(find_transform(_load(app)))
    refused = runner.open(config)
    if refused is not None:
        print(f"FAIL  {refused}")
        return 1
    print("PASS  open")
    if records:
        lines = [line for line in records.read_text(encoding="utf-8").splitlines() if line.strip()]
        inputs = [json.loads(line) for line in lines]
    else:
        inputs = _sample_records()
    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1_000_000)
    batch = "\n".join(
        json.dumps({"source_record_id": str(i), "source_timestamp": now, "destination_id": None, "source_data": data})
        for i, data in enumerate(inputs)
    )
    out, errors = runner.run(batch.encode())
    produced = {}
    for line in out.decode().splitlines():
        row = json.loads(line)
        produced.setdefault(row.get("row"), []).append(row)
    failed = dict(errors)
    for i in range(len(inputs)):
        if i in failed:
            print(f"FAIL  record {i}: {failed[i]}")
            continue
        results = produced.get(i, [])
        print(f"PASS  record {i}: {len(results)} record(s) out" + ("" if results else " (dropped)"))
        for row in results:
            print(f"        {json.dumps(row['source_data'], ensure_ascii=False)}")
    for row in produced.get(None, []):
        print(f"PASS  new record {row['source_record_id']!r}: {json.dumps(row['source_data'], ensure_ascii=False)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
