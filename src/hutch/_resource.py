"""The context-manager protocol every hutch resource shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Resource"]


class Resource:
    """Base of hutch's resources: ``with`` opens them and always closes them.

    Subclasses implement :meth:`open` (connect, declare, start consuming...) and an
    idempotent :meth:`close`; a resource used after ``close()`` raises
    :class:`~hutch.ClosedError`. Pools and servers enter by starting in the background.
    """

    def open(self) -> Self:
        """Acquire what the resource needs; called by ``with``.

        Returns:
            The resource itself.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release everything; idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
