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
