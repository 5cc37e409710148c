//! Several "hosts" on one machine for cluster tests.
//!
//! Where it can, [`Hosts::new`] gives each host its own Linux network namespace, so that every
//! process of a host has its own address and its own port space, as on separate machines:
//!
//! ```text
//!   root namespace (the test, senders, receivers)
//!     bridge wlr<pid>-<k>-br  10.B.C.1/24  = Hosts::outside()
//!       |-- veth wlr<pid>-<k>-0  <==>  eth0 10.B.C.2/24 in namespace wallaroo-test-<pid>-<k>-0  = addr(0)
//!       |-- veth wlr<pid>-<k>-1  <==>  eth0 10.B.C.3/24 in namespace wallaroo-test-<pid>-<k>-1  = addr(1)
//!       `-- ...
//! ```
//!
//! Each namespace has `lo` up, its end of a veth pair named `eth0` with address 10.B.C.(i+2), and
//! a default route via the bridge. The root ends of the pairs are ports of one bridge, which is
//! what joins the hosts into one network: host to host traffic is switched by the bridge, and
//! the bridge's own address is where the root namespace (the test process) is reachable from the
//! hosts, and from where it reaches them. No routing or forwarding in the root namespace is
//! involved.
//!
//! Names are unique per process and per `Hosts` (`<pid>` is the test process's id in base 36,
//! `<k>` a counter in base 36), so interface names stay within the kernel's 15 characters and
//! tests in parallel threads or processes do not collide. The /24 subnet is chosen among
//! 10.200.0.0 – 10.249.255.0 as one that no address or route on the machine uses yet, under a
//! file lock so that concurrent test processes pick different ones. Namespaces and interfaces
//! left behind by test processes that died without cleaning up are removed the first time a
//! process makes hosts. At the end of set-up, real TCP connections check that every host reaches
//! the root namespace, itself and another host, and that the root namespace reaches every host.
//!
//! Where namespaces cannot be made (not root, no `ip`, a container without CAP_NET_ADMIN, a
//! firewall dropping bridged traffic, or `WALLAROO_TEST_NO_NETNS` set), all hosts are 127.0.0.1
//! and the caller tells their services apart by port: [`Hosts::port`] hands out distinct free
//! ports then.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Set to anything but `0` or empty to keep [`Hosts::new`] from using network namespaces.
pub const NO_NETNS_VAR: &str = "WALLAROO_TEST_NO_NETNS";

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// Held while choosing a subnet and putting it on a bridge, across test processes.
const LOCK_FILE: &str = "/run/wallaroo-tests-hosts.lock";

/// Subnets are 10.B.C.0/24 with B in this range.
const SECOND_OCTETS: std::ops::Range<u8> = 200..250;

/// How long the connectivity check at the end of set-up may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Numbers the `Hosts` of this process, for unique names.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why namespaces failed earlier in this process: later `Hosts` fall back at once.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Several hosts for cluster tests: each in its own Linux network namespace with its own address
/// (veth pairs on a bridge in the root namespace), or, where namespaces cannot be made, all on
/// 127.0.0.1 (the caller then uses distinct ports).
pub struct Hosts {
    n: usize,
    /// The namespaces, or None on loopback.
    net: Option<Net>,
    /// Ports handed out by [`Hosts::port`] on loopback, so that none is given twice.
    ports: Mutex<Vec<u16>>,
}

/// The namespaces, bridge and veth pairs of one `Hosts`.
struct Net {
    namespaces: Vec<String>,
    /// The root namespace's end of each veth pair; the other end is `eth0` in the namespace.
    veths: Vec<String>,
    bridge: String,
    /// B and C of the subnet 10.B.C.0/24.
    subnet: (u8, u8),
}

#[allow(clippy::len_without_is_empty)] // there is always at least one host
impl Hosts {
    /// Makes `n` hosts. Tries network namespaces first; if that fails for any reason (not root,
    /// no `ip`, EPERM in a container, no CAP_NET_ADMIN, a firewall in the way,
    /// `WALLAROO_TEST_NO_NETNS=1`), prints one line to stderr saying why namespaces were not used
    /// and that the test falls back to loopback with distinct ports, and returns loopback hosts.
    ///
    /// Panics if `n` is 0 or more than 253 (the hosts of a /24).
    pub fn new(n: usize) -> Hosts {
        match std::env::var_os(NO_NETNS_VAR) {
            Some(value) if forbids_netns(Some(&value)) => Hosts::loopback(
                n,
                &format!("{NO_NETNS_VAR}={} is set", value.to_string_lossy()),
            ),
            _ => Hosts::with_netns(n, true),
        }
    }

