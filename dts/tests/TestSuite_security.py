# SPDX-License-Identifier: BSD-3-Clause
"""Native security between real daemons over net_memif (docs/security.md,
protocol.md 9): sealed transfers 1->1 and 1->3 with a member leaving and
the group rekeyed, traffic keys rolling mid-transfer, cookies demanded on
every initiation, and the handshakes that must fail (an unknown peer, a
wrong key, a plaintext client). Keys are made by `mtpd keygen`."""
import contextlib
import os
import signal
import time

import pytest

from framework.daemon import Daemon
from framework.keys import Keyring

MIB = 1 << 20
SOCKETS = "/run/mtpd-dts"


@pytest.fixture
def keys():
    k = Keyring()
    yield k
    k.remove()


def sink(keys, name, node_id, k, security=None, peers_of=(1,)):
    """A secured sink on memif link k, accepting the source (id 1)."""
    device = f"net_memif0,role=server,id=0,socket={SOCKETS}/sec-{k}.sock,socket-abstract=no"
    peers = [keys.peer({"id": p, "ip": f"10.91.{k}.1", "mac": f"02:00:00:00:1b:{k:02x}", "port": "m0"}, p)
             for p in peers_of]
    return Daemon(name, node_id=node_id, test={"sink": {"enabled": True}}, peers=peers,
                  security=security if security is not None else keys.security(node_id),
                  ports=[{"name": "m0", "device": device, "mac": f"02:00:00:00:1a:{k:02x}",
                          "addresses": [f"10.91.{k}.2/24"]}],
                  extra={"memory": {"size_mb": 512, "mbufs": 32767}})


def source(keys, name, links, total_bytes, security=None, key_of=None, **source_extra):
    """The secured source (id 1): one memif client port per member (link k
    <-> member 1 + k). key_of maps a member id to the key id whose public
    key the source believes it has (a wrong key, on purpose)."""
    ports, peers = [], []
    for k in links:
        ports.append({"name": f"m{k}", "mac": f"02:00:00:00:1b:{k:02x}", "addresses": [f"10.91.{k}.1/24"],
                      "device": f"net_memif{k},role=client,id=0,socket={SOCKETS}/sec-{k}.sock,socket-abstract=no"})
        member = 1 + k
        peers.append(keys.peer({"id": member, "ip": f"10.91.{k}.2", "mac": f"02:00:00:00:1a:{k:02x}",
                                "port": f"m{k}"}, (key_of or {}).get(member, member)))
    test = {"source": dict({"enabled": True, "members": [1 + k for k in links], "total_bytes": total_bytes,
                            "message_bytes": 1024}, **source_extra)}
    return Daemon(name, node_id=1, ports=ports, peers=peers, test=test,
                  security=security if security is not None else keys.security(1),
                  extra={"memory": {"size_mb": 512, "mbufs": 32767}})


