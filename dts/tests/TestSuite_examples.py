# SPDX-License-Identifier: BSD-3-Clause
"""The libmtp examples (shm-api/examples, walked through in docs/api.md)
run against real daemons, their output checked for content.

Topology: one namespace with a kernel bridge; four daemons (nodes 1 to 4),
each on its own net_tap port on the bridge, each knowing the other three
as peers; node 1 also knows the group `trio` (2, 3, 4). The examples run
outside the namespace: an application reaches its daemon through the
daemon's app socket, a path in the file system. meson builds the examples
into build/shm-api/examples/; this suite builds nothing."""
import contextlib
import hashlib
import os
import random
import re
import subprocess
import tempfile
import time

from framework.bridge import bridged_taps
from framework.testbed import TESTBED

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(TESTBED["mtpd"])), "shm-api", "examples")
NODES = (1, 2, 3, 4)


def addr(i):
    return f"10.97.0.{i}"


@contextlib.contextmanager
def four_daemons(name):
    """Yields {node id: Daemon} for nodes 1..4 on one bridge; node 1 also
    knows the group `trio` (2, 3, 4). Every daemon is stopped at the end
    and must exit 0 (a daemon that died is reported with its log)."""
    with bridged_taps(name) as start:
        daemons = {}
        try:
            for i in NODES:
                peers = [{"id": j, "ip": addr(j), "mac": f"02:00:00:00:0d:{j:02x}"} for j in NODES if j != i]
                extra = {"groups": [{"name": "trio", "members": [2, 3, 4], "threshold": 0}]} if i == 1 else {}
                daemons[i] = start(f"ex{name}{i}", i, {"addresses": [f"{addr(i)}/24"]},
                                   {"size_mb": 256, "mbufs": 8191}, peers=peers, extra=extra)
            yield daemons
        finally:
            dead = []
            for d in daemons.values():
                if d.proc.poll() is None:
                    d.stop()
                else:
                    dead.append(f"mtpd {d.name} died with {d.proc.returncode}:\n{d.read_log()[-3000:]}")
                    d.forget()
        assert not dead, "\n".join(dead)
        for d in daemons.values():
            assert d.exit_code == 0, f"mtpd {d.name} exited with {d.exit_code}:\n{d.log[-3000:]}"


def log_mark(d):
    """Where the daemon's log ends now (for wait_log's `since`)."""
    return len(d.read_log())


def wait_log(d, text, since=0, timeout=10.0):
    """Waits for `text` in the daemon's log after position `since`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in d.read_log()[since:]:
            return
        time.sleep(0.05)
    raise AssertionError(f"mtpd {d.name}: no log line with {text!r} in {timeout} s:\n{d.log[since:][-3000:]}")


class Example:
    """An example program attached to `daemon`; output collected at the end."""

    def __init__(self, daemon, program, *args):
        self.cmd = [os.path.join(EXAMPLES, program), "--socket", daemon.socket, *map(str, args)]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out = self.err = ""
        self.collected = False

    def finish(self, timeout=60):
        """Waits for the exit; returns (exit code, stdout lines)."""
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.describe()}\ndid not finish in {timeout} s")
        self.collected = True
        return self.proc.returncode, self.out.splitlines()

    def describe(self):
        return f"$ {' '.join(self.cmd)}\n--- stdout\n{self.out}--- stderr\n{self.err}"

    def kill(self):
        """Ends the program if it still runs, keeping what it printed."""
        if not self.collected:
            if self.proc.poll() is None:
                self.proc.kill()
            self.out, self.err = self.proc.communicate()
            self.collected = True


@contextlib.contextmanager
def examples(daemons):
    """A list to put Examples in. Whatever still runs at the end is killed;
    when the test fails, the output of every example and the end of every
    daemon's log are added to the failure."""
    running = []
    try:
        yield running
    except AssertionError as e:
        for x in running:
            x.kill()
        context = "\n".join(x.describe() for x in running)
        logs = "\n".join(f"--- mtpd {d.name}\n" + "\n".join(d.read_log().splitlines()[-12:]) for d in daemons.values())
        raise AssertionError(f"{e}\n=== every example:\n{context}\n=== daemon logs:\n{logs}") from None
    finally:
        for x in running:
            x.kill()


def listening(d, app, since):
    """Waits until the daemon serves the app's listener (mtp_listen has no
    success event: a refusal would come as CommandError)."""
    wait_log(d, "listening (handle", since)
    assert app.proc.poll() is None, app.describe()