    /// [`Hosts::new`] without looking at the environment: namespaces only if `allowed`.
    fn with_netns(n: usize, allowed: bool) -> Hosts {
        assert!(
            (1..=253).contains(&n),
            "Hosts::new({n}): between 1 and 253 hosts (one /24 subnet)"
        );
        if !allowed {
            return Hosts::loopback(n, "the caller turned them off");
        }
        let mut failure = FAILURE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = failure.as_ref() {
            let reason = format!("as earlier in this process: {reason}");
            drop(failure);
            return Hosts::loopback(n, &reason);
        }
        // Set-up runs with the lock released: other threads make their hosts in parallel.
        drop(failure);
        match Net::create(n) {
            Ok(net) => Hosts {
                n,
                net: Some(net),
                ports: Mutex::new(Vec::new()),
            },
            Err(reason) => {
                failure = FAILURE.lock().unwrap_or_else(|e| e.into_inner());
                failure.get_or_insert_with(|| reason.clone());
                drop(failure);
                Hosts::loopback(n, &reason)
            }
        }
    }

    /// `n` hosts on 127.0.0.1, after saying why on stderr.
    fn loopback(n: usize, reason: &str) -> Hosts {
        assert!(
            (1..=253).contains(&n),
            "Hosts::new({n}): between 1 and 253 hosts"
        );
        eprintln!(
            "hosts: network namespaces not used ({reason}); the {n} hosts share 127.0.0.1 with distinct ports"
        );
        Hosts {
            n,
            net: None,
            ports: Mutex::new(Vec::new()),
        }
    }

    /// True if every host has its own network namespace and address.
    pub fn is_netns(&self) -> bool {
        self.net.is_some()
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.n
    }

    /// The address of host i (10.B.C.(i+2) in namespaces; 127.0.0.1 on loopback).
    pub fn addr(&self, i: usize) -> IpAddr {
        self.check(i);
        match &self.net {
            Some(net) => net.addr(i + 2),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The address the root namespace (where the test process, senders and receivers run) has on
    /// the hosts' network: the bridge's address (10.B.C.1) in namespaces; 127.0.0.1 on loopback.
    /// Processes in a host reach the test's listeners there, so listeners meant for them must be
    /// bound to this address (or to 0.0.0.0).
    pub fn outside(&self) -> IpAddr {
        match &self.net {
            Some(net) => net.addr(1),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// A Command running `program` inside host i (`ip netns exec NAME program ...` in namespaces,
    /// which execs `program` in place, so the child's pid is the program's; plain otherwise).
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        self.check(i);
        match &self.net {
            Some(net) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &net.namespaces[i]]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// A port for a service on host i: `base` in namespaces, where every host has its own ports;
    /// on loopback a free port that this `Hosts` has not handed out before.
    pub fn port(&self, i: usize, base: u16) -> u16 {
        self.check(i);
        assert!(base != 0, "Hosts::port: base port must not be 0");
        if self.is_netns() {
            return base;
        }
        let mut given = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let port = crate::free_port();
            if !given.contains(&port) {
                given.push(port);
                return port;
            }
        }
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.n,
            "host {i} does not exist: there are {} hosts (0..{})",
            self.n,
            self.n
        );
    }
}

impl Drop for Hosts {
    /// Deletes the namespaces, veth pairs and bridge. Processes still running in a host lose
    /// their network; they are the caller's to stop.
    fn drop(&mut self) {
        if let Some(net) = &self.net {
            net.remove();
        }
    }
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<IpAddr> = (0..self.n).map(|i| self.addr(i)).collect();
        f.debug_struct("Hosts")
            .field("netns", &self.is_netns())
            .field("addrs", &addrs)
            .field("outside", &self.outside())
            .finish()
    }
}

/// True if `value` of `WALLAROO_TEST_NO_NETNS` turns namespaces off: set, not empty and not `0`.
fn forbids_netns(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

impl Net {
    /// Makes the namespaces, bridge and veth pairs for `n` hosts and checks connectivity; on
    /// failure removes whatever was made and says why.
    fn create(n: usize) -> Result<Net, String> {
        // SAFETY: geteuid(2) cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!("not root (euid {euid})"));
        }
        static SWEPT: OnceLock<()> = OnceLock::new();
        SWEPT.get_or_init(sweep_leftovers);

        let pid = std::process::id();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed) % (36 * 36);
        let prefix = format!("wlr{}-{}", base36(pid as usize), base36(k));
        let mut net = Net {
            namespaces: (0..n)
                .map(|i| format!("wallaroo-test-{pid}-{k}-{i}"))
                .collect(),
            veths: (0..n).map(|i| format!("{prefix}-{}", base36(i))).collect(),
            bridge: format!("{prefix}-br"),
            subnet: (0, 0),
        };
        debug_assert!(
            net.veths
                .iter()
                .chain([&net.bridge])
                .all(|name| name.len() <= 15)
        );
        match net.build() {
            Ok(()) => Ok(net),
            Err(e) => {
                net.remove();
                Err(e)
            }
        }
    }

