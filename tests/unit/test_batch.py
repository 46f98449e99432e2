"""The Batch that settles the messages of publish_many and Publisher.batch() together."""

from __future__ import annotations

import threading

import pytest

from hutch._amqp import Batch


def test_sealed_batch_of_zero_is_done_at_once() -> None:
    assert Batch(0).future.done()


def test_batch_resolves_when_sealed_and_every_message_settled() -> None:
    batch = Batch(sealed=False)
    batch.add(3)
    batch.settle(0, None)
    batch.settle(2, ValueError("nacked"))
    assert not batch.future.done()
    batch.settle(1, None)
    assert not batch.future.done()  # more may still be added
    batch.seal()
    assert batch.future.done()
    assert list(batch.errors) == [2] and batch.unsettled == 0
    with pytest.raises(RuntimeError, match="sealed"):
        batch.add()


def test_wait_below_returns_once_enough_settled() -> None:
    batch = Batch(sealed=False)
    batch.add(10)
    assert not batch.wait_below(5, 0.01)

    def settle_six() -> None:
        for i in range(6):
            batch.settle(i, None)

    settler = threading.Thread(target=settle_six)
    settler.start()
    assert batch.wait_below(5, 5.0)
    settler.join()
    assert batch.unsettled == 4
