#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Mutation testing of the protocol engine (dataplane/core).

Applies each mutant of tools/mutation/mutants.txt (a small, described
change of behaviour; the format is in its header) to a scratch copy of the
repository, builds the unit and simulator test binaries only (ninja
targets tests/unit/*_test and tests/sim/sim_test, not the daemon), runs the
CI suites against it (every unit test binary, then the simulator at the CI
seeds, one process per scenario) up to the first failure, and reports:

  killed    a test failed, crashed or hung (per-mutant timeout)
  survived  every test passed: a behaviour change nothing checks
  invalid   the mutant does not compile (fix the mutant)
  stale     its original text no longer occurs exactly once (update it)

score = killed / (run - survived-and-marked-equivalent - invalid - stale)

A survivor marked `expect: accepted` still counts against the score; one
marked `equivalent` is left out of it. A survivor not explained in the list,
or a listed one that was killed, is pointed out.

The scratch copy (default /var/tmp/mtp-mutate) holds src/ (the working
tree: tracked and untracked non-ignored files, synced at every start, so
uncommitted edits are included) and build/ (one release meson build dir,
configured once, rebuilt incrementally). The repository itself is never
written. The unmutated suites run first (cached per source digest): a unit
test that fails there is left out, and a simulator (scenario, seed) that
fails there runs on its own and counts only if a mutant makes it fail
differently (its failure, numbers aside, changes). Mutants run one at a
time; --jobs is ninja's parallelism and the number of test processes run at
once (default 1: the machine is shared).

  tools/mutate.sh                     # the whole list
  tools/mutate.sh --only recv-unabsorbed-acked,ack-*
  tools/mutate.sh --list
  tools/mutate.sh --check             # every original still occurs exactly once?
  tools/mutate.sh --seeds 0-63 --min-score 0.95

Results: printed, and as JSON in scratch/results-<date>-<time>.json
(results.json: the latest; --results names another file).
Exit status: 0 score >= --min-score; 1 below it; 2 setup failure (the
build or the unmutated suites fail as a whole, a bad mutant list, another
run holding the scratch directory).
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_LIST = os.path.join(HERE, "mutants.txt")

# Run first: the binaries most likely to fail fast on an engine mutant.
UNIT_ORDER = ["connection_test", "wire_test", "congestion_test"]


# ---- the mutant list ----

class Mutant:
    def __init__(self, mid, line):
        self.id = mid
        self.line = line  # where it starts in the list
        self.file = None
        self.desc = ""
        self.kind = ""
        self.expect = None  # None, or (verdict, reason): verdict is "equivalent" or "accepted"
        self.original = []
        self.replacement = []

    def original_text(self):
        return "\n".join(self.original)

    def replacement_text(self):
        return "\n".join(self.replacement)


def parse_mutants(path):
    """Parses the list; see the header of mutants.txt for the format."""
    mutants, errors = [], []
    cur = None
    last_key = None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.startswith("=== "):
                cur = Mutant(line[4:].strip(), n)
                mutants.append(cur)
                last_key = None
                continue
            if cur is None or line.startswith("#") or line.strip() == "":
                if cur is not None and line.strip() == "":
                    last_key = None
                continue
            if line.startswith("- ") or line == "-":
                cur.original.append(line[2:])
                last_key = None
            elif line.startswith("+ ") or line == "+":
                cur.replacement.append(line[2:])
                last_key = None
            elif line.startswith("  ") and last_key in ("desc", "expect"):
                # A continuation of the description or the expectation.
                if last_key == "desc":
                    cur.desc += " " + line.strip()
                elif cur.expect is not None:
                    cur.expect = (cur.expect[0], cur.expect[1] + " " + line.strip())
            elif ":" in line:
                key, val = line.split(":", 1)
                key, val = key.strip(), val.strip()
                last_key = key
                if key == "file":
                    cur.file = val
                elif key == "desc":
                    cur.desc = val
                elif key == "kind":
                    cur.kind = val
                elif key == "expect":
                    m = re.match(r"(equivalent|accepted)\b\s*[-:\u2014]*\s*(.*)", val)
                    if not m:
                        errors.append(f"{path}:{n}: expect: must start with 'equivalent' or 'accepted'")
                    else:
                        cur.expect = (m.group(1), m.group(2))
                else:
                    errors.append(f"{path}:{n}: unknown key '{key}'")
            else:
                errors.append(f"{path}:{n}: cannot parse: {line!r}")
    seen = set()
    for m in mutants:
        where = f"{path}:{m.line} ({m.id})"
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", m.id):
            errors.append(f"{where}: id must be lower-case letters, digits and '-'")
        if m.id in seen:
            errors.append(f"{where}: duplicate id")
        seen.add(m.id)
        if not m.file:
            errors.append(f"{where}: no file:")
        if not m.desc:
            errors.append(f"{where}: no desc:")
        if not m.original or m.original_text().strip() == "":
            errors.append(f"{where}: no original ('- ' lines)")
        if m.original_text() == m.replacement_text():
            errors.append(f"{where}: replacement equals original")
    return mutants, errors


# ---- processes ----

def run(cmd, cwd=None, env=None, timeout=None):
    """Runs cmd in its own process group; on timeout kills that group.
    @return (returncode or None on timeout, output)"""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, text=True, errors="replace")
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, _ = p.communicate()
        return None, out


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def failed_tests(output):
    names = []
    for line in output.splitlines():
        m = re.match(r"\[  FAILED  \] ([\w./-]+)", line)
        if m and m.group(1) not in names and "," not in line:
            names.append(m.group(1))
    return names


def first_failure_reason(output):
    """The test's own words for the first failure, one line."""
    lines = [l.strip() for l in output.splitlines()]
    for l in lines:  # the simulator names scenario, seed and property
        m = re.search(r"(sim\.\w+ seed \d+: .*)", l)
        if m and "rerun:" not in l:
            return m.group(1)[:300]
    for i, l in enumerate(lines):  # a GoogleTest expectation: where, then what
        if re.search(r":\d+: Failure$", l):
            what = [x for x in lines[i + 1:i + 6] if x and not x.startswith("[")]
            return (l.replace(": Failure", ": ") + " / ".join(what[:3]))[:300]
    return ""


def signature(rc, output):
    """What a failure looks like, numbers left out: a mutant whose failure
    has the same signature as the unmutated run's changed nothing there."""
    if rc is None:
        return "timeout"
    if rc < 0:
        return "signal"
    return re.sub(r"\d+(\.\d+)?", "#", first_failure_reason(output) or last_line(output))


# ---- the scratch tree ----

class Scratch:
    def __init__(self, root, repo, jobs):
        self.root = root
        self.repo = repo
        self.src = os.path.join(root, "src")
        self.build = os.path.join(root, "build")
        self.jobs = jobs
        self.pristine = {}  # relative path -> content
        self.dirty = set()

    def sync(self):
        """Copies the working tree (tracked and untracked non-ignored
        files) into src/, rewriting only files whose content differs, so
        the build stays incremental. @return a hash of the sources."""
        out = subprocess.run(["git", "-C", self.repo, "ls-files", "-z", "-co", "--exclude-standard"],
                             check=True, stdout=subprocess.PIPE).stdout
        paths = sorted(set(p.decode() for p in out.split(b"\0") if p))
        h = hashlib.sha1()
        wanted = set()
        os.makedirs(self.src, exist_ok=True)
        for rel in paths:
            s = os.path.join(self.repo, rel)
            if not os.path.isfile(s):
                continue  # deleted in the working tree
            wanted.add(rel)
            with open(s, "rb") as f:
                data = f.read()
            if not rel.startswith(("tools/mutation/", "docs/", "dts/")) and not rel.endswith(".md"):
                h.update(rel.encode() + b"\0" + data + b"\0")  # what the test binaries depend on
            d = os.path.join(self.src, rel)
            old = None
            if os.path.isfile(d):
                with open(d, "rb") as f:
                    old = f.read()
            if old != data:
                os.makedirs(os.path.dirname(d), exist_ok=True)
                with open(d, "wb") as f:
                    f.write(data)
                shutil.copymode(s, d)
        # Files gone from the working tree go from the copy too.
        for dirpath, _, files in os.walk(self.src):
            for fn in files:
                rel = os.path.relpath(os.path.join(dirpath, fn), self.src)
                if rel not in wanted:
                    os.unlink(os.path.join(dirpath, fn))
        return h.hexdigest()

    def configure(self):
        if os.path.isfile(os.path.join(self.build, "build.ninja")):
            return True, ""
        rc, out = run(["meson", "setup", "--buildtype=release", self.build, self.src], timeout=900)
        return rc == 0, out

    def targets(self):
        rc, out = run(["ninja", "-C", self.build, "-t", "targets", "all"], timeout=120)
        if rc != 0:
            return []
        t = []
        for line in out.splitlines():
            m = re.match(r"^(tests/(?:unit|sim)/[A-Za-z0-9_]+_test):", line)
            if m and m.group(1) not in t:
                t.append(m.group(1))
        return t

    def build_targets(self, targets, timeout):
        return run(["ninja", "-C", self.build, "-j", str(self.jobs)] + targets, timeout=timeout)

    def load_pristine(self, rel):
        if rel not in self.pristine:
            p = os.path.join(self.src, rel)
            if not os.path.isfile(p):
                return None
            with open(p, encoding="utf-8") as f:
                self.pristine[rel] = f.read()
        return self.pristine[rel]

    def restore(self):
        for rel in sorted(self.dirty):
            with open(os.path.join(self.src, rel), "w", encoding="utf-8") as f:
                f.write(self.pristine[rel])
        self.dirty.clear()

    def apply(self, m):
        """@return None if applied, else why it is stale."""
        text = self.load_pristine(m.file)
        if text is None:
            return f"{m.file} does not exist"
        n = text.count(m.original_text())
        if n != 1:
            return f"original text found {n} times in {m.file}"
        with open(os.path.join(self.src, m.file), "w", encoding="utf-8") as f:
            f.write(text.replace(m.original_text(), m.replacement_text(), 1))
        self.dirty.add(m.file)
        return None


# ---- the suites ----

def expand_seeds(spec):
    """MTP_SIM_SEEDS syntax: "0-15", "7", "0-3,9,20-22"."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return sorted(set(out))


def seeds_spec(seeds):
    parts, seeds = [], sorted(seeds)
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def list_gtests(binary, cwd):
    rc, out = run([binary, "--gtest_list_tests"], cwd=cwd, timeout=60)
    if rc != 0:
        return []
    names, suite = [], ""
    for line in out.splitlines():
        if not line.strip() or line.startswith("Running main"):
            continue
        if not line.startswith(" "):
            suite = line.split()[0]
        else:
            names.append(suite + line.split()[0])
    return names


class Suites:
    """The CI suites: every unit test binary, then the simulator, one
    process per scenario (so a scenario can run a subset of the seeds).
    Tests, or simulator (scenario, seed) pairs, that fail without any
    mutant are quarantined: left out of every mutant's run and reported."""

    def __init__(self, scratch, targets, seeds, jobs, skip=()):
        self.build = scratch.build
        self.jobs = jobs
        self.seeds = expand_seeds(seeds)
        units = [t for t in targets if t.startswith("tests/unit/")]
        units.sort(key=lambda t: (UNIT_ORDER.index(os.path.basename(t)) if os.path.basename(t) in UNIT_ORDER
                                  else len(UNIT_ORDER), t))
        self.units = [os.path.join(self.build, t) for t in units]
        self.sims = [os.path.join(self.build, t) for t in targets if t.startswith("tests/sim/")]
        self.env = dict(os.environ)
        for v in ("MTP_SIM_VERBOSE", "MTP_SIM_TRACE", "GTEST_FILTER", "GTEST_TOTAL_SHARDS", "GTEST_SHARD_INDEX"):
            self.env.pop(v, None)
        self.skip = set(skip)
        self.quarantine = {}  # "binary:test" -> [] (left out); scenario -> {seed: failure signature}

    def scenarios(self):
        return [(b, n) for b in self.sims for n in list_gtests(b, self.build)]

    def unit_job(self, binary, fail_fast=True):
        """A job: (label, argv, env, expected failure signature or None)."""
        excluded = [n for n in self.quarantine if self.quarantine[n] == [] and
                    n.startswith(os.path.basename(binary) + ":")]
        argv = [binary] + (["--gtest_fail_fast"] if fail_fast else [])
        if excluded:
            argv.append("--gtest_filter=-" + ":".join(n.split(":", 1)[1] for n in excluded))
        return (os.path.basename(binary), argv, self.env, None)

    def sim_job(self, binary, scenario, seeds, expect=None):
        env = dict(self.env)
        env["MTP_SIM_SEEDS"] = seeds_spec(seeds)
        label = f"{os.path.basename(binary)}:{scenario}" + (f" seed {seeds[0]}" if expect else "")
        return (label, [binary, "--gtest_filter=" + scenario], env, expect)

    def jobs_for_mutant(self):
        """Every unit binary (quarantined tests filtered out), each scenario
        with its good seeds in one process, and each seed that fails
        unmutated on its own, expected to fail the same way."""
        jobs = [self.unit_job(b) for b in self.units]
        for b, n in self.scenarios():
            if n in self.skip:
                continue
            bad = self.quarantine.get(n, {})
            seeds = [x for x in self.seeds if str(x) not in bad]
            if seeds:
                jobs.append(self.sim_job(b, n, seeds))
            for seed, sig in sorted(bad.items(), key=lambda kv: int(kv[0])):
                jobs.append(self.sim_job(b, n, [int(seed)], sig))
        return jobs

    def run_jobs(self, jobs, timeout):
        """Runs the jobs, `self.jobs` at a time, stopping at the first
        failure. @return (passed, label, reason, seconds)"""
        start = time.monotonic()
        deadline = start + timeout
        pending = list(jobs)
        running = []  # (label, Popen, output file)
        failure = None
        while (pending or running) and failure is None:
            while pending and len(running) < self.jobs:
                label, argv, env, expect = pending.pop(0)
                f = tempfile.TemporaryFile(mode="w+", errors="replace")
                running.append((label, subprocess.Popen(argv, cwd=self.build, env=env, stdout=f,
                                                        stderr=subprocess.STDOUT, start_new_session=True), f,
                                expect))
            done = [r for r in running if r[1].poll() is not None]
            if not done:
                if time.monotonic() >= deadline:
                    failure = (running[0][0], "timeout (hang?)")
                    break
                time.sleep(0.01)
                continue
            for r in done:
                running.remove(r)
                label, p, f, expect = r
                f.seek(0)
                out = f.read()
                f.close()
                if expect is not None and p.returncode != 0 and signature(p.returncode, out) == expect:
                    continue  # fails as it does unmutated: nothing to see
                if p.returncode != 0 and failure is None:
                    names = failed_tests(out)
                    what = label if ":" in label or not names else f"{label}:{names[0]}"
                    failure = (what, first_failure_reason(out) or f"exit status {p.returncode}: {last_line(out)}")
        for _, p, f, _ in running:
            kill_group(p)
            p.wait()
            f.close()
        secs = time.monotonic() - start
        if failure is not None:
            return False, failure[0], failure[1], secs
        return True, "", "", secs

    def baseline(self, log):
        """Finds what fails without any mutant and quarantines it: a unit
        test is left out; a simulator seed runs on its own and must fail
        the same way (signature()) to count as unchanged.
        @return seconds of a whole run of the suites so quarantined, or None"""
        self.quarantine = {}
        for b in self.units:
            rc, out = run(self.unit_job(b, fail_fast=False)[1], cwd=self.build, env=self.env, timeout=3600)
            if rc != 0:
                names = failed_tests(out)
                if not names:
                    log(f"baseline: {os.path.basename(b)} fails as a whole: {last_line(out)}")
                    return None
                for n in names:
                    self.quarantine[f"{os.path.basename(b)}:{n}"] = []
                    log(f"baseline: unit test {os.path.basename(b)}:{n} fails unmutated: left out")
        for b, n in self.scenarios():
            argv, env = self.sim_job(b, n, self.seeds)[1:3]
            rc, out = run(argv, cwd=self.build, env=env, timeout=3600)
            if rc == 0:
                continue
            bad = {}
            for seed in self.seeds:
                argv, env = self.sim_job(b, n, [seed])[1:3]
                rc, out = run(argv, cwd=self.build, env=env, timeout=600)
                if rc != 0:
                    bad[str(seed)] = signature(rc, out)
                    why = first_failure_reason(out) or (f"exit status {rc}: {last_line(out)}" if rc is not None
                                                        else "timeout")
                    log(f"baseline: {n} seed {seed} fails unmutated: {why}")
            self.quarantine[n] = bad
        passed, test, reason, secs = self.run_jobs(self.jobs_for_mutant(), 6 * 3600)
        if not passed:
            log(f"baseline: not reproducible after quarantine: {test}: {reason}")
            return None
        return secs


def last_line(out):
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    return lines[-1][:200] if lines else ""


# ---- main ----

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true",
                    help="check that every original text occurs exactly once in the working tree, and exit")
    ap.add_argument("--only", default="", help="comma-separated mutant ids (or id prefixes ending in '*')")
    ap.add_argument("--jobs", type=int, default=1, help="ninja -j, and test processes run at once (default 1)")
    ap.add_argument("--seeds", default="0-15", help="MTP_SIM_SEEDS for the simulator (default 0-15, as CI)")
    ap.add_argument("--min-score", type=float, default=0.9, help="exit 1 below this score (default 0.9)")
    ap.add_argument("--scratch", default="/var/tmp/mtp-mutate", help="scratch directory")
    ap.add_argument("--mutants", default=DEFAULT_LIST, help="the mutant list")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds for one mutant's tests (default: 3 x the unmutated run + 120)")
    ap.add_argument("--build-timeout", type=float, default=1200, help="seconds for one mutant's build")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="do not run the unmutated suites first (a cached pass for these sources is used anyway)")
    ap.add_argument("--skip", default="",
                    help="comma-separated simulator scenarios to leave out (e.g. sim.tight_memory_budget): to see "
                         "what else kills a mutant; a run with --skip is not the CI score")
    ap.add_argument("--results", default="", help="write the results as JSON here (default: scratch/results-<date>-<time>.json)")
    return ap.parse_args()


def select(mutants, only):
    want = [w.strip() for w in only.split(",") if w.strip()]
    out = []
    for m in mutants:
        for w in want:
            if m.id == w or (w.endswith("*") and m.id.startswith(w[:-1])):
                out.append(m)
                break
    unknown = [w for w in want if not w.endswith("*") and w not in {m.id for m in mutants}]
    return out, unknown


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main():
    a = parse_args()
    mutants, errors = parse_mutants(a.mutants)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 2
    if a.list:
        for m in mutants:
            exp = f"  [expect {m.expect[0]}]" if m.expect else ""
            print(f"{m.id:34} {m.file:32} {m.desc}{exp}")
        print(f"{len(mutants)} mutants")
        return 0
    if a.check:
        bad = 0
        for m in mutants:
            p = os.path.join(REPO, m.file)
            n = open(p, encoding="utf-8").read().count(m.original_text()) if os.path.isfile(p) else -1
            if n != 1:
                bad += 1
                print(f"{m.id}: original text found {n} times in {m.file}" if n >= 0 else f"{m.id}: no {m.file}")
        print(f"{len(mutants) - bad} of {len(mutants)} mutants apply")
        return 0 if bad == 0 else 2
    chosen = mutants
    if a.only:
        chosen, unknown = select(mutants, a.only)
        if unknown:
            print("unknown mutant id(s): " + ", ".join(unknown), file=sys.stderr)
            return 2
    jobs = max(1, a.jobs)

    os.makedirs(a.scratch, exist_ok=True)
    lock = open(os.path.join(a.scratch, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"another mutation run holds {a.scratch}/lock", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    sc = Scratch(a.scratch, REPO, jobs)
    head = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True).stdout.strip()
    print(f"mutate: copying {REPO} ({head}) to {sc.src}", flush=True)
    digest = sc.sync()
    ok, out = sc.configure()
    if not ok:
        print(out[-4000:])
        print("mutate: meson setup failed", file=sys.stderr)
        return 2
    targets = sc.targets()
    if not targets or not any(t.startswith("tests/sim/") for t in targets):
        print("mutate: no unit/sim test targets in the build (is -Dtests=true?)", file=sys.stderr)
        return 2
    print("mutate: targets " + " ".join(targets), flush=True)

    # The unmutated sources must build and pass, or no verdict means anything.
    rc, out = sc.build_targets(targets, a.build_timeout)
    if rc != 0:
        print(out[-6000:])
        print("mutate: the unmutated sources do not build", file=sys.stderr)
        return 2
    skip = [x.strip() for x in a.skip.split(",") if x.strip()]
    suites = Suites(sc, targets, a.seeds, jobs, skip)
    cache_path = os.path.join(a.scratch, "baseline.json")
    cache = {}
    if os.path.isfile(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    key = f"{digest}:{a.seeds}"
    baseline_s = None
    if key in cache:
        baseline_s = cache[key]["seconds"]
        suites.quarantine = cache[key]["quarantine"]
        print(f"mutate: the unmutated suites were run before for these sources ({baseline_s:.0f} s)", flush=True)
        for n, bad in suites.quarantine.items():
            for seed, sig in bad.items() if bad else [("", "left out")]:
                print(f"mutate: baseline: {n}" + (f" seed {seed}" if seed else "") + f" fails unmutated: {sig}",
                      flush=True)
    elif not a.skip_baseline:
        print(f"mutate: unmutated suites (seeds {a.seeds}) ...", flush=True)
        baseline_s = suites.baseline(lambda msg: print("mutate: " + msg, flush=True))
        if baseline_s is None:
            print("mutate: the unmutated suites fail as a whole: no verdict would mean anything", file=sys.stderr)
            return 2
        cache = {key: {"seconds": baseline_s, "quarantine": suites.quarantine}}
        with open(cache_path, "w") as f:
            json.dump(cache, f)
        print(f"mutate: unmutated suites pass in {baseline_s:.0f} s"
              + (f" ({len(suites.quarantine)} quarantined)" if suites.quarantine else ""), flush=True)
    timeout = a.timeout or 3 * (baseline_s or 600) + 120

    results = []
    counts = {"killed": 0, "survived": 0, "invalid": 0, "stale": 0}
    try:
        for i, m in enumerate(chosen, 1):
            mt0 = time.monotonic()
            sc.restore()
            r = {"id": m.id, "file": m.file, "desc": m.desc, "kind": m.kind,
                 "expect": m.expect[0] if m.expect else "", "expect_reason": m.expect[1] if m.expect else ""}
            why = sc.apply(m)
            if why is not None:
                r.update(verdict="stale", by="", reason=why)
            else:
                rc, out = sc.build_targets(targets, a.build_timeout)
                if rc != 0:
                    errs = [l.strip() for l in out.splitlines() if "error:" in l][:3]
                    r.update(verdict="invalid", by="build", reason=" | ".join(errs)[:400] or "build failed")
                else:
                    passed, test, reason, secs = suites.run_jobs(suites.jobs_for_mutant(), timeout)
                    if passed:
                        r.update(verdict="survived", by="", reason="", test_s=round(secs, 1))
                    else:
                        r.update(verdict="killed", by=test, reason=reason, test_s=round(secs, 1))
            r["seconds"] = round(time.monotonic() - mt0, 1)
            counts[r["verdict"]] += 1
            results.append(r)
            note = ""
            if r["verdict"] == "survived":
                note = f"  [{m.expect[0]}]" if m.expect else "  [NOT EXPLAINED in the list]"
            elif r["verdict"] == "killed":
                note = f"  by {r['by']}: {r['reason']}"
                if m.expect:
                    note += f"  (listed as {m.expect[0]}: update the list)"
            elif r["verdict"] in ("invalid", "stale"):
                note = f"  {r['reason']}"
            print(f"[{i}/{len(chosen)}] {m.id}: {r['verdict']} ({r['seconds']:.0f} s){note}", flush=True)
    finally:
        sc.restore()

    total = len(results)
    equivalent = sum(1 for r in results if r["verdict"] == "survived" and r["expect"] == "equivalent")
    denom = total - equivalent - counts["invalid"] - counts["stale"]
    score = counts["killed"] / denom if denom > 0 else None  # None: nothing measurable
    elapsed = time.monotonic() - t0
    print()
    print(f"mutants {total}: killed {counts['killed']}, survived {counts['survived']} "
          f"({equivalent} equivalent), invalid {counts['invalid']}, stale {counts['stale']}")
    shown = f"{score:.3f}" if score is not None else "n/a"
    print(f"score {counts['killed']}/{denom} = {shown} (minimum {a.min_score}); seeds {a.seeds}; "
          f"run time {fmt_time(elapsed)}")
    if skip:
        print("left out: " + ", ".join(skip) + " (not the CI score)")
    if suites.quarantine:
        print("failing without any mutant (unit tests left out; simulator seeds run alone, and count only if "
              "they fail differently): " + "; ".join(
                  n + (f" seeds {seeds_spec([int(x) for x in v])}" if v else "") for n, v in suites.quarantine.items()))
    surv = [r for r in results if r["verdict"] == "survived"]
    if surv:
        print("\nsurvivors:")
        for r in surv:
            tag = r["expect"] or "NOT EXPLAINED"
            print(f"  {r['id']} ({r['file']}) [{tag}]\n      {r['desc']}")
            if r["expect_reason"]:
                print(f"      why: {r['expect_reason']}")
    bad = [r for r in results if r["verdict"] in ("invalid", "stale")]
    if bad:
        print("\nto fix in the list:")
        for r in bad:
            print(f"  {r['id']}: {r['verdict']}: {r['reason']}")
    # Each run keeps its own file; results.json is the latest.
    res_path = a.results or os.path.join(a.scratch, time.strftime("results-%Y%m%d-%H%M%S.json"))
    with open(res_path, "w") as f:
        json.dump({"started": started, "seconds": round(elapsed), "seeds": a.seeds, "git": head, "sources": digest,
                   "quarantine": suites.quarantine, "skip": skip,
                   "score": score, "counts": counts, "equivalent": equivalent, "results": results}, f, indent=1)
    if not a.results:
        shutil.copyfile(res_path, os.path.join(a.scratch, "results.json"))
    print(f"\nresults: {res_path}")
    if score is None:
        return 2 if bad else 0
    return 0 if score >= a.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