    fn build(&mut self) -> Result<(), String> {
        let mut script = String::new();
        for ns in &self.namespaces {
            writeln!(script, "netns add {ns}").unwrap();
        }
        ip(&[], &script)?;

        {
            // Choosing a free subnet and taking it happen under one lock across processes.
            let _lock = lock_file()?;
            self.subnet = free_subnet()?;
            let bridge = &self.bridge;
            let mut script = String::new();
            writeln!(script, "link add {bridge} type bridge").unwrap();
            writeln!(script, "addr add {}/24 dev {bridge}", self.addr(1)).unwrap();
            writeln!(script, "link set {bridge} up").unwrap();
            for (veth, ns) in self.veths.iter().zip(&self.namespaces) {
                writeln!(
                    script,
                    "link add {veth} type veth peer name eth0 netns {ns}"
                )
                .unwrap();
                writeln!(script, "link set {veth} master {bridge} up").unwrap();
            }
            ip(&[], &script)?;
        }

        // Inside the namespaces, in parallel.
        let children = self
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let script = format!(
                    "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\nroute add default via {}\n",
                    self.addr(i + 2),
                    self.addr(1)
                );
                spawn_ip(&["-n", ns], &script)
            })
            .collect::<Vec<_>>();
        // Every child is waited for before the first failure is reported.
        let results: Vec<Result<(), String>> = children
            .into_iter()
            .map(|child| child.and_then(wait_ip))
            .collect();
        results.into_iter().collect::<Result<(), String>>()?;

        self.check_connectivity(CHECK_TIMEOUT)
    }

    /// 10.B.C.`last`.
    fn addr(&self, last: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.subnet.0, self.subnet.1, last as u8))
    }

    /// Real TCP connections: every host reaches the root namespace at the bridge's address,
    /// itself (which needs `lo`) and the next host (switched by the bridge, where a firewall
    /// for bridged traffic would show), and the root namespace reaches every host.
    fn check_connectivity(&self, timeout: Duration) -> Result<(), String> {
        let n = self.namespaces.len();
        let deadline = Instant::now() + timeout;
        let root = TcpListener::bind((self.addr(1), 0)).map_err(|e| {
            format!(
                "cannot listen on the bridge's address {}: {e}",
                self.addr(1)
            )
        })?;
        let root = root.local_addr().map_err(|e| e.to_string())?;
        let mut listeners = Vec::new();
        for i in 0..n {
            let at = self.addr(i + 2);
            let listener = self
                .in_namespace(i, || TcpListener::bind((at, 0)))?
                .map_err(|e| format!("cannot listen on {at} in host {i}: {e}"))?;
            listeners.push(listener);
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for i in 0..n {
            let targets = [
                ("the root namespace", root),
                ("itself", addrs[i]),
                ("the next host", addrs[(i + 1) % n]),
            ];
            self.in_namespace(i, || {
                targets.iter().try_for_each(|(what, at)| {
                    connect(*at, deadline)
                        .map_err(|e| format!("host {i} cannot reach {what} at {at}: {e}"))
                })
            })??;
        }
        for (i, at) in addrs.iter().enumerate() {
            connect(*at, deadline)
                .map_err(|e| format!("the root namespace cannot reach host {i} at {at}: {e}"))?;
        }
        Ok(())
    }

    /// Runs `f` on a fresh thread that has entered host i's network namespace: sockets made
    /// there belong to the namespace. The calling thread's namespace does not change.
    fn in_namespace<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = format!("{NETNS_DIR}/{}", self.namespaces[i]);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
                // SAFETY: setns(2) on an open namespace file; it only changes this thread,
                // which ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(format!("entering {path}: {e}"));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(format!("thread in {path} panicked")))
        })
    }

    /// Deletes everything `create` makes, ignoring what is already gone. Never panics.
    fn remove(&self) {
        let mut script = String::new();
        for veth in &self.veths {
            let _ = writeln!(script, "link del {veth}");
        }
        let _ = writeln!(script, "link del {}", self.bridge);
        for ns in &self.namespaces {
            let _ = writeln!(script, "netns del {ns}");
        }
        forced_ip(&script);
    }
}

