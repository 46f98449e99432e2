"""Finding the local ``rabbitmq-server``, and installing it with apt-get only when asked to."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping

from hutch.testing._errors import BrokerUnavailable
from hutch.testing._util import BIN_DIR_ENV, INSTALL_ENV, URL_ENV

__all__ = [
    "HOW_TO_GET_A_BROKER",
    "bin_dir",
    "can_install",
    "ensure_local_server",
    "install_refusal",
    "local_server_installed",
    "why_not_install",
]

_log = logging.getLogger("hutch.testing")

DEFAULT_BIN_DIR = "/usr/lib/rabbitmq/bin"
_install_lock = threading.Lock()


def bin_dir() -> str:
    """Return the directory expected to hold ``rabbitmq-server`` and ``rabbitmqctl``."""
    return os.environ.get(BIN_DIR_ENV) or DEFAULT_BIN_DIR


def local_server_installed() -> bool:
    """Return whether an executable ``rabbitmq-server`` is in :func:`bin_dir`."""
    return os.access(os.path.join(bin_dir(), "rabbitmq-server"), os.X_OK)


def install_refusal(
    environ: Mapping[str, str], *, is_root: bool, is_debian: bool, has_apt_get: bool
) -> str | None:
    """Decide whether hutch may install ``rabbitmq-server`` with apt-get (pure logic).

    A system install happens only when asked for: ``HUTCH_TEST_INSTALL_BROKER=1``, as root,
    on Debian or Ubuntu with apt-get, and with no ``HUTCH_RABBITMQ_BIN_DIR`` pointing
    elsewhere.

    Args:
        environ: The environment variables (``os.environ``).
        is_root: Whether the process runs as root.
        is_debian: Whether ``/etc/debian_version`` exists.
        has_apt_get: Whether ``apt-get`` is on the ``PATH``.

    Returns:
        ``None`` when the install may run, else why not (one sentence, saying what to do).
    """
    if environ.get(INSTALL_ENV, "").strip() != "1":
        return f"set {INSTALL_ENV}=1 to let hutch install it with apt-get, as root on Debian"
    if BIN_DIR_ENV in environ:
        return f"{BIN_DIR_ENV} is set, so hutch does not install a system package"
    if not (is_debian and has_apt_get):
        return f"{INSTALL_ENV}=1, but apt-get installs only work on Debian or Ubuntu"
    if not is_root:
        return f"{INSTALL_ENV}=1, but apt-get needs root"
    return None


def why_not_install() -> str | None:
    """Apply :func:`install_refusal` to this process and machine."""
    return install_refusal(
        os.environ,
        is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
        is_debian=os.path.exists("/etc/debian_version"),
        has_apt_get=shutil.which("apt-get") is not None,
    )


def can_install() -> bool:
    """Return whether :func:`ensure_local_server` would install the server on this machine."""
    return why_not_install() is None


HOW_TO_GET_A_BROKER = (
    f"Set {URL_ENV}=amqp://user:password@host:5672/%2F to use a running broker, "
    "or start a Docker engine (with `pip install 'testcontainers[rabbitmq]'`), "
    "or install RabbitMQ locally (`sudo apt-get install rabbitmq-server` on Debian/Ubuntu, "
    f"or {INSTALL_ENV}=1 to let hutch run apt-get as root; "
    f"set {BIN_DIR_ENV} if rabbitmq-server lives somewhere else than {DEFAULT_BIN_DIR})."
)


def ensure_local_server() -> None:
    """Make sure ``rabbitmq-server`` is installed, running apt-get only when allowed.

    Raises:
        BrokerUnavailable: It is missing and cannot be installed.
    """
    if local_server_installed():
        return
    refusal = why_not_install()
    if refusal is not None:
        raise BrokerUnavailable(
            f"no rabbitmq-server in {bin_dir()} ({refusal}). {HOW_TO_GET_A_BROKER}"
        )
    import fcntl  # POSIX only; imported here so the module loads everywhere

    with (
        _install_lock,
        open(os.path.join(tempfile.gettempdir(), "hutch-apt.lock"), "w") as lock,
    ):
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer across pytest-xdist workers
        if local_server_installed():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd, timeout in (
            (["apt-get", "update"], 600.0),
            (
                [
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "rabbitmq-server",
                ],
                900.0,
            ),
        ):
            _log.info("running %s", " ".join(cmd))
            try:
                done = subprocess.run(
                    cmd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BrokerUnavailable(f"{' '.join(cmd)} failed: {exc}") from exc
            if done.returncode != 0:
                # The package's postinst may fail to start the system service when
                # there is no init system; the files we need are there all the same.
                _log.warning("%s exited %d: %s", cmd[1], done.returncode, done.stderr[-2000:])
        if not local_server_installed():
            raise BrokerUnavailable(
                f"apt-get install rabbitmq-server did not provide {bin_dir()}/rabbitmq-server. "
                f"{HOW_TO_GET_A_BROKER}"
            )
