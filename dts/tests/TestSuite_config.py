# SPDX-License-Identifier: BSD-3-Clause
"""mtpd's command line and config checking, as an operator meets them."""
import os
import subprocess

from framework.testbed import ROOT, TESTBED


def mtpd(*args):
    return subprocess.run([TESTBED["mtpd"], *args], capture_output=True, text=True, timeout=30)


class TestConfig:
    def test_check_config_accepts_every_example(self):
        """Steps: mtpd --check-config on each file in config/examples.
        Verify: exit 0 and '<file>: ok' for each of the 9 examples."""
        found = 0
        for dirpath, _, files in os.walk(os.path.join(ROOT, "config", "examples")):
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                r = mtpd("--check-config", path)
                assert r.returncode == 0, r.stderr
                assert r.stdout == f"{path}: ok\n"
                found += 1
        assert found == 11

    def test_broken_config_gets_precise_messages(self, tmp_path):
        """Steps: --check-config on a file with a typo'd key, a bad device and an
        out-of-range MTU. Verify: exit 2, one line per problem in line order
        with file:line:column, key path, expected and found, then a count."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("ports:\n  - {name: p0, device: eth0, mtu: 99999}\nlcores:\n  worker: [1]\n")
        r = mtpd("--check-config", str(bad))
        assert r.returncode == 2
        assert r.stdout == ""
        assert r.stderr.splitlines() == [
            f"{bad}:2:24: ports[0].device: expected a PCI address (0000:01:00.0) or a virtual device "
            "(net_tap0,iface=mtp0), found 'eth0'",
            f"{bad}:2:35: ports[0].mtu: expected an integer from 68 to 9600, found 99999",
            f"{bad}:4:3: lcores.worker: unknown key; did you mean 'workers'?",
            "mtpd: 3 problem(s) in the config",
        ]

    def test_missing_config_file(self):
        """Steps: --config on a path that does not exist. Verify: exit 2 and
        the errno text, before EAL starts (no EAL output)."""
        r = mtpd("--config", "/nonexistent/mtp.yaml")
        assert r.returncode == 2
        assert r.stderr.splitlines()[0] == "/nonexistent/mtp.yaml:1:1: cannot read config file: No such file or directory"
        assert "EAL" not in r.stderr

    def test_impossible_cpu_is_caught_before_eal(self, tmp_path):
        """Steps: a config pinning a worker to CPU 999. Verify: exit 2 with the
        lcores.cpus key named, and EAL never ran."""
        f = tmp_path / "cpu.yaml"
        f.write_text("ports:\n  - {name: p0, device: net_null0}\nlcores: {control: 0, workers: [1], cpus: {1: 999}}\n")
        r = mtpd("--config", str(f))
        assert r.returncode == 2
        assert f"{f}:3:46: lcores.cpus.1: lcore 1 would run on CPU 999" in r.stderr
        assert "EAL" not in r.stderr

    def test_cli(self):
        """Steps: --version, --help, --print-default-config, an unknown option.
        Verify: exits 0, 0, 0, 2; the default config printed is the shipped file."""
        r = mtpd("--version")
        assert r.returncode == 0 and r.stdout.startswith("mtpd 0.1.0 (DPDK 22.11")
        r = mtpd("--help")
        assert r.returncode == 0 and "--check-config FILE" in r.stdout
        r = mtpd("--print-default-config")
        with open(os.path.join(ROOT, "config", "default.yaml")) as f:
            assert r.returncode == 0 and r.stdout == f.read()
        r = mtpd("--frobnicate")
        assert r.returncode == 2 and "unknown option '--frobnicate'" in r.stderr

    def test_config_that_is_not_a_file(self, tmp_path):
        """Steps: --config on /dev/zero, /dev/urandom, a directory, a FIFO with no
        writer, and a 2 MiB file; --check-config on in_memory without hugepages.
        Verify: each exits 2 within the timeout (no unbounded read, no hang) with
        the reason named, before EAL starts."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        big = tmp_path / "big.yaml"
        big.write_text("ports:\n  - {name: p0, device: net_null0}\n" + "#" * (2 << 20))
        for path, why in (("/dev/zero", "it is not a regular file (a character device)"),
                          ("/dev/urandom", "it is not a regular file (a character device)"),
                          (str(tmp_path), "it is a directory, not a file"),
                          (str(fifo), "it is not a regular file (a FIFO)"),
                          (str(big), "a config is at most 1048576 bytes (1 MiB)")):
            r = mtpd("--config", path)
            assert r.returncode == 2, path
            assert f"{path}:1:1: cannot read config file: " in r.stderr and why in r.stderr, r.stderr
            assert "EAL" not in r.stderr
        f = tmp_path / "inmem.yaml"
        f.write_text("ports:\n  - {name: p0, device: net_null0}\nmemory: {hugepages: false}\neal: {in_memory: true}\n")
        r = mtpd("--check-config", str(f))
        assert r.returncode == 2 and "eal.in_memory: in_memory needs hugepages" in r.stderr