/// Connects to `at`, retrying until `deadline` (a fresh bridge port may need a moment).
fn connect(at: SocketAddr, deadline: Instant) -> std::io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(
            &at,
            left.clamp(Duration::from_millis(1), Duration::from_millis(500)),
        ) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Runs `ip [args] -batch -` with `script` on its standard input.
fn ip(args: &[&str], script: &str) -> Result<(), String> {
    spawn_ip(args, script).and_then(wait_ip)
}

type IpChild = (std::process::Child, String);

fn spawn_ip(args: &[&str], script: &str) -> Result<IpChild, String> {
    let what = format!("ip {} -batch -", args.join(" ")).replace("  ", " ");
    let mut child = Command::new("ip")
        .args(args)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "`ip` (iproute2) is not installed".to_string(),
            _ => format!("cannot run `ip`: {e}"),
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(script.as_bytes())
        .map_err(|e| format!("{what}: writing commands: {e}"))?;
    Ok((child, what))
}

fn wait_ip((child, what): IpChild) -> Result<(), String> {
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(format!("`{what}` failed: {stderr}"))
}

/// Runs `ip -force -batch -` with `script`, ignoring every failure.
fn forced_ip(script: &str) {
    if script.is_empty() {
        return;
    }
    if let Ok(mut child) = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = child.wait();
    }
}

/// `ip` output as text, or empty if it cannot be had.
fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Holds an exclusive flock(2) on [`LOCK_FILE`] until dropped.
fn lock_file() -> Result<File, String> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| format!("opening {LOCK_FILE}: {e}"))?;
    // SAFETY: flock(2) on a file descriptor we own; the lock goes with the file's closing.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("locking {LOCK_FILE}: {e}"));
    }
    Ok(file)
}

/// A 10.B.C.0/24 that no address or route of the root namespace uses, starting the search at a
/// place that depends on the process, so that concurrent processes rarely look at the same ones.
fn free_subnet() -> Result<(u8, u8), String> {
    let mut used = std::collections::HashSet::new();
    let text = ip_output(&["-o", "-4", "addr", "show"])
        + &ip_output(&["-4", "route", "show", "table", "all"]);
    for word in text.split_whitespace() {
        let ip = word.split('/').next().unwrap_or_default();
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            let [a, b, c, _] = ip.octets();
            if a == 10 {
                used.insert((b, c));
            }
        }
    }
    let count = SECOND_OCTETS.len() * 256;
    let start = std::process::id() as usize % SECOND_OCTETS.len() * 256;
    (0..count)
        .map(|j| (start + j) % count)
        .map(|j| (SECOND_OCTETS.start + (j / 256) as u8, (j % 256) as u8))
        .find(|subnet| !used.contains(subnet))
        .ok_or_else(|| "every subnet in 10.200.0.0/16 - 10.249.0.0/16 is in use".to_string())
}

/// Deletes namespaces and interfaces that earlier test processes left behind: those of a pid
/// that is no longer running, and those of this process's pid (a dead process that had it).
/// Runs once per process, before its first `Hosts` is made.
fn sweep_leftovers() {
    let mine = std::process::id();
    let stale = |pid: u32| pid == mine || !alive(pid);
    let mut script = String::new();
    for line in ip_output(&["-o", "link", "show"]).lines() {
        // "12: wlr1z2-0-1@if3: <...> ..."
        let Some(name) = line.split_whitespace().nth(1) else {
            continue;
        };
        let name = name.trim_end_matches(':');
        let name = name.split('@').next().unwrap_or_default();
        if link_pid(name).is_some_and(stale) {
            let _ = writeln!(script, "link del {name}");
        }
    }
    for line in ip_output(&["netns", "list"]).lines() {
        // "wallaroo-test-1234-0-1 (id: 3)"
        let name = line.split_whitespace().next().unwrap_or_default();
        if netns_pid(name).is_some_and(stale) {
            let _ = writeln!(script, "netns del {name}");
        }
    }
    forced_ip(&script);
}