def wait_counter(d, name, at_least, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.counter(name) >= at_least:
            return
        time.sleep(0.1)
    raise AssertionError(f"{d.name}: {name} = {d.counter(name)}, expected at least {at_least} in {timeout} s")


def transfer(s, make_source, timeout):
    """Starts sink s, then the source make_source() gives, and waits until
    the source has every byte stable; stops both, also on failure.
    Returns the source (stopped)."""
    s.start()
    try:
        src = make_source().start()
        try:
            wait_counter(src, "source_complete_us", 1, timeout)
        finally:
            src.stop()
    finally:
        s.stop()
    return src


def check_sealed_sink(d, total):
    assert d.exit_code == 0
    assert d.worker_total("sink_bytes") == total
    assert d.worker_total("sink_verify_errors") == 0
    assert d.worker_total("sink_order_errors") == 0
    assert d.worker_total("handshakes_completed") == 1
    assert d.worker_total("packets_opened") > total // 1400
    assert d.worker_total("auth_failed") == 0
    assert d.worker_total("replayed") == 0


class TestSecurity:
    def test_sealed_transfer_1_to_1(self, keys):
        """Steps: a secured sink and a secured source (keys from mtpd
        keygen, each naming the other's public key) over memif; 32 MiB in
        1 KiB messages. Verify: every byte stable and verified in order at
        the sink; one handshake each side; every packet sealed and opened
        (none refused, none replayed); the group key reached the sink."""
        total = 32 * MIB
        s = sink(keys, "sec-s1", 2, 1)
        src = transfer(s, lambda: source(keys, "sec-src", [1], total), 120)
        assert src.exit_code == 0 and src.worker_total("source_bytes_stable") == total
        assert src.worker_total("handshakes_completed") == 1
        assert src.worker_total("handshakes_initiated") >= 1
        assert src.worker_total("packets_sealed") > total // 1400
        assert src.worker_total("packets_opened") > 0
        assert src.worker_total("auth_failed") == 0
        assert src.worker_total("members_left") == 0
        check_sealed_sink(s, total)
        assert s.worker_total("group_keys_installed") == 1
        assert s.worker_total("packets_sealed") > 0

    def test_sealed_1_to_3_a_member_leaves_and_the_group_is_rekeyed(self, keys):
        """Steps: three secured sinks on their own memif links and a
        source sending 64 MiB to the group at 8 MiB/s; once a quarter is
        stable, sink 3 stops (SIGTERM: it closes, sealed). Verify: the
        source reports the member left and hands out a new group key
        (group_rekeys 1); sinks 1 and 2 installed two group keys, sink 3
        only the first; sinks 1 and 2 received every byte, verified, in
        order; the source has every byte stable at the members still
        there."""
        total = 64 * MIB
        sinks = [sink(keys, f"sec-g{k}", 1 + k, k) for k in (1, 2, 3)]
        for d in sinks:
            d.start()
        src = None
        try:
            src = source(keys, "sec-gsrc", [1, 2, 3], total, rate_bytes_per_s=8 * MIB).start()
            wait_counter(src, "source_bytes_stable", total // 4, 60)
            sinks[2].stop()
            wait_counter(src, "members_left", 1, 20)
            wait_counter(src, "source_complete_us", 1, 120)
        finally:
            if src:
                src.stop()
            for d in sinks[:2]:
                d.stop()
            if sinks[2].proc.poll() is None:
                sinks[2].stop()
        assert src.exit_code == 0
        assert src.worker_total("members_left") == 1
        assert src.worker_total("group_rekeys") == 1
        assert src.worker_total("handshakes_completed") == 3
        assert src.worker_total("source_bytes_stable") == total
        for d in sinks[:2]:
            check_sealed_sink(d, total)
            assert d.worker_total("group_keys_installed") == 2
        left = sinks[2]
        assert left.worker_total("group_keys_installed") == 1
        assert 0 < left.worker_total("sink_bytes") < total
        assert left.worker_total("auth_failed") == 0

    def test_keys_roll_and_group_keys_age_during_a_transfer(self, keys):
        """Steps: a sink and a source both set to roll their traffic keys
        every 128 packets or 1 s (rekey_after_packets, rekey_after_s), 32
        MiB at 8 MiB/s over memif. Verify: the sink rolled its pairwise
        key by count (about one roll per 128 packets it sealed), the source
        by age (its pairwise packets are few), the source handed out a new
        group key about every 128 group packets and the sink installed
        them; every byte arrived verified, no packet was refused, replayed,
        lacked its key (but for a lost GROUP_KEY, at most 1%): rolls never
        stall or lose traffic."""
        total = 32 * MIB
        roll = {"rekey_after_packets": 128, "rekey_after_s": 1}
        s = sink(keys, "sec-r1", 2, 1, security=keys.security(2, **roll))
        src = transfer(s, lambda: source(keys, "sec-rsrc", [1], total, security=keys.security(1, **roll),
                                         rate_bytes_per_s=8 * MIB), 120)
        assert src.worker_total("source_bytes_stable") == total
        names = ("packets_sealed", "packets_opened", "key_rolls", "group_rekeys", "group_keys_installed", "no_key",
                 "mtp_retransmitted")
        print({n: (src.worker_total(n), s.worker_total(n)) for n in names})
        rekeys = src.worker_total("group_rekeys")
        assert rekeys >= src.worker_total("packets_sealed") // 128 // 2
        assert s.worker_total("key_rolls") >= s.worker_total("packets_sealed") // 128 // 2
        assert src.worker_total("key_rolls") >= 1
        # A group packet meets no key only behind a lost GROUP_KEY (memif
        # may drop under load): rare, never a stall.
        assert s.worker_total("no_key") * 100 <= s.worker_total("packets_opened")
        # An epoch superseded before its lost GROUP_KEY was repaired is
        # never installed.
        assert (rekeys + 1) * 9 // 10 <= s.worker_total("group_keys_installed") <= rekeys + 1
        check_sealed_sink(s, total)

    def test_cookies_when_every_initiation_must_prove_its_address(self, keys):
        """Steps: a sink that demands a cookie for every initiation
        (cookie_after_handshakes_per_s: 0) and a source sending 4 MiB.
        Verify: the sink answered the first initiation with a cookie reply
        and kept no session for it (hs_bad_mac2 1, cookies_sent 1); the
        source's next initiation carried the mac2 and completed; the
        transfer is whole."""
        total = 4 * MIB
        s = sink(keys, "sec-c1", 2, 1, security=keys.security(2, cookie_after_handshakes_per_s=0))
        src = transfer(s, lambda: source(keys, "sec-csrc", [1], total), 60)
        assert s.worker_total("cookies_sent") >= 1
        assert s.worker_total("hs_bad_mac2") == s.worker_total("cookies_sent")
        assert s.worker_total("sessions_opened") == 1
        assert src.worker_total("handshakes_initiated") >= 2
        check_sealed_sink(s, total)

    @pytest.mark.parametrize("case", ["unknown_peer", "wrong_key", "plaintext_client"])
    def test_a_handshake_that_must_fail(self, keys, case):
        """Steps: a secured sink and a source that (unknown_peer) has a key
        the sink's config does not list, (wrong_key) names a wrong public
        key for the sink, or (plaintext_client) runs without security.
        Verify: the sink opens no session and the matching counter moved
        (hs_unknown_peer, hs_bad_mac1, auth_failed); nothing reached the
        sink; the source's member times out (members_left 1) and nothing
        was stable."""
        total = 1 * MIB
        if case == "unknown_peer":
            keys.make(1)
            s = sink(keys, "sec-f1", 2, 1, peers_of=(9,))
            s.config["peers"][0]["id"] = 1  # id 1, but node 9's key
        else:
            s = sink(keys, "sec-f1", 2, 1)
        s.start()
        try:
            if case == "wrong_key":
                keys.make(7)
                src = source(keys, "sec-fsrc", [1], total, key_of={2: 7})
            elif case == "plaintext_client":
                src = source(keys, "sec-fsrc", [1], total, security={"mode": "plaintext"})
            else:
                src = source(keys, "sec-fsrc", [1], total)
            src.start()
            try:
                wait_counter(src, "members_left", 1, 20)
            finally:
                src.stop()
        finally:
            s.stop()
        counter = {"unknown_peer": "hs_unknown_peer", "wrong_key": "hs_bad_mac1",
                   "plaintext_client": "auth_failed"}[case]
        assert s.worker_total(counter) >= 1
        assert s.worker_total("sessions_opened") == 0
        assert s.worker_total("handshakes_completed") == 0
        assert s.worker_total("sink_bytes") == 0
        assert src.worker_total("source_bytes_stable") == 0
        if case != "plaintext_client":
            assert src.worker_total("handshakes_completed") == 0
            assert src.worker_total("handshakes_failed") == 1


class TestKeys:
    """Key files at start-up (docs/security.md "Setting it up")."""

    def run(self, tmp_path, security, check=False):
        f = tmp_path / "k.yaml"
        f.write_text("node: {name: keys}\nports:\n  - {name: n0, device: net_null0}\nmemory: {hugepages: false}\n"
                     "eal: {file_prefix: dts-keys}\napp: {socket: /run/mtpd-dts/keys.sock}\n"
                     f"security: {security}\n")
        import subprocess
        from framework.testbed import TESTBED
        args = [TESTBED["mtpd"], "--check-config" if check else "--config", str(f)]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    def test_key_files_are_checked_before_anything_starts(self, tmp_path):
        """Steps: mtpd with a key file that is missing, one readable by
        others, one holding no key; mtpd keygen over an existing file.
        Verify: each is exit 2 with one line naming the file and the fix
        (mtpd keygen, chmod 600), before EAL; keygen never overwrites."""
        import os
        import subprocess
        from framework.testbed import TESTBED
        key = tmp_path / "node.key"
        r = self.run(tmp_path, f"{{key_file: {key}}}")
        assert r.returncode == 2 and f"security.key_file {key} does not exist: create it with `mtpd keygen {key}`" \
            in r.stderr, r.stderr
        assert "EAL" not in r.stderr
        public = subprocess.run([TESTBED["mtpd"], "keygen", str(key)], capture_output=True, text=True, check=True)
        assert len(public.stdout.strip()) == 44
        assert os.stat(key).st_mode & 0o777 == 0o600
        again = subprocess.run([TESTBED["mtpd"], "keygen", str(key)], capture_output=True, text=True)
        assert again.returncode != 0 and "exist" in again.stderr, again.stderr
        same = subprocess.run([TESTBED["mtpd"], "pubkey", str(key)], capture_output=True, text=True, check=True)
        assert same.stdout == public.stdout
        assert self.run(tmp_path, f"{{key_file: {key}}}", check=True).returncode == 0
        os.chmod(key, 0o644)
        r = self.run(tmp_path, f"{{key_file: {key}}}")
        assert r.returncode == 2 and "chmod 600" in r.stderr and str(key) in r.stderr, r.stderr
        r = self.run(tmp_path, f"{{key_file: {key}}}", check=True)
        assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
        os.chmod(key, 0o600)
        key.write_text("not a key\n")
        r = self.run(tmp_path, f"{{key_file: {key}}}")
        assert r.returncode == 2 and str(key) in r.stderr, r.stderr

    def test_generate_key_makes_one_on_first_start_only(self, tmp_path):
        """Steps: a config with generate_key and a key file in a directory
        that does not exist; start it twice. Verify: the first start makes
        the directory (0700) and a 0600 key and prints its public key; the
        second keeps the same key (mtpd pubkey agrees)."""
        import os
        import subprocess
        from framework.testbed import TESTBED
        key = tmp_path / "state" / "node.key"
        d = Daemon("keys-gen", ports=[{"name": "n0", "device": "net_null0"}],
                   security={"mode": "required", "key_file": str(key), "generate_key": True}).start()
        d.stop()
        assert "generated a new key pair in" in d.log and str(key) in d.log
        assert os.stat(key).st_mode & 0o777 == 0o600
        assert os.stat(key.parent).st_mode & 0o777 == 0o700
        public = subprocess.run([TESTBED["mtpd"], "pubkey", str(key)], capture_output=True, text=True, check=True)
        assert public.stdout.strip() in d.log
        d2 = Daemon("keys-gen", ports=[{"name": "n0", "device": "net_null0"}],
                    security={"mode": "required", "key_file": str(key), "generate_key": True}).start()
        d2.stop()
        assert "generated a new key pair" not in d2.log
        assert subprocess.run([TESTBED["mtpd"], "pubkey", str(key)], capture_output=True, text=True,
                              check=True).stdout == public.stdout


@contextlib.contextmanager
def secured_pair(keys, name, net, mac):
    """Secured daemons a (node 1) and b (node 2), each naming the other by
    its key, joined by memif (addresses net.1 and net.2, MACs 02:..:mac:0N);
    yields (a, b) and stops both."""
    from TestSuite_libmtp import SOCKETS as LIB_SOCKETS
    os.makedirs(LIB_SOCKETS, exist_ok=True)
    device = f"net_memif0,role=server,id=0,socket={LIB_SOCKETS}/{name}.sock,socket-abstract=no"
    memory = {"memory": {"size_mb": 256, "mbufs": 16383}}

    def node(i, role):
        other = 3 - i
        return Daemon(f"{name}-{'ab'[i - 1]}", node_id=i, security=keys.security(i), extra=memory,
                      peers=[keys.peer({"id": other, "ip": f"{net}.{other}", "mac": f"02:00:00:00:{mac}:0{other}",
                                        "port": "m0"}, other)],
                      ports=[{"name": "m0", "device": device.replace("server", role),
                              "mac": f"02:00:00:00:{mac}:0{i}", "addresses": [f"{net}.{i}/24"]}])
    b = node(2, "server").start()
    a = None
    try:
        a = node(1, "client").start()
        yield a, b
    finally:
        if a is not None:
            a.stop()
        b.stop()


class TestApplications:
    """The API's security properties through libmtp (docs/api.md): mtp-app
    on two secured daemons joined by memif."""

    def test_expected_identities_preferences_and_the_identity_received(self, keys):
        """Steps: secured daemons a (node 1) and b (node 2); an echo
        application listens on b; from a, a ping application (1) naming
        b's public key as the key member 2 must prove and requiring
        security, (2) naming another key, (3) prohibiting security.
        Verify: (1) makes its 20 round trips, and b's listener heard
        ConnectionReceived with node 1's public key as the identity; (2)
        is refused with PEER_NOT_ALLOWED and (3) with SECURITY_MISMATCH,
        each before any packet: b accepted one connection in all."""
        from TestSuite_libmtp import App
        with secured_pair(keys, "sec-app", "10.89.0", "1c") as (a, b):
            echo = App(b, "echo", "--seconds", 60)
            echo.wait_line("LISTENING")
            ok = App(a, "ping", "--members", 2, "--count", 20, "--security", "require",
                     "--member-keys", keys.public[2])
            assert ok.finish(timeout=30) == 0, "\n".join(ok.lines)
            assert ok.summary()["msgs"] == 20
            heard = echo.wait_line("CONNECTION_RECEIVED")
            assert heard == f"CONNECTION_RECEIVED from member 1 identity {keys.public[1]}", heard
            other = keys.make(9)
            wrong = App(a, "ping", "--members", 2, "--count", 1, "--member-keys", other)
            assert wrong.finish(timeout=30) != 0
            assert any("initiate: a member's expected identity is not the public key the config allows" in line
                       for line in wrong.lines), "\n".join(wrong.lines)
            plain = App(a, "ping", "--members", 2, "--count", 1, "--security", "prohibit")
            assert plain.finish(timeout=30) != 0
            assert any("initiate: security required on a plaintext node, or prohibited on a secured one" in line
                       for line in plain.lines), "\n".join(plain.lines)
            echo.proc.send_signal(signal.SIGTERM)
            echo.finish(timeout=20)
        assert b.worker_total("sessions_opened") == 1
        assert b.worker_total("handshakes_completed") == 1
        assert a.worker_total("app_command_errors") == 2

    def test_idempotent_messages_go_as_early_data(self, keys):
        """Steps: secured daemons a (node 1) and b (node 2); a receiver on
        b; on a, a sender of 300 idempotent messages of 100 B that sends
        them right after initiate, before Ready; then a second sender of
        ordinary messages, likewise.
        Verify: the first connection's first data went as early data (a
        counted early_sent, b early_opened, the same number), every message
        arrived once, in order, verified, nothing was refused
        (auth_failed 0); the second connection sent no early data: its
        messages waited for the handshake."""
        from TestSuite_libmtp import App
        with secured_pair(keys, "sec-early", "10.88.0", "1d") as (a, b):
            for idempotent in (True, False):
                rx = App(b, "rx", "--seconds", 30)
                rx.wait_line("LISTENING")
                tx = App(a, "tx", "--members", 2, "--messages", 300, "--size", 100, "--seconds", 30,
                         *(["--idempotent"] if idempotent else []))
                assert tx.finish(timeout=40) == 0, "\n".join(tx.lines)
                assert rx.finish(timeout=40) == 0, "\n".join(rx.lines)
                s, r = tx.summary(), rx.summary()
                assert s["msgs"] == 300 and s["errors"] == 0, s
                assert r["msgs"] == 300 and r["verify_errors"] == 0 and r["order_errors"] == 0, r
                if idempotent:
                    early = a.counter("early_sent")
                    print("early data:", early, "sent,", b.counter("early_opened"), "opened")
                    assert early >= 1, "no early data went"
                    assert b.counter("early_opened") == early
            assert a.counter("early_sent") == early, "ordinary messages went as early data"
        assert a.worker_total("auth_failed") == 0 and b.worker_total("auth_failed") == 0
        assert b.worker_total("handshakes_completed") == 2
