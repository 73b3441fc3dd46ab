//! Ports for test nodes that are stopped and started again on the same ports. Shared by the
//! node's own process tests and the workspace's federation and web tests (included there by
//! path).

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// The first of `count` consecutive free ports on 127.0.0.1 for a node that is stopped and
/// started again on the same ports. They lie below the kernel's ephemeral range: a port picked
/// by binding `:0` is ephemeral, and while its node is down any outgoing connection (a city
/// redialling the node, another test) may take it as its source port, so the restart could not
/// bind it. Ports handed out once in this test binary are never handed out again.
pub fn restartable_ports(count: u16) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    assert!(
        ephemeral_low > low + count,
        "no room below the ephemeral ports"
    );
    let span = u64::from(ephemeral_low - low - count);
    let mut handed_out = HANDED_OUT.lock().unwrap();
    for _ in 0..500 {
        // A random start (std's hasher seeds are random), so test binaries spread out.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let base = low + (hasher.finish() % span) as u16;
        let ports = base..base + count;
        if ports.clone().any(|port| handed_out.contains(&port)) {
            continue;
        }
        let all_free = ports
            .clone()
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
            .collect::<Result<Vec<_>, _>>()
            .is_ok();
        if all_free {
            handed_out.extend(ports);
            return base;
        }
    }
    panic!("no {count} free ports in a row on 127.0.0.1 below {ephemeral_low}");
}
