# SPDX-License-Identifier: BSD-3-Clause
"""Applications attaching to a running mtpd over its app socket."""
import os
import pwd
import signal
import subprocess
import sys
import time

from framework import app_client
from framework.daemon import Daemon


def null_daemon(name):
    return Daemon(name, ports=[{"name": "n0", "device": "net_null0"}])


def wait_log(d, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in d.read_log():
            return
        time.sleep(0.05)
    raise AssertionError(f"mtpd {d.name}: no log line with {text!r} in {timeout} s:\n{d.log[-2000:]}")


class TestApp:
    def test_an_application_attaches_and_its_death_is_noticed(self):
        """Steps: start mtpd; a Python process attaches with two channels
        (the exchange done by hand, not through libmtp), maps the region it
        got and checks its header; then it is killed with SIGKILL.
        Verify: the reply carries a sealed region with mtpd's magic, two
        channels and the default buffers; mtpd logs the attachment with the
        process's pid; after the kill it logs the detach within 2 s; the
        daemon keeps running and stops cleanly."""
        d = null_daemon("app1").start()
        try:
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            p = subprocess.Popen([sys.executable, "-m", "framework.app_client", d.socket, "2"], cwd=here,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline().split()
            assert line[:1] == ["attached"], line
            app_id, region_bytes, channels = int(line[1]), int(line[2]), int(line[3])
            assert channels == 2
            assert region_bytes > 4096 * 2048, "the default 4096 buffers of 2 KiB"
            wait_log(d, f"application {app_id} (pid {p.pid}, uid {os.getuid()}): attached")
            assert d.telemetry("/mtp/apps")["attached_now"] == 1
            p.send_signal(signal.SIGKILL)
            p.wait()
            wait_log(d, f"application {app_id} (pid {p.pid}, uid {os.getuid()}): detached", timeout=2.0)
            time.sleep(0.05)  # the gauge is copied after the poll that logged the detach
            assert d.telemetry("/mtp/apps")["attached_now"] == 0, "back at its starting value"
            assert d.proc.poll() is None
        finally:
            d.stop()
        assert d.exit_code == 0
        assert d.final["apps"] == {"attached_now": 0, "attached": 1, "detached": 1, "refused": 0, "timed_out": 0,
                                   "shed": 0}, d.final["apps"]

    def test_a_broken_request_is_refused_with_a_reason(self):
        """Steps: attach by hand with another layout version, then with a
        bad magic, then connect and send nothing for 2 s. Verify: replies
        layout_mismatch (its reason names the versions), bad_request, and
        timeout, none with a region; mtpd logs each and keeps serving: a
        good attach afterwards works, and mtpd's heartbeat in its region
        counts up."""
        d = null_daemon("app2").start()
        try:
            status, reason, fds, _, greeting, s = app_client.attach(d.socket, app_client.request(version=99))
            assert greeting.startswith("MTPD 1 ") and "node=app2" in greeting, greeting
            assert (status, fds) == ("layout_mismatch", []), (status, reason)
            assert f"layout version 99 requested, mtpd has {app_client.LAYOUT_VERSION}" in reason, reason
            s.close()
            status, reason, fds, _, _, s = app_client.attach(d.socket, app_client.request(magic=0x12345678))
            assert (status, fds) == ("bad_request", []), (status, reason)
            s.close()
            status, reason, fds, _, _, s = app_client.attach(d.socket, b"", timeout=5.0)
            assert (status, fds) == ("timeout", []), (status, reason)
            s.close()
            wait_log(d, "layout_mismatch: shared-memory layout version 99 requested")
            wait_log(d, "bad_request: not an attach request (bad magic)")
            wait_log(d, "timeout: no attach request within 2 s")
            status, reason, fds, app_id, _, s = app_client.attach(d.socket)
            assert status == "ok" and len(fds) == 3, (status, reason)
            h = app_client.region_header(fds[0])
            assert h["magic"] == app_client.REGION_MAGIC and h["channel_count"] == 1 and h["sealed"], h
            assert h["mapped_bytes"] >= h["region_bytes"] and h["tx_buffers"] == h["buffer_count"] // 2, h
            beat = app_client.daemon_heartbeat(fds[0])
            time.sleep(0.5)  # ~50 beats on a quiet machine; 5 leave room for a loaded one
            assert app_client.daemon_heartbeat(fds[0]) >= beat + 5, "mtpd's heartbeat (every ~10 ms) stood still"
            for fd in fds:
                os.close(fd)
            s.close()
            wait_log(d, f"application {app_id} (pid {os.getpid()}, uid {os.getuid()}): detached")
        finally:
            d.stop()
        assert d.exit_code == 0
        apps = d.final["apps"]
        assert (apps["refused"], apps["timed_out"], apps["attached"], apps["detached"]) == (2, 1, 1, 1), apps

    def test_only_listed_users_may_attach(self):
        """Steps: mtpd with app.users [nobody] and a socket anyone may open
        (mode 0666); root attaches; then a process running as nobody does.
        Verify: root is refused (not_allowed, the reason names its uid, no
        region); nobody attaches and gets its region; both logged with the
        uid the kernel reported."""
        d = null_daemon("app3")
        d.config["app"].update({"users": ["nobody"], "mode": "0666"})
        d.start()
        try:
            status, reason, fds, _, _, s = app_client.attach(d.socket)
            s.close()
            assert (status, fds) == ("not_allowed", []), (status, reason)
            assert f"user {os.getuid()} is not allowed to attach" in reason, reason
            wait_log(d, f"uid {os.getuid()}): not_allowed")
            nobody = pwd.getpwnam("nobody").pw_uid
            with open(app_client.__file__) as f:
                source = f.read()
            p = subprocess.Popen([sys.executable, "-c", source, d.socket], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.setuid(nobody),
                                 env=dict(os.environ, MTP_LAYOUT_VERSION=str(app_client.LAYOUT_VERSION)))
            try:
                line = p.stdout.readline().split()
                assert line[:1] == ["attached"], line
                wait_log(d, f"application {line[1]} (pid {p.pid}, uid {nobody}): attached")
            finally:
                p.kill()
                p.wait()
        finally:
            d.stop()
        assert d.exit_code == 0

    def test_a_killed_daemon_is_noticed_and_a_new_one_takes_attachments(self):
        """Steps: an application attaches (by hand) and keeps its socket
        and region; mtpd is killed with SIGKILL; a new mtpd starts on the
        same socket path; the application attaches again. Verify: the
        application reads end-of-file on its socket within 1 s of the kill
        (its mapping of the old region stays readable: the memory lives
        while it is mapped); the new daemon replaces the stale socket and
        the second attach gets a fresh region."""
        d = null_daemon("app4").start()
        status, reason, fds, first_id, _, s = app_client.attach(d.socket)
        assert status == "ok", reason
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        s.settimeout(2.0)
        assert s.recv(1) == b"", "the socket should read end-of-file once mtpd is gone"
        noticed_s = time.monotonic() - t0
        assert noticed_s < 1.0, noticed_s
        print(f"daemon death noticed by the application in {noticed_s * 1000:.1f} ms")
        assert app_client.region_header(fds[0])["magic"] == app_client.REGION_MAGIC
        for fd in fds:
            os.close(fd)
        s.close()
        d.forget()
        d2 = null_daemon("app4").start()
        try:
            status, reason, fds, _, _, s = app_client.attach(d2.socket)
            assert status == "ok" and len(fds) == 3, (status, reason)
            assert app_client.region_header(fds[0])["channel_count"] == 1
            for fd in fds:
                os.close(fd)
            s.close()
        finally:
            d2.stop()
        assert d2.exit_code == 0
