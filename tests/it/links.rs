//! Links that go silent: a relay between csdeploy and a real sshd that
//! stops forwarding at a chosen moment while keeping both sockets open, as
//! a dropped VPN or a pulled cable does (no FIN, no RST: nothing tells ssh).
//! csdeploy must report such a host unreachable (exit 3), in bounded time,
//! and never as a step that merely took too long.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A TCP relay to `127.0.0.1:target` that goes silent once `silent` is set
/// or once the server has sent `server_budget` bytes: from then on it reads
/// and drops everything, in both directions, and never closes.
struct Relay {
    port: u16,
    silent: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: u16, server_budget: u64) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let sent = Arc::new(AtomicU64::new(0));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (f1, f2) = (flag.clone(), flag.clone());
                let no_budget = Arc::new(AtomicU64::new(0));
                std::thread::spawn(move || pump(client, server, f1, no_budget, u64::MAX));
                std::thread::spawn(move || pump(s2, c2, f2, sent, server_budget));
            }
        });
        Relay { port, silent }
    }

    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until the relay goes silent (or `budget` bytes have
/// passed), then swallows what `from` sends; both sockets stay open.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    silent: Arc<AtomicBool>,
    passed: Arc<AtomicU64>,
    budget: u64,
) {
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                if !silent.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                // A silent link never tells the other side anything.
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        let before = passed.fetch_add(n as u64, Ordering::SeqCst);
        let allowed = budget.saturating_sub(before).min(n as u64) as usize;
        if allowed < n {
            silent.store(true, Ordering::SeqCst);
        }
        if to.write_all(&buf[..allowed]).is_err() {
            return;
        }
    }
}

/// A lab of one ssh host, reached only through `relay`.
fn lab_through(server_budget: u64) -> (Lab, Relay) {
    let lab = Lab::new().hosts(1).build();
    let relay = Relay::start(lab.port("host1"), server_budget);
    let text = lab.default_inventory().replace(
        &format!("ansible_port: {}", lab.port("host1")),
        &format!("ansible_port: {}", relay.port),
    );
    lab.write_inventory(&text);
    // The relay's port is the same host to ssh: the same pinned key.
    let known = std::fs::read_to_string(&lab.known_hosts).unwrap();
    let key = known.lines().next().unwrap().split_once(' ').unwrap().1;
    std::fs::write(
        &lab.known_hosts,
        format!("{known}[127.0.0.1]:{} {key}\n", relay.port),
    )
    .unwrap();
    (lab, relay)
}

#[test]
fn a_link_silent_before_the_banner_is_unreachable_in_bounded_time() {
    let (lab, _relay) = lab_through(0);
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let report = out.json();
    let host = host(&report, "host1");
    assert_eq!(host["status"], "unreachable", "{out}");
    assert!(
        out.elapsed < Duration::from_secs(40),
        "took {:?}\n{out}",
        out.elapsed
    );
}

#[test]
fn a_link_silent_during_the_key_exchange_is_unreachable_in_bounded_time() {
    // The server's banner and the start of its key exchange pass; the rest never comes.
    let (lab, _relay) = lab_through(600);
    let out = lab.csdeploy(&["push", "--format", "json"]);
    out.assert_exit(3);
    let report = out.json();
    let host = host(&report, "host1");
    assert_eq!(host["status"], "unreachable", "{out}");
    assert!(
        host["error"].as_str().unwrap_or("").contains("handshake"),
        "{out}"
    );
    assert!(
        out.elapsed < Duration::from_secs(40),
        "took {:?}\n{out}",
        out.elapsed
    );
}

#[test]
fn a_link_silent_mid_step_is_reported_lost_not_slow() {
    let (lab, relay) = lab_through(u64::MAX);
    let playbook = lab.write_file(
        "slow.yml",
        "- hosts: all\n  tasks:\n    - name: a long step\n      command:\n        argv: [sleep, '20']\n",
    );
    let playbook = playbook.display().to_string();
    let started = Instant::now();
    let out = lab.csdeploy_meanwhile(
        &["run", &playbook, "--timeout", "5", "--format", "json"],
        &[],
        move |_| {
            std::thread::sleep(Duration::from_secs(2));
            relay.go_silent();
        },
    );
    out.assert_exit(3);
    let report = out.json();
    let host = host(&report, "host1");
    assert_eq!(host["status"], "unreachable", "{out}");
    let error = host["error"].as_str().unwrap_or("");
    assert!(error.contains("lost"), "{error}\n{out}");
    assert!(started.elapsed() < Duration::from_secs(40), "{out}");
}
