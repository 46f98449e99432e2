"""Developer sessions: tests, lint, typecheck, docs, demo, bench.

Each session installs what it needs into its own virtualenv; a broker is provisioned by
hutch.testing (HUTCH_TEST_AMQP_URL, a Docker container, or a local rabbitmq-server node).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
# a matrix interpreter that is not installed fails the run instead of being skipped
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
# the other interpreters of the compatibility matrix; pyenv's builds are put on PATH so
# that nox finds them (a CI image may also provide them as python3.10 / python3.13)
COMPAT_PYTHONS = ["3.10", "3.13"]
_PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
for _version in COMPAT_PYTHONS:
    _builds = sorted(glob.glob(str(_PYENV / f"{_version}.*" / "bin")))
    if _builds:
        os.environ["PATH"] = os.pathsep.join([_builds[-1], os.environ.get("PATH", "")])


def _lowest_pika() -> str:
    """The lowest pika that pyproject.toml allows (its ``pika>=X`` bound)."""
    found = re.search(r'"pika>=([0-9.]+)', (ROOT / "pyproject.toml").read_text())
    if found is None:
        raise RuntimeError("pyproject.toml has no 'pika>=X' dependency bound")
    version = found.group(1)
    return version if version.count(".") >= 2 else f"{version}.0"


PIKA_LOWEST = f"pika=={_lowest_pika()}"
PIKA_NEWEST = "pika>=1,<2"  # pip picks the newest 1.x
# what the compatibility sessions run: the pure tests, the guards of pika's private API
# and the integration files that drive every pattern over a real broker (~the fastest
# half of the suite; the whole suite runs once, in `tests`)
COMPAT_SUBSET = [
    "tests/unit",
    "tests/integration/test_pika_private_api.py",
    "tests/integration/test_connection.py",
    "tests/integration/test_publisher.py",
    "tests/integration/test_rpc.py",
    "tests/integration/test_subscriber.py",
    "tests/integration/test_worker_pool.py",
]

# the sessions that need a broker may install rabbitmq-server with apt-get (as root on Debian)
# when no other broker is found, so that a fresh machine needs nothing but `nox`
BROKER_ENV = {
    "HUTCH_TEST_INSTALL_BROKER": os.environ.get("HUTCH_TEST_INSTALL_BROKER", "1"),
    # cache bytecode even where the environment turns it off: pytest's rewritten test
    # modules (2.7 s of collection against 0.4 s) and every Python process the tests start
    "PYTHONDONTWRITEBYTECODE": "",
}

TEST_DEPS = [
    "pyyaml>=6",
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "mypy>=1.10",
    "types-pika-ts",
    "cryptography>=42",  # certificates for the TLS tests
    # hutch._telemetry's tests: the SDK's in-memory span exporter and metric reader
    "opentelemetry-api>=1.27",
    "opentelemetry-sdk>=1.27",
    "opentelemetry-exporter-prometheus>=0.48b0",
    "prometheus-client>=0.20",
]


def _ensure_system_tools(session: nox.Session, *tools: str) -> None:
    """Install missing command-line tools the tests call (e.g. ``jq`` in the CLI examples).

    Only as root on Debian/Ubuntu with apt-get, as for rabbitmq-server; elsewhere the tests
    that need a tool say which one is missing.
    """
    import shutil

    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    if BROKER_ENV["HUTCH_TEST_INSTALL_BROKER"] != "1":
        return
    session.run("apt-get", "update", "-qq", external=True)
    session.run(
        "apt-get",
        "install",
        "-y",
        "-qq",
        *missing,
        external=True,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite against a real broker."""
    _ensure_system_tools(session, "jq")  # the docs' `hutch consume --json | jq` examples
    session.install("-e", ".[testing,cli]", *TEST_DEPS)
    session.run("pytest", *(session.posargs or ["-q"]), env=BROKER_ENV)


@nox.session
def tests_memory(session: nox.Session) -> None:
    """Run the integration suite on the in-process memory broker (``--hutch-broker=memory``).

    Tests marked ``rabbitmq_only`` are skipped; every other one must pass on both brokers
    (RabbitMQ stays the truth: a disagreement is a bug in the memory broker).
    """
    session.install("-e", ".[testing,cli]", *TEST_DEPS)
    session.run(
        "pytest",
        *(session.posargs or ["-q", "tests/integration", "tests/unit/test_memory_backend.py"]),
        "--hutch-broker=memory",
        env={"PYTHONDONTWRITEBYTECODE": ""},
    )


# the oldest combination a user can install, the lowest pika on the newest Python, and the
# newest of both (the default interpreter with the newest pika runs the whole suite)
COMPAT_MATRIX = [
    (COMPAT_PYTHONS[0], PIKA_LOWEST),
    (COMPAT_PYTHONS[1], PIKA_LOWEST),
    (COMPAT_PYTHONS[1], PIKA_NEWEST),
]


@nox.session
@nox.parametrize(
    ("python", "pika"),
    COMPAT_MATRIX,
    ids=[
        f"py{py}-pika-{'lowest' if pin == PIKA_LOWEST else 'newest'}" for py, pin in COMPAT_MATRIX
    ],
)
def tests_compat(session: nox.Session, pika: str) -> None:
    """Run a representative subset of the suite on Python 3.10 and 3.13, lowest and newest pika.

    The interpreters come from PATH (pyenv's builds are added above); one that is missing
    fails the session ("Python interpreter 3.10 not found"), it is never skipped.
    """
    session.install("-e", ".[testing,cli]", *TEST_DEPS)
    session.install(pika)  # after the package: the pin wins over what it pulled in
    session.run("python", "-c", "import pika, sys; print('pika', pika.__version__, sys.version)")
    # the fork server is the suite's own harness, not hutch: the tests session checks it
    subset = ["-q", *COMPAT_SUBSET, "--ignore=tests/unit/test_forkserver.py"]
    session.run("pytest", *(session.posargs or subset), env=BROKER_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src, tests and examples."""
    session.install("-e", ".[testing,cli]", *TEST_DEPS)
    session.run("mypy", "--strict", "src", "tests", "examples")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    # ruff lets mkdocstrings format the signatures in the API reference
    session.install("-e", ".[cli]", "mkdocs-material>=9", "mkdocstrings[python]>=0.25", "ruff")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """Run every pattern end to end against a throwaway broker."""
    session.install("-e", ".[testing,cli]")
    session.run("python", "examples/demo.py", *session.posargs, env=BROKER_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks: hutch against raw pika on the same broker, printing ratios."""
    session.install("-e", ".[testing,cli]", "aio-pika>=9", "matplotlib>=3.8")
    session.run("python", "benchmarks/run_all.py", *session.posargs, env=BROKER_ENV)
