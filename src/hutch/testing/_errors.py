"""The test harness's own errors: test-harness errors, not hutch run-time errors.

::

    BrokerError
    ├── BrokerStartError      a node or container did not come up (log_tail)
    ├── BrokerUnavailable     no way to get a broker on this machine
    └── BrokerControlError    rabbitmqctl failed, or the broker cannot be controlled
"""

from __future__ import annotations

__all__ = ["BrokerControlError", "BrokerError", "BrokerStartError", "BrokerUnavailable"]


class BrokerError(Exception):
    """Base class of the test-harness broker errors."""


class BrokerStartError(BrokerError):
    """A broker node or container did not become ready.

    Attributes:
        log_tail: The last lines of the broker's log, or ``""`` when unknown.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = (
            f"{message}\n--- last lines of the broker log ---\n{log_tail}" if log_tail else message
        )
        super().__init__(full)
        self.log_tail = log_tail


class BrokerUnavailable(BrokerError):
    """No broker can be had on this machine; the message says how to get one."""


class BrokerControlError(BrokerError):
    """A control operation failed, or this broker cannot be controlled at all.

    Attributes:
        command: The command that failed, or ``()`` when none was run.
        returncode: Its exit status, or ``None`` (timeout, or not run).
        stderr: What it wrote to standard error (or standard output when it wrote
            nothing to standard error).
    """

    def __init__(
        self,
        message: str,
        *,
        command: tuple[str, ...] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(f"{message}\n{stderr.strip()}" if stderr.strip() else message)
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