class TestExamples:
    def test_file_sender_to_three_receivers(self):
        """Steps: file_receiver on nodes 2, 3 and 4, each told the length
        and SHA-256 of a 3 MiB + 777 B file of random bytes; file_sender on
        node 1 sends it to members 2,3,4 in 1200 B messages; then again,
        a 1 MiB file to the config's group `trio`.
        Verify: every program exits 0; each receiver named its daemon's
        configured node id (mtp_node_id), got every byte, in order
        (offsets checked by the receiver), in ceil(size / 1200)
        messages from member 1, with the file's SHA-256; the sender saw
        every message Sent, stable at all three members, then Closed."""
        rng = random.Random(2026)
        with four_daemons("file") as d, examples(d) as running:
            for size, target in ((3 * 1024 * 1024 + 777, ["--members", "2,3,4"]), (1024 * 1024, ["--group", "trio"])):
                data = rng.randbytes(size)
                digest = hashlib.sha256(data).hexdigest()
                with tempfile.NamedTemporaryFile(prefix="mtp-example-") as f:
                    f.write(data)
                    f.flush()
                    receivers, marks = {}, {i: log_mark(d[i]) for i in (2, 3, 4)}
                    for i in (2, 3, 4):
                        receivers[i] = Example(d[i], "file_receiver", "--expect-bytes", size, "--sha256", digest)
                        running.append(receivers[i])
                    for i in (2, 3, 4):
                        listening(d[i], receivers[i], marks[i])
                    sender = Example(d[1], "file_sender", *target, f.name)
                    running.append(sender)
                    code, out = sender.finish(90)
                    assert code == 0, sender.describe()
                    messages = (size + 1199) // 1200
                    assert re.fullmatch(rf"sent {size} bytes in {messages} messages in [0-9.]+ s; "
                                        r"every message stable at 3 member\(s\); closed", out[-1]), sender.describe()
                    joined = sorted(line for line in out if line.startswith("member "))
                    assert joined == [f"member {i} joined" for i in (2, 3, 4)], sender.describe()
                    for i, r in receivers.items():
                        code, out = r.finish(30)
                        assert code == 0, r.describe()
                        assert out == [f"listening as node {d[i].config['node']['id']}", "connection from member 1",
                                       f"received {size} bytes in {messages} messages from member 1, sha256 {digest}",
                                       "OK"], r.describe()
                    # Each daemon's listener goes with its application.
                    for i in (2, 3, 4):
                        wait_log(d[i], "detached from worker lcore", marks[i])

    def test_request_reply_completes_with_t_of_n(self):
        """Steps: request_reply --serve on nodes 2, 3 and 4; a client on
        node 1 asks members 2,3,4 with threshold 2. Then the servers on
        nodes 2 and 3 only (node 4's daemon runs, but nothing listens
        there) and the same client.
        Verify: both clients exit 0 after at least 2 distinct members
        replied, each reply naming the member it came from and echoing the
        request; in the second run exactly members 2 and 3 replied and
        member 4 left the connection because it refused it. Every server
        saw the connection from node 1 close normally, and each member
        counted among the t got the request, and named its daemon's node
        id (the one its replies carry)."""
        with four_daemons("rr") as d, examples(d) as running:
            for servers in ((2, 3, 4), (2, 3)):
                srv, marks = {}, {i: log_mark(d[i]) for i in servers}
                for i in servers:
                    srv[i] = Example(d[i], "request_reply", "--serve")
                    running.append(srv[i])
                for i in servers:
                    listening(d[i], srv[i], marks[i])
                client = Example(d[1], "request_reply", "--members", "2,3,4", "--threshold", 2,
                                 "--request", f"who is there? ({len(servers)} servers)")
                running.append(client)
                code, out = client.finish(30)
                assert code == 0, client.describe()
                replies = [re.fullmatch(r"reply from member (\d+): member (\d+): "
                                        r"who is there\? \((\d) servers\)( \(again\))?", line)
                           for line in out if line.startswith("reply from")]
                assert all(replies) and all(m.group(1) == m.group(2) for m in replies), client.describe()
                done = [re.fullmatch(r"done: (\d+) of 3 members replied \(([0-9,]+)\)", line)
                        for line in out if line.startswith("done: ")]
                assert len(done) == 1 and done[0], client.describe()
                repliers = {int(m) for m in done[0].group(2).split(",")}
                assert int(done[0].group(1)) == len(repliers) >= 2 and repliers <= set(servers), client.describe()
                assert {int(m.group(1)) for m in replies} <= set(servers), client.describe()
                if servers == (2, 3):
                    assert repliers == {2, 3}, client.describe()
                    assert "member 4 left: no application listens at the peer" in out, client.describe()
                # A t-of-n close waits for t members only: a third may see
                # the CLOSE without the request, but never a bad request.
                request = f"request from member 1: who is there? ({len(servers)} servers)"
                for i, server in srv.items():
                    code, out = server.finish(30)
                    assert code == 0, server.describe()
                    assert out[:2] == [f"listening as node {i}", "connection from member 1"], server.describe()
                    assert [line for line in out if line.startswith("request")] == \
                        ([request] if i in repliers else [request] * (request in out)), server.describe()
                    assert "connection from member 1 closed" in out, server.describe()
                for i in servers:  # each daemon's listener goes with its application
                    wait_log(d[i], "detached from worker lcore", marks[i])

    def test_group_chat_among_four(self):
        """Steps: group_chat on nodes 1 to 4, each in the group 1,2,3,4,
        each saying "hello from N" 5 times; they start one after another,
        so the first ones find members that do not listen yet and retry.
        Verify: every participant named its daemon's node id first on
        stderr (it is told only the group), exits 0 and printed exactly
        the 5 lines of each of the 3 others, in order, as "<member>: hello
        from <member> (k/5)", and nothing else on stdout."""
        count = 5
        with four_daemons("chat") as d, examples(d) as running:
            chat = {}
            for i in NODES:
                chat[i] = Example(d[i], "group_chat", "--members", "1,2,3,4", "--say", f"hello from {i}",
                                  "--count", count)
                running.append(chat[i])
                time.sleep(0.3)
            for i, c in chat.items():
                code, out = c.finish(60)
                assert code == 0, c.describe()
                assert c.err.splitlines()[0] == f"* node {i} in the group 1,2,3,4", c.describe()
                for j in NODES:
                    if j == i:
                        continue
                    theirs = [line for line in out if line.startswith(f"{j}: ")]
                    assert theirs == [f"{j}: hello from {j} ({k}/{count})" for k in range(1, count + 1)], c.describe()
                assert len(out) == 3 * count, c.describe()
