//! CPUs: `--split-cpus` pinning, and CPU time from `/proc` charged to the path measured.

use std::collections::HashMap;
use std::process::Command;

use anyhow::bail;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// `--split-cpus`: the lower half of the CPUs for the client and the proxies, the upper
/// half for the backends, like a proxy tier on machines of its own.
pub struct CpuSplit {
    pub front: CpuSet,
    pub back: CpuSet,
    pub desc: String,
}

impl CpuSplit {
    pub fn new() -> anyhow::Result<CpuSplit> {
        let n = std::thread::available_parallelism()?.get();
        if n < 2 {
            bail!("--split-cpus needs at least 2 CPUs, this machine has {n}");
        }
        let (mut front, mut back) = (CpuSet::new(), CpuSet::new());
        for c in 0..n / 2 {
            front.set(c)?;
        }
        for c in n / 2..n {
            back.set(c)?;
        }
        Ok(CpuSplit {
            front,
            back,
            desc: format!(
                "backends on CPUs {}-{}, client and proxies on CPUs 0-{}",
                n / 2,
                n - 1,
                n / 2 - 1
            ),
        })
    }
}

/// Sets the CPU mask of every thread of `pid`.
pub fn pin_threads(pid: i32, cpus: &CpuSet) -> anyhow::Result<()> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            // A thread that exited meanwhile is fine.
            let _ = sched_setaffinity(Pid::from_raw(tid), cpus);
        }
    }
    Ok(())
}

/// Sets the CPU mask of `root` and its live children (Dovecot's services are children of
/// its master).
pub fn pin_tree(root: i32, cpus: &CpuSet) -> anyhow::Result<()> {
    pin_threads(root, cpus)?;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if proc_stat(pid).is_some_and(|(_, ppid, _, _)| ppid == root) {
            pin_threads(pid, cpus)?;
        }
    }
    Ok(())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (comm, ppid, utime+stime, cutime+cstime) of one process, in clock ticks.
fn proc_stat(pid: i32) -> Option<(String, i32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = f.get(1)?.parse().ok()?;
    Some((comm, ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// CPU ticks of one Dovecot instance, by process name: its master's children (live ones by
/// PID, exited ones through the master's cutime+cstime) and the master itself.
#[derive(Clone, Debug, Default)]
pub struct InstanceCpu {
    pub by_pid: HashMap<i32, (String, u64)>,
    pub master_self: u64,
    pub master_children: u64,
}

fn instance_cpu(master: i32) -> InstanceCpu {
    let mut cpu = InstanceCpu::default();
    if let Some((_, _, own, reaped)) = proc_stat(master) {
        cpu.master_self = own;
        cpu.master_children = reaped;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((comm, ppid, ticks, _)) = proc_stat(pid) {
                if ppid == master {
                    cpu.by_pid.insert(pid, (comm, ticks));
                }
            }
        }
    }
    cpu
}

/// Ticks used between two snapshots, by group name (`exited` = reaped children, `master`).
fn cpu_delta(before: &InstanceCpu, after: &InstanceCpu) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for (pid, (comm, t)) in &after.by_pid {
        let was = before
            .by_pid
            .get(pid)
            .filter(|(c, _)| c == comm)
            .map_or(0, |(_, t)| *t);
        *out.entry(comm.clone()).or_default() += t.saturating_sub(was);
    }
    *out.entry("master".into()).or_default() +=
        after.master_self.saturating_sub(before.master_self);
    *out.entry("exited".into()).or_default() +=
        after.master_children.saturating_sub(before.master_children);
    out
}

/// Everything whose CPU is charged to a point.
pub struct CpuSnapshot {
    pub directord: u64,
    pub directord_metrics: u64,
    pub dovecot: Option<InstanceCpu>,
    pub backends: Vec<InstanceCpu>,
    pub client: u64,
}

pub struct Pids {
    pub directord: i32,
    /// The `directord` with its metrics listener on (`--metrics`).
    pub directord_metrics: Option<i32>,
    pub dovecot: Option<i32>,
    pub backends: Vec<i32>,
}

pub fn snapshot(p: &Pids) -> CpuSnapshot {
    CpuSnapshot {
        directord: proc_stat(p.directord).map_or(0, |s| s.2),
        directord_metrics: p.directord_metrics.and_then(proc_stat).map_or(0, |s| s.2),
        dovecot: p.dovecot.map(instance_cpu),
        backends: p.backends.iter().map(|m| instance_cpu(*m)).collect(),
        client: proc_stat(std::process::id() as i32).map_or(0, |s| s.2),
    }
}

/// CPU ticks charged to one path over all its points.
#[derive(Clone, Default)]
pub struct PathCpu {
    pub logins: usize,
    pub directord: u64,
    pub directord_metrics: u64,
    pub dovecot: HashMap<String, u64>,
    pub backends: u64,
    pub client: u64,
}

impl PathCpu {
    pub fn add(&mut self, logins: usize, a: &CpuSnapshot, b: &CpuSnapshot) {
        self.logins += logins;
        self.directord += b.directord.saturating_sub(a.directord);
        self.directord_metrics += b.directord_metrics.saturating_sub(a.directord_metrics);
        if let (Some(x), Some(y)) = (&a.dovecot, &b.dovecot) {
            for (k, v) in cpu_delta(x, y) {
                *self.dovecot.entry(k).or_default() += v;
            }
        }
        for (x, y) in a.backends.iter().zip(&b.backends) {
            self.backends += cpu_delta(x, y).values().sum::<u64>();
        }
        self.client += b.client.saturating_sub(a.client);
    }
}