/// The pid in an interface name `wlr<pid36>-<k36>-<i36 or br>`, if it is one.
fn link_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wlr")?;
    let mut parts = rest.split('-');
    let (pid, k, last) = (parts.next()?, parts.next()?, parts.next()?);
    let is36 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    if parts.next().is_some() || !is36(k) || !is36(last) {
        return None;
    }
    u32::from_str_radix(pid, 36).ok()
}

/// The pid in a namespace name `wallaroo-test-<pid>-<k>-<i>`, if it is one.
fn netns_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wallaroo-test-")?;
    let parts: Vec<&str> = rest.split('-').collect();
    match parts[..] {
        [pid, k, i] if k.parse::<usize>().is_ok() && i.parse::<usize>().is_ok() => pid.parse().ok(),
        _ => None,
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `n` in base 36, lower case.
fn base36(mut n: usize) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    /// Accepts one connection within `timeout`.
    fn accept(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false).unwrap();
                    return (stream, peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no connection within {timeout:?}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// A listener on host i's address, made inside its namespace if it has one.
    fn listen_in(hosts: &Hosts, i: usize, port: u16) -> TcpListener {
        let at = (hosts.addr(i), port);
        match &hosts.net {
            Some(net) => net.in_namespace(i, || TcpListener::bind(at)).unwrap(),
            None => TcpListener::bind(at),
        }
        .unwrap_or_else(|e| panic!("listening on {at:?} in host {i}: {e}"))
    }

    fn netns_list() -> String {
        ip_output(&["netns", "list"])
    }

    const ECHO: &str = "import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
c, _ = s.accept()
c.sendall(c.recv(100))
c.close()";

    const SEND: &str = "import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).sendall(b'from host 2')";

    #[test]
    fn three_hosts_reach_the_root_and_are_reached_from_it() {
        let start = Instant::now();
        let hosts = Hosts::new(3);
        eprintln!("set-up of 3 hosts took {:?}: {hosts:?}", start.elapsed());
        assert_eq!(hosts.len(), 3);
        if hosts.is_netns() {
            let addrs: std::collections::HashSet<IpAddr> = (0..3)
                .map(|i| hosts.addr(i))
                .chain([hosts.outside()])
                .collect();
            assert_eq!(addrs.len(), 4, "{hosts:?}");
        }

        // An echo server inside host 1, reached from the root at addr(1).
        let port = hosts.port(1, 7000);
        let mut server = hosts
            .command(1, "python3")
            .args(["-c", ECHO, &hosts.addr(1).to_string(), &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python3 in host 1");
        let mut ready = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        let mut stream = TcpStream::connect((hosts.addr(1), port)).unwrap();
        stream.write_all(b"hello host 1").unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap();
        assert_eq!(echoed, b"hello host 1");
        assert!(server.wait().unwrap().success());

        // A listener in the root at outside(), reached from inside host 2, from host 2's address.
        let listener = TcpListener::bind((hosts.outside(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = hosts
            .command(2, "python3")
            .args(["-c", SEND, &hosts.outside().to_string(), &port.to_string()])
            .spawn()
            .expect("starting python3 in host 2");
        let (mut stream, peer) = accept(&listener, Duration::from_secs(20));
        assert_eq!(peer.ip(), hosts.addr(2));
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"from host 2");
        assert!(client.wait().unwrap().success());
    }

    #[test]
    fn two_sets_of_hosts_at_once_do_not_collide() {
        let a = Hosts::new(2);
        let b = Hosts::new(2);
        assert_eq!(a.is_netns(), b.is_netns());
        if let (Some(na), Some(nb)) = (&a.net, &b.net) {
            assert_ne!(na.subnet, nb.subnet);
            assert_ne!(na.bridge, nb.bridge);
            assert!(na.namespaces.iter().all(|ns| !nb.namespaces.contains(ns)));
            assert!(na.veths.iter().all(|v| !nb.veths.contains(v)));
            // The same fixed port serves in a host of each.
            assert_eq!(a.port(1, 7100), 7100);
            assert_eq!(b.port(1, 7100), 7100);
        }
        let listeners: Vec<(&Hosts, u16, TcpListener)> = [&a, &b]
            .into_iter()
            .map(|hosts| {
                let port = hosts.port(1, 7100);
                (hosts, port, listen_in(hosts, 1, port))
            })
            .collect();
        for (tag, (hosts, port, listener)) in listeners.iter().enumerate() {
            let mut stream = TcpStream::connect((hosts.addr(1), *port)).unwrap();
            stream.write_all(&[tag as u8]).unwrap();
            drop(stream);
            let (mut stream, _) = accept(listener, Duration::from_secs(5));
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            assert_eq!(got, [tag as u8], "a connection to {hosts:?} went elsewhere");
        }
    }

    #[test]
    fn drop_removes_namespaces_and_interfaces() {
        let hosts = Hosts::new(2);
        let Some(net) = &hosts.net else {
            eprintln!("skipped: hosts are not in network namespaces");
            return;
        };
        let namespaces = net.namespaces.clone();
        let links: Vec<String> = net.veths.iter().chain([&net.bridge]).cloned().collect();
        let listed = netns_list();
        assert!(
            namespaces.iter().all(|ns| listed.contains(ns.as_str())),
            "{listed}"
        );
        drop(hosts);
        let listed = netns_list();
        assert!(
            namespaces.iter().all(|ns| !listed.contains(ns.as_str())),
            "{listed}"
        );
        let links_now = ip_output(&["-o", "link", "show"]);
        for link in links {
            assert!(
                !links_now.contains(&format!(" {link}")),
                "{link} remains:\n{links_now}"
            );
        }
    }

    #[test]
    fn the_connectivity_check_notices_a_host_cut_off() {
        let hosts = Hosts::new(2);
        let Some(net) = &hosts.net else {
            eprintln!("skipped: hosts are not in network namespaces");
            return;
        };
        net.check_connectivity(Duration::from_millis(500)).unwrap();
        ip(&[], &format!("link set {} down\n", net.veths[1])).unwrap();
        let err = net
            .check_connectivity(Duration::from_millis(300))
            .unwrap_err();
        assert!(err.contains("cannot reach"), "{err}");
        eprintln!("with host 1 cut off: {err}");
    }

    #[test]
    fn loopback_when_namespaces_are_not_allowed() {
        let hosts = Hosts::with_netns(3, false);
        assert!(!hosts.is_netns());
        assert_eq!(hosts.len(), 3);
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!((0..3).all(|i| hosts.addr(i) == localhost));
        assert_eq!(hosts.outside(), localhost);
        let ports: std::collections::HashSet<u16> = (0..3).map(|i| hosts.port(i, 7000)).collect();
        assert_eq!(ports.len(), 3, "{ports:?}");
        assert!(hosts.command(0, "true").status().unwrap().success());
    }

    #[test]
    fn the_variable_turns_namespaces_off_unless_empty_or_zero() {
        assert!(!forbids_netns(None));
        assert!(!forbids_netns(Some(OsStr::new(""))));
        assert!(!forbids_netns(Some(OsStr::new("0"))));
        assert!(forbids_netns(Some(OsStr::new("1"))));
        assert!(forbids_netns(Some(OsStr::new("yes"))));
    }

    #[test]
    fn names_fit_and_are_recognised() {
        let pid = 4_194_304; // the largest pid_max
        let veth = format!("wlr{}-{}-{}", base36(pid), base36(36 * 36 - 1), base36(252));
        let bridge = format!("wlr{}-{}-br", base36(pid), base36(36 * 36 - 1));
        assert!(veth.len() <= 15 && bridge.len() <= 15, "{veth} {bridge}");
        assert_eq!(link_pid(&veth), Some(pid as u32));
        assert_eq!(link_pid(&bridge), Some(pid as u32));
        assert_eq!(link_pid("wlan0"), None);
        assert_eq!(link_pid("wlr1-2"), None);
        assert_eq!(netns_pid("wallaroo-test-1234-0-2"), Some(1234));
        assert_eq!(netns_pid("wallaroo-test-1234-0"), None);
        assert_eq!(netns_pid("other"), None);
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    #[should_panic(expected = "host 3 does not exist: there are 3 hosts")]
    fn a_host_out_of_range_panics() {
        Hosts::with_netns(3, false).addr(3);
    }

    #[test]
    #[should_panic(expected = "between 1 and 253 hosts")]
    fn no_hosts_panics() {
        Hosts::with_netns(0, false);
    }
}
