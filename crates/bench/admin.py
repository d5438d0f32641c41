#!/usr/bin/env python3
"""Admin-protocol benchmarks: our directord against a real Dovecot 2.3 director, same run,
same client (the `admin-load` binary of this crate), same config.

  crates/bench/admin.py [--users 100000] [--secs 5] [--runs 5] [--mem-users 1000000] [--skip-build]

It builds `directord` and `admin-load` in release mode first (unless --skip-build), into
$CARGO_TARGET_DIR or the workspace's target/.

Prints, for each director:
  * USER-LOOKUP throughput on one connection, unpipelined (window 1) and pipelined
    (window 100), with --users assignments made first;
  * RSS growth per assignment after --mem-users assignments on a fresh process;
and the ratios ours/Dovecot. Only loopback addresses are used; every process started here
is stopped by its PID at the end.
"""
import argparse, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
LOADGEN = os.path.join(TARGET, "release/admin-load")
DIRECTORD = os.path.join(TARGET, "release/directord")
MAIL_SERVERS = "127.0.1.1 127.0.1.2 127.0.1.3"
# Both directors listen on it, each on its own address.
ADMIN_PORT = 19190
# Waiting for a director's files: WAIT_TRIES polls WAIT_STEP seconds apart.
WAIT_TRIES, WAIT_STEP = 100, 0.1
# Waiting for Dovecot's master to exit after SIGTERM: STOP_TRIES polls WAIT_STEP apart.
STOP_TRIES = 100
# After the last assignment: the moves' kick delay ends and the allocators return freed
# pages (jemalloc purges dirty pages after ~10 s), so RSS shows the steady state.
SETTLE_SECS = 12
# Both directors read this same file. Ours ignores the settings of other Dovecot services.
CONF = """instance_name = bench-{name}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
listen = {ip}
protocols =
ssl = no
director_servers =
director_mail_servers = {mail}
director_user_kick_delay = 1s
service director {{
  unix_listener director-admin {{
    mode = 0600
  }}
  inet_listener {{
    address = {ip}
    port = {port}
  }}
}}
"""


def die(msg):
    sys.exit(f"admin.py: {msg}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    die(f"no VmRSS for pid {pid}")


def alive(pid):
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2:].split()[0] not in ("Z", "X")


def admin_cmd(sock, line):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock)
    s.sendall(b"VERSION\tdirector-doveadm\t1\t0\n" + line + b"\n")
    f = s.makefile("rb")
    f.readline()
    out = []
    while True:
        l = f.readline()
        if not l or l == b"\n":
            break
        out.append(l)
        if not line.endswith(b"LIST"):
            break
    s.close()
    return out


class Director:
    """One director under test, in its own dir with its own config (from CONF) and address.
    `sock` is its UNIX admin socket, `pid` the process whose RSS is measured."""
    name = ip = None

    def __init__(self, tmp):
        self.d = os.path.join(tmp, self.name)
        os.makedirs(self.d)
        self.conf = os.path.join(tmp, self.name + ".conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(name=self.name, d=self.d, ip=self.ip, port=ADMIN_PORT,
                                mail=MAIL_SERVERS))
        self.sock = os.path.join(self.d, "run/director-admin")
        self.launch()

    def wait_for(self, path):
        for _ in range(WAIT_TRIES):
            if os.path.exists(path):
                return
            time.sleep(WAIT_STEP)
        die(f"{self.name} did not create {path}")


class Dovecot(Director):
    name, ip = "dovecot", "127.0.88.1"

    def launch(self):
        if not shutil.which("dovecot"):
            die("dovecot not found: apt-get install -y dovecot-core")
        subprocess.run(["dovecot", "-c", self.conf], check=True)
        pid_file = os.path.join(self.d, "run/master.pid")
        self.wait_for(pid_file)
        self.wait_for(self.sock)
        with open(pid_file) as f:
            self.master = int(f.read())
        admin_cmd(self.sock, b"HOST-LIST")  # the director process starts on first connection
        time.sleep(1.5)
        self.pid = self._director_pid()

    def _director_pid(self):
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                st = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) == self.master and "director" in st[: st.rindex(")")]:
                return int(p)
        die("Dovecot's director process not found")

    def stop(self):
        # Wait for the master to exit: the next Dovecot of this bench binds the same address.
        os.kill(self.master, signal.SIGTERM)
        for _ in range(STOP_TRIES):
            if not alive(self.master):
                return
            time.sleep(WAIT_STEP)
        die(f"dovecot master {self.master} did not exit after SIGTERM")


