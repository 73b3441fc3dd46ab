//! The upstream links of a city or county hub, with failover to a standby national hub.
//!
//! A node dials its first upstream (`federation.hub_url`: the national hub, or a city's county
//! hub). With a standby configured (`federation.standby_url`, `standby_id`) the policy is
//! [`Failover`]:
//!
//! - when a link to the first upstream ends, or an attempt to open one fails, the node dials
//!   the standby at once;
//! - when a link to the standby ends, or an attempt fails, it waits its reconnect backoff and
//!   dials the first upstream again (so with both down it alternates, one backoff per round);
//! - while linked to the standby it tries the first upstream every `federation.failback_ms`
//!   (a TLS connection, nothing synced); once that answers, it closes the standby link and
//!   dials the first upstream at once.
//!
//! Nothing is lost in a move: each link resumes from the sync states persisted for its peer,
//! and both hubs hold every document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sfs_sync::backoff::Backoff;
use sfs_sync::NodeId;
use tokio::sync::watch;

use crate::federation::sync::{
    connect_endpoint, link_once, HubLinkConfig, LinkEnd, SyncHandle, SHUTTING_DOWN,
};

/// The standby national hub a node fails over to.
#[derive(Clone)]
pub struct StandbyLink {
    /// The standby's URL (`federation.standby_url`).
    pub url: String,
    /// The standby's identity (`federation.standby_id`); its certificate must name it.
    pub id: NodeId,
    /// While linked to the standby, how often the first upstream is tried again.
    pub failback: Duration,
}

/// Which upstream a node dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// `federation.hub_url`.
    First,
    /// `federation.standby_url`.
    Standby,
}

/// What a node does after a link (or an attempt) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Dial the (new) current upstream at once.
    DialNow,
    /// Wait the reconnect backoff first.
    DialAfterBackoff,
}

/// The failover policy, without I/O (see the module documentation).
#[derive(Debug, Clone)]
pub struct Failover {
    has_standby: bool,
    current: Upstream,
}

impl Failover {
    /// Starts at the first upstream.
    pub fn new(has_standby: bool) -> Failover {
        Failover {
            has_standby,
            current: Upstream::First,
        }
    }

    /// The upstream to dial now.
    pub fn current(&self) -> Upstream {
        self.current
    }

    /// The link to the current upstream ended, or the attempt failed; `moved_back`: this node
    /// closed its standby link because the first upstream answers again.
    pub fn ended(&mut self, moved_back: bool) -> Next {
        match (self.has_standby, self.current) {
            (false, _) => Next::DialAfterBackoff,
            (true, Upstream::First) => {
                self.current = Upstream::Standby;
                Next::DialNow
            }
            (true, Upstream::Standby) => {
                self.current = Upstream::First;
                if moved_back {
                    Next::DialNow
                } else {
                    Next::DialAfterBackoff
                }
            }
        }
    }
}

/// A city's or county hub's links upstream: dial, sync until the link ends, fail over or wait,
/// dial again, until the node stops.
pub async fn run_upstream_links(
    sync: Arc<SyncHandle>,
    config: HubLinkConfig,
    standby: Option<StandbyLink>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), config.max_backoff);
    let mut failover = Failover::new(standby.is_some());
    loop {
        if *shutdown.borrow() {
            return;
        }
        let to_standby = match (failover.current(), &standby) {
            (Upstream::Standby, Some(standby)) => Some(standby),
            _ => None,
        };
        let (url, peer) = match to_standby {
            Some(standby) => (standby.url.as_str(), &standby.id),
            None => (config.hub_url.as_str(), &config.hub_id),
        };
        sync.set_peer_state(peer, "connecting", None);
        let started = Instant::now();
        let end: LinkEnd = match to_standby {
            Some(standby) => {
                let move_back = first_upstream_answers(&config, standby.failback);
                link_once(&sync, &config, url, peer, shutdown.clone(), move_back).await
            }
            None => {
                let never = std::future::pending();
                link_once(&sync, &config, url, peer, shutdown.clone(), never).await
            }
        };
        if *shutdown.borrow() {
            return;
        }
        sync.set_peer_state(peer, "disconnected", end.error.clone());
        match &end.error {
            // The hub restarting (or this node stopping) ends links normally.
            Some(error) if error.contains(SHUTTING_DOWN) => {
                tracing::info!(hub = %peer, "hub link closed: the hub or this node is stopping")
            }
            Some(error) => tracing::warn!(hub = %peer, %error, "hub link ended"),
            None if end.moved_back => {
                tracing::info!(standby = %peer, hub = %config.hub_id, "moving back from the standby hub")
            }
            None => {}
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        let next = failover.ended(end.moved_back);
        if let (Next::DialNow, Some(standby)) = (next, &standby) {
            if failover.current() == Upstream::Standby {
                tracing::warn!(hub = %config.hub_id, standby = %standby.id, "failing over to the standby hub");
            }
            continue;
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Longest a try of the first upstream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Completes once the first upstream accepts a connection (TLS with this node's certificate),
/// tried every `every`.
async fn first_upstream_answers(config: &HubLinkConfig, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Ok(endpoint) = connect_endpoint(config, &config.hub_url, &config.hub_id) else {
            continue;
        };
        // Bounded: a handshake that never finishes (a machine gone without closing anything)
        // must not stop the next try.
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, endpoint.connect()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_fails_over_at_once_and_moves_back_when_the_first_upstream_answers() {
        let mut failover = Failover::new(true);
        assert_eq!(failover.current(), Upstream::First);
        // The first upstream is lost: the standby at once.
        assert_eq!(failover.ended(false), Next::DialNow);
        assert_eq!(failover.current(), Upstream::Standby);
        // The standby is lost too: back to the first after the backoff.
        assert_eq!(failover.ended(false), Next::DialAfterBackoff);
        assert_eq!(failover.current(), Upstream::First);
        // Down again: the standby; later the first answers again: moved back at once.
        assert_eq!(failover.ended(false), Next::DialNow);
        assert_eq!(failover.ended(true), Next::DialNow);
        assert_eq!(failover.current(), Upstream::First);
    }

    #[test]
    fn without_a_standby_a_node_redials_its_upstream_after_the_backoff() {
        let mut failover = Failover::new(false);
        for _ in 0..3 {
            assert_eq!(failover.ended(false), Next::DialAfterBackoff);
            assert_eq!(failover.current(), Upstream::First);
        }
    }
}
