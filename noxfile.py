"""Developer sessions: tests, lint, typecheck, docs, demo, bench.

Each session installs what it needs into its own virtualenv; a broker is provisioned by
hutch.testing (HUTCH_TEST_AMQP_URL, a Docker container, or a local rabbitmq-server node).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

# the sessions that need a broker may install rabbitmq-server with apt-get (as root on Debian)
# when no other broker is found, so that a fresh machine needs nothing but `nox`
BROKER_ENV = {"HUTCH_TEST_INSTALL_BROKER": os.environ.get("HUTCH_TEST_INSTALL_BROKER", "1")}

TEST_DEPS = [
    "pyyaml>=6",
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "mypy>=1.10",
    "types-pika-ts",
    "cryptography>=42",  # certificates for the TLS tests
]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite against a real broker."""
    session.install("-e", ".[testing,cli]", *TEST_DEPS)
    session.run("pytest", *(session.posargs or ["-q"]), env=BROKER_ENV)


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
