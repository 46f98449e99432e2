"""The publisher's message ids: 32 hex digits, unique, and never repeated by a forked child."""

from __future__ import annotations

import os
import re
import sys

from hutch._publisher import _message_id
from tests import forkserver


def test_an_id_is_32_hex_digits_and_ids_do_not_repeat() -> None:
    ids = [_message_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


#: forks in a program of its own: pytest's process has threads, and Python 3.12 warns
#: about forking one (an error here)
FORKING = """if True:
    import os
    from hutch._publisher import _message_id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, " ".join(_message_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        print(pipe.read())
    os.waitpid(pid, 0)
    print(" ".join(_message_id() for _ in range(50)))
"""


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    # a worker process forked from a publisher's process must not send its parent's ids
    result = forkserver.run([sys.executable, "-c", FORKING], env=dict(os.environ), timeout=30)
    assert result.returncode == 0, result.stderr
    child, parent = (set(line.split()) for line in result.stdout.splitlines())
    assert len(child) == len(parent) == 50 and not child & parent