class Ours(Director):
    name, ip = "directord", "127.0.88.2"

    def launch(self):
        self.proc = subprocess.Popen([DIRECTORD, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.d, "stderr.log"), "w"))
        self.pid = self.proc.pid
        try:
            self.wait_for(self.sock)
        except SystemExit:  # not in `started` yet: stop it here
            self.stop()
            raise

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def loadgen(*args):
    return subprocess.run([LOADGEN, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def rate(line):
    return float(line.split("rate=")[1].split("/s")[0])


def assign(d, start, count, chunk=50000):
    """USER-MOVE in chunks; waiting after each lets the move state (kick delay) drain."""
    hosts = MAIL_SERVERS.split()
    done = 0
    while done < count:
        n = min(chunk, count - done)
        loadgen("assign", "--addr", d.sock, "--host", hosts[(start + done) // chunk % 3],
                "--start", str(start + done), "--count", str(n), "--window", "100")
        done += n
        time.sleep(1.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--runs", type=int, default=5, help="throughput rounds; medians are reported")
    ap.add_argument("--mem-users", type=int, default=1000000)
    ap.add_argument("--skip-build", action="store_true")
    a = ap.parse_args()
    if not a.skip_build:
        subprocess.run(["cargo", "build", "--release", "-p", "directord", "-p", "director-bench",
                        "--bin", "directord", "--bin", "admin-load"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="director-bench-")
    started = []
    try:
        print(f"machine: {os.cpu_count()} cpus; {subprocess.run(['dovecot', '--version'], capture_output=True, text=True).stdout.strip()}")
        if a.users > 0:
            throughput(a, tmp, started)
        if a.mem_users > 0:
            memory(a, tmp, started)
    finally:
        for d in started:
            try:
                d.stop()
            except Exception as e:  # keep stopping the others
                print(f"stop {d.name}: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def throughput(a, tmp, started):
    """Both directors run side by side; each round measures Dovecot then ours, so the
    ratios of one round share the machine's state. Reports every round and the medians."""
    print(f"== USER-LOOKUP throughput, one connection, {a.users} users assigned, "
          f"{a.secs}s per point, {a.runs} round(s)")
    ds = []
    for cls in (Dovecot, Ours):
        d = cls(tmp + "/tp-" + cls.name)
        started.append(d)
        assign(d, 0, a.users)
        ds.append(d)
    ratios = {"1": [], "100": []}
    for r in range(a.runs):
        for w in ("1", "100"):
            rates = {}
            for d in ds:
                out = loadgen("lookup", "--addr", d.sock, "--secs", str(a.secs), "--window", w,
                              "--users", str(a.users))
                rates[d.name] = rate(out)
                print(f"round {r + 1} {d.name:10} {out}")
            ratios[w].append(rates["directord"] / rates["dovecot"])
    for d in ds:
        d.stop()
        started.remove(d)
    for w in ("1", "100"):
        rs = sorted(ratios[w])
        print(f"ratio window={w}: directord/dovecot = {statistics.median(rs):.2f}x median "
              f"(rounds: {', '.join(f'{x:.2f}' for x in rs)})")


def memory(a, tmp, started):
    print(f"== memory: RSS growth for {a.mem_users} assignments on a fresh process")
    mem = {}
    for cls in (Dovecot, Ours):
        d = cls(tmp + "/mem-" + cls.name)
        started.append(d)
        assign(d, 0, 1000)
        before = rss_kb(d.pid)
        assign(d, 1000, a.mem_users)
        time.sleep(SETTLE_SECS)
        after = rss_kb(d.pid)
        users = len(admin_cmd(d.sock, b"USER-LIST"))
        per = (after - before) * 1024 / a.mem_users
        mem[d.name] = per
        print(f"{d.name:10} rss_before={before} kB rss_after={after} kB users_listed={users} bytes_per_user={per:.1f}")
        d.stop()
        started.remove(d)
    print(f"ratio memory per user: directord/dovecot = {mem['directord'] / mem['dovecot']:.2f}")


if __name__ == "__main__":
    main()
