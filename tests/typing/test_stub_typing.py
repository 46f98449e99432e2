"""mypy sees through typed RPC stubs: a wrong argument type is a static error.

Runs mypy (``mypy.api.run``, --strict, the project's configuration) over two samples: one
that uses stubs, procedures and interfaces correctly and must be clean, and one that calls
a stub method with a ``str`` where the interface says ``int`` and must fail with exactly
that error.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parent / "samples"


def test_wrong_argument_type_to_a_stub_is_caught_statically() -> None:
    ok = SAMPLES / "stub_calls_ok.py"
    bad = SAMPLES / "stub_calls_wrong_argument.py"
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "typing-tests"),
            "--no-color-output",
            "--show-error-codes",
            str(ok),
            str(bad),
        ]
    )
    assert status == 1, stdout + stderr
    errors = [line for line in stdout.splitlines() if ": error: " in line]
    assert len(errors) == 1, stdout  # the correct sample is clean
    path, line, message = errors[0].split(":", 2)
    assert Path(path).name == bad.name
    assert bad.read_text().splitlines()[int(line) - 1].strip() == 'return calc.add_point("1", 2)'
    assert message.strip() == (
        'error: Argument 1 to "add_point" of "Calculator" has incompatible type "str"; '
        'expected "int"  [arg-type]'
    )
