import json
import textwrap

from bizon_plugin.cli import main


def write_app(tmp_path, body):
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(body))
    return app


GOOD = """
    import json, os
    from bizon_plugin import Destination

    class Out(Destination):
        def open(self, config):
            self.path = os.path.join(config["dir"], "out.jsonl")

        def write_records(self, batch):
            with open(self.path, "a") as f:
                for r in batch.rows():
                    f.write(json.dumps(r.data) + "\\n")
"""


def test_test_runs_the_sample_batches_in_cpython(tmp_path, capsys):
    app = write_app(tmp_path, GOOD)
    records = tmp_path / "mine.jsonl"
    records.write_text('{"mine": 1}\n{"mine": 2}\n')
    code = main(["test", str(app), "--plugin-config", json.dumps({"dir": str(tmp_path)}), "--records", str(records)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS  write: unicode: 3 row(s)" in out and "PASS  finalize" in out
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 3 + 3 + 2 + 2 and {"text": "Zoë 🚀"} in lines and lines[-1] == {"mine": 2}


def test_test_fails_and_shows_the_traceback(tmp_path, capsys):
    app = write_app(tmp_path, GOOD)
    code = main(["test", str(app)])  # no "dir" in the config
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  open: fatal: open: Traceback" in out and "KeyError: 'dir'" in out


def test_a_module_needs_exactly_one_destination(tmp_path, capsys):
    app = write_app(tmp_path, """
        from bizon_plugin import Destination
        class A(Destination): pass
        class B(Destination): pass
    """)
    assert main(["build", str(app), "--no-check"]) == 1
    err = capsys.readouterr().err
    assert "exactly one subclass" in err and "A (line 3), B (line 4)" in err


def test_a_syntax_error_names_the_line(tmp_path, capsys):
    app = write_app(tmp_path, "class A(:\n")
    assert main(["test", str(app)]) == 1
    assert "app.py:1:" in capsys.readouterr().err


def test_a_package_with_a_native_extension_is_refused_by_name(tmp_path, capsys):
    # componentize-py itself is a compiled extension with no Python source.
    app = write_app(tmp_path, GOOD.replace("import json, os", "import json, os\n    import componentize_py"))
    assert main(["build", str(app), "--no-check"]) == 1
    err = capsys.readouterr().err
    assert "native extensions" in err and "componentize-py: componentize_py/componentize_py" in err, err


def test_a_compiled_package_with_its_source_beside_it_is_not_refused(tmp_path, capsys):
    # charset_normalizer (under requests) ships md.py beside its compiled md.*.so.
    from bizon_plugin.cli import _refuse_native, _stage

    app = write_app(tmp_path, GOOD.replace("import json, os", "import json, os\n    import requests"))
    lib = _stage(app, tmp_path / "work", "Destination", [])
    _refuse_native(lib, app, [])


def test_requirements_must_be_installed_and_are_imported_at_build(tmp_path, capsys):
    from bizon_plugin.cli import _requirements

    app = write_app(tmp_path, GOOD)
    (tmp_path / "requirements.txt").write_text("# what the plugin needs\nrequests>=2.31  # HTTP\n-r other.txt\n")
    assert _requirements(app) == ["requests"]
    (tmp_path / "requirements.txt").write_text("requests\nno-such-package-here==1.0\n")
    assert main(["build", str(app), "--no-check"]) == 1
    err = capsys.readouterr().err
    assert "requirements.txt:2: no-such-package-here is not installed" in err, err
