"""What the telemetry wiring costs when OpenTelemetry is not installed, in instructions.

Wall-clock throughput on a shared 2-core machine moves by 10-20 % from run to run, so it can
neither show nor rule out a 2 % difference. This counts CPU instructions instead, with
valgrind's callgrind, which gives the same count whatever else the machine is doing:

* ``wired``: hutch as it is, with ``import opentelemetry`` blocked;
* ``stripped``: a copy of ``src/`` with the per-message telemetry code of the measured paths
  removed (the patch below; it fails loudly if the source no longer matches).

Each client workload (publish without confirms, consume + ack with prefetch 100, sequential
RPC calls against a server in another process) runs at two message counts, and the
difference divided by the difference in counts is the cost per message, start-up excluded.
The broker is the same for both. Needs ``valgrind`` (Debian package) and a broker::

    python benchmarks/telemetry_ab.py --url amqp://guest:guest@localhost:5672/ [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Removed in the stripped copy: (file under src/hutch, old text, new text).
STRIP = [
    (
        "_publisher.py",
        """        tel = self._conn.telemetry
        if not tel.enabled:
            self._send_maybe_delayed(message, timeout, delay_ms)
            return message.message_id or ""
""",
        """        self._send_maybe_delayed(message, timeout, delay_ms)
        return message.message_id or ""
        tel = self._conn.telemetry
""",
    ),
    (
        "_subscriber.py",
        """            if not traced:
                ok = self._handle(handler, call_with_message, delivery, NOOP_SCOPE)
            else:""",
        """            ok = self._handle(handler, call_with_message, delivery, NOOP_SCOPE)
            if False:""",
    ),
    (
        "_subscriber.py",
        """        delivery.ack()
        if span is not NOOP_SCOPE:  # no call per message when telemetry is off
            span.settle(Settlement.ACKED)
        return True""",
        """        delivery.ack()
        return True""",
    ),
    (
        "_rpc_client.py",
        """        self._check_may_block()
        if self._conn.telemetry.enabled:
            return self._traced(
                procedure,
                lambda span: self._start(
                    procedure, args, kwargs, timeout, _decode_untyped, direct=True, span=span
                ),
            )
        return self._wait(""",
        """        self._check_may_block()
        return self._wait(""",
    ),
    (
        "_rpc_client.py",
        """        if span is not None:
            headers = span.inject(headers)
        props = basic_properties(""",
        """        props = basic_properties(""",
    ),
]

BLOCK_OTEL = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError("blocked: measuring hutch without opentelemetry")
        return None
sys.meta_path.insert(0, _Block())
"""

CLIENT = """
import sys
import hutch
op, n, url, queue = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
assert "opentelemetry" not in sys.modules
with hutch.connect(url) as conn:
    if op == "publish":
        with hutch.Publisher(conn, routing_key=queue, model=bytes, confirm=False) as pub:
            for _ in range(n):
                pub.publish(b"x" * 100)
            pub.flush()
    elif op == "consume":
        sub = hutch.Subscriber(conn, queue=queue, model=bytes, prefetch=100)
        sub.run(lambda body: None, limit=n)
        sub.close()
    elif op == "rpc":
        with hutch.RpcClient(conn, queue=queue) as client:
            for i in range(n):
                assert client.call("add", i, 1) == i + 1
"""

SETUP = """
import sys
import hutch
what, url, queue = sys.argv[1], sys.argv[2], sys.argv[3]
if what == "declare":
    with hutch.connect(url) as conn:
        conn.channel().declare([hutch.Queue(queue, durable=False, auto_delete=False)])
elif what == "fill":
    n = int(sys.argv[4])
    with hutch.connect(url) as conn, hutch.Publisher(conn, routing_key=queue, model=bytes) as pub:
        for start in range(0, n, 1000):
            pub.publish_many([b"x" * 100] * min(1000, n - start)).raise_for_failures()
elif what == "delete":
    with hutch.connect(url) as conn:
        conn.channel().delete_queue(queue)
elif what == "serve":
    server = hutch.RpcServer(url, queue=hutch.Queue(queue, durable=False, auto_delete=True))

    @server.procedure
    def add(x: int, y: int) -> int:
        return x + y

    server.start()
    print("ready", flush=True)
    sys.stdin.read()
    server.close()
"""


def stripped_copy(into: Path) -> Path:
    """A copy of src/ with the per-message telemetry code removed."""
    src = into / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    for name, old, new in STRIP:
        path = src / "hutch" / name
        text = path.read_text()
        if text.count(old) != 1:
            sys.exit(
                f"{path.name} no longer has the telemetry code this script strips: update STRIP"
            )
        path.write_text(text.replace(old, new))
    return src


def instructions(python: str, env: dict[str, str], script: Path, args: list[str]) -> int:
    """Instructions the process executed, by callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/cg.out",
                python,
                str(script),
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not found:
        sys.exit(f"the client failed: {out.stderr[-2000:]}")
    return int(found.group(1))


def per_message(
    python: str, env: dict[str, str], work: Path, url: str, op: str, counts: tuple[int, int]
) -> float:
    """Instructions per message of ``op``: the difference between two message counts."""
    setup = [python, str(work / "setup.py")]
    results = []
    for n in counts:
        queue = f"bench.telemetry-ab.{uuid.uuid4().hex[:8]}"
        server = None
        if op == "rpc":
            server = subprocess.Popen(
                [*setup, "serve", url, queue],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert server.stdout is not None
            server.stdout.readline()
        else:
            subprocess.run([*setup, "declare", url, queue], env=env, check=True)
            if op == "consume":
                subprocess.run([*setup, "fill", url, queue, str(n)], env=env, check=True)
        try:
            results.append(instructions(python, env, work / "client.py", [op, str(n), url, queue]))
        finally:
            if server is not None:
                assert server.stdin is not None
                server.stdin.close()
                server.wait(30)
            else:
                subprocess.run([*setup, "delete", url, queue], env=env, check=True)
    return (results[1] - results[0]) / (counts[1] - counts[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--url", default=os.environ.get("HUTCH_URL"), required="HUTCH_URL" not in os.environ
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ops", default="publish,consume,rpc")
    parser.add_argument("--counts", default="500,2500", help="the two message counts")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind: apt-get install valgrind")
    low, high = (int(c) for c in args.counts.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "block").mkdir()
        (work / "block" / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_OTEL))
        (work / "client.py").write_text(CLIENT)
        (work / "setup.py").write_text(SETUP)
        sides = {"wired": ROOT / "src", "stripped": stripped_copy(work)}
        print(
            f"instructions per message (callgrind, counts {low} and {high}, {args.repeats} repeats)"
        )
        print(f"{'workload':10} {'stripped':>12} {'wired':>12} {'wired/stripped':>15}")
        for op in args.ops.split(","):
            got: dict[str, list[float]] = {"wired": [], "stripped": []}
            for _ in range(args.repeats):
                for side, src in sides.items():
                    env = {**os.environ, "PYTHONPATH": f"{work / 'block'}{os.pathsep}{src}"}
                    got[side].append(
                        per_message(sys.executable, env, work, args.url, op, (low, high))
                    )
            s, w = statistics.median(got["stripped"]), statistics.median(got["wired"])
            print(
                f"{op:10} {s:12,.0f} {w:12,.0f} {w / s:15.3f}   (each run: "
                f"{', '.join(f'{x:,.0f}' for x in got['stripped'])} / {', '.join(f'{x:,.0f}' for x in got['wired'])})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
