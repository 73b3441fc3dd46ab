//! The federation listener of the national hub and of county hubs: accepts one `Sync` stream
//! per peer over mutual TLS.
//!
//! The peer's identity is read from its verified client certificate, never from a frame; a
//! connection without a certificate from the national CA never reaches this code (rustls
//! refuses the handshake). Which peers may link is [`AcceptedPeers`]: at a national hub every
//! city and county hub and its listed standby hubs, at a county hub only the cities of its
//! `county.cities`. After that the
//! stream is driven by [`crate::federation::sync`] like any link, and every change the hub
//! accepts is offered at once to every other open link (its upstream's included).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sfs_proto::v1 as pb;
use sfs_sync::{NodeId, Role};
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::federation::outbox::OutboxStream;
use crate::federation::pki;
use crate::federation::sync::{read_link, Outbox, SyncHandle};

/// The `Federation` gRPC service of the hub.
pub struct FederationService {
    pub sync: Arc<SyncHandle>,
    pub shutdown: watch::Receiver<bool>,
    pub revocations: Arc<Revocations>,
    /// Where each city's certificate expiry is shown.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each link's reader runs here, so that stopping the node waits for every one of them.
    pub link_tasks: tokio_util::task::TaskTracker,
    /// Where the certificate each city presents is noted (for the directory view).
    pub certificates: Arc<CertificateWatch>,
    /// Which peers may link here.
    pub accepted: AcceptedPeers,
}

/// Which peers a federation listener accepts, besides a certificate from the national CA that
/// is not revoked.
#[derive(Debug, Clone)]
pub enum AcceptedPeers {
    /// A national hub: every city and every county hub, and the standby national hubs named
    /// here (its `federation.standby_hubs`).
    National(BTreeSet<String>),
    /// A county hub: only the cities it serves (its `county.cities` and those onboarded
    /// through the API since).
    County(Arc<crate::federation::county::CountyMembers>),
}

impl AcceptedPeers {
    /// Why `peer` may not link here, if it may not (`PERMISSION_DENIED` to the peer).
    pub fn refusal(&self, peer: &NodeId) -> Option<String> {
        match (self, peer.role()) {
            (AcceptedPeers::National(_), Role::City | Role::County) => None,
            (AcceptedPeers::National(standbys), Role::Hub) if standbys.contains(peer.name()) => {
                None
            }
            (AcceptedPeers::National(_), _) => Some(format!(
                "{peer} is neither a city, a county hub nor a standby of this hub (federation.standby_hubs); only those link to a national hub"
            )),
            (AcceptedPeers::County(cities), Role::City) if cities.contains(peer.name()) => None,
            (AcceptedPeers::County(_), Role::City) => Some(format!(
                "{peer} is not one of this county hub's cities (county.cities, or onboarded \
                 with `sfs cities add` at the county hub)"
            )),
            (AcceptedPeers::County(_), _) => Some(format!(
                "{peer} is not a city; only the county's cities link to a county hub"
            )),
        }
    }
}

/// What a node knows of certificates, for `GetStatus` and the directory: its own expiry and, at
/// the hub, the certificate each city last linked with (or tried to), kept in memory.
pub struct CertificateWatch {
    /// When this node's own certificate expires, seconds since the Unix epoch.
    pub own_not_after_unix: i64,
    /// The revocation list the hub enforces (empty elsewhere).
    pub revocations: Arc<Revocations>,
    cities: Mutex<std::collections::BTreeMap<String, CityCertificate>>,
}

/// The certificate a city last presented to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CityCertificate {
    pub serial: String,
    /// Seconds since the Unix epoch; 0 if it could not be read.
    pub not_after_unix: i64,
    /// Whether the serial is on the revocation list now.
    pub revoked: bool,
}

impl CertificateWatch {
    pub fn new(own_not_after_unix: i64, revocations: Arc<Revocations>) -> CertificateWatch {
        CertificateWatch {
            own_not_after_unix,
            revocations,
            cities: Mutex::new(Default::default()),
        }
    }

    /// Notes the certificate `city` presented.
    pub fn presented(&self, city: &str, serial: &str, not_after_unix: i64) {
        self.cities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                city.to_string(),
                CityCertificate {
                    serial: serial.to_string(),
                    not_after_unix,
                    revoked: false,
                },
            );
    }

    /// The certificate `city` last presented, checked against the revocation list as it is now.
    pub fn of_city(&self, city: &str) -> Option<CityCertificate> {
        let mut cert = self
            .cities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(city)
            .cloned()?;
        cert.revoked = self.revocations.is_revoked(&cert.serial);
        Some(cert)
    }
}

/// The revocation list the hub enforces (`tls.revoked`), re-read when the file changes.
pub struct Revocations {
    path: Option<PathBuf>,
    serials: Mutex<BTreeSet<String>>,
    /// Modification time and length of the file as last read.
    seen: Mutex<Option<(SystemTime, u64)>>,
}

impl Revocations {
    /// The list at `path` (none: nothing is revoked), read now.
    pub fn load(path: Option<PathBuf>) -> Result<Revocations, pki::PkiError> {
        let revocations = Revocations {
            path,
            serials: Mutex::new(BTreeSet::new()),
            seen: Mutex::new(None),
        };
        revocations.refresh()?;
        Ok(revocations)
    }

    /// Re-reads the list if the file changed; returns whether it did.
    pub fn refresh(&self) -> Result<bool, pki::PkiError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == stamp && stamp.is_some() {
            return Ok(false);
        }
        let serials = pki::read_revoked(path)?;
        *seen = stamp;
        *self.serials.lock().unwrap_or_else(|p| p.into_inner()) = serials;
        Ok(true)
    }

    /// The revoked serials.
    pub fn serials(&self) -> BTreeSet<String> {
        self.serials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the certificate with this serial is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.serials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(serial)
    }
}

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationService {
    type SyncStream = OutboxStream<Result<pb::Frame, Status>>;

    async fn sync(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated("a client certificate from the national CA is required")
        })?;
        let leaf = certs.first().ok_or_else(|| {
            Status::unauthenticated("a client certificate from the national CA is required")
        })?;
        let peer = pki::identity_of(leaf.as_ref())
            .map_err(|err| Status::unauthenticated(format!("client certificate: {err}")))?;
        if let Some(refusal) = self.accepted.refusal(&peer) {
            tracing::warn!(%peer, %refusal, "refused a link");
            return Err(Status::permission_denied(refusal));
        }
        let serial = pki::serial_of(leaf.as_ref())
            .map_err(|err| Status::unauthenticated(format!("client certificate: {err}")))?;
        self.certificates.presented(
            peer.name(),
            &serial,
            pki::not_after_of_der(leaf.as_ref()).unwrap_or(0),
        );
        if self.revocations.is_revoked(&serial) {
            tracing::warn!(%peer, %serial, "refused a revoked certificate");
            return Err(Status::permission_denied(format!(
                "the certificate of {peer} (serial {serial}) is revoked"
            )));
        }
        if let Ok(not_after) = pki::not_after_of_der(leaf.as_ref()) {
            self.metrics
                .city_certificate_expiry
                .get_or_create(&crate::metrics::CityLabels {
                    city: peer.name().to_string(),
                })
                .set(not_after);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let days = pki::days_left(not_after, now);
            if days < pki::EXPIRY_WARNING_DAYS {
                tracing::warn!(%peer, days_left = days, "a city's certificate expires soon: issue it a new one (`sfs-node pki issue`)");
            }
        }
        if let Err(err) = self.sync.admit(&peer) {
            return Err(Status::resource_exhausted(format!("{peer}: {err}")));
        }
        let (tx, rx) = self.sync.new_outbox();
        let (stop_tx, stop_rx) = oneshot::channel();
        let inbound = request.into_inner();
        let sync = self.sync.clone();
        let conn = {
            let (sync, peer) = (sync.clone(), peer.clone());
            tokio::task::spawn_blocking(move || {
                sync.open_link(peer, Some(serial), Outbox::Server(tx), stop_tx)
            })
            .await
            .map_err(|_| Status::internal("opening the link failed"))?
        };
        tracing::info!(%peer, conn, "peer connected");
        self.link_tasks.spawn(read_link(
            sync,
            conn,
            peer,
            inbound,
            stop_rx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_county_hub_accepts_only_its_listed_cities_and_the_national_hub_cities_counties_and_standbys(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let members =
            crate::federation::county::CountyMembers::open(dir.path(), &["malmo".to_string()])
                .unwrap();
        let county = AcceptedPeers::County(Arc::new(members));
        let malmo = NodeId::city("malmo").unwrap();
        let umea = NodeId::city("umea").unwrap();
        let skane = NodeId::county("skane").unwrap();
        let hub = NodeId::hub("national").unwrap();
        assert_eq!(county.refusal(&malmo), None);
        assert!(county.refusal(&umea).unwrap().contains("county.cities"));
        assert!(county.refusal(&skane).is_some());
        assert!(county.refusal(&hub).is_some());
        let national = AcceptedPeers::National(["standby".to_string()].into_iter().collect());
        assert_eq!(national.refusal(&umea), None);
        assert_eq!(national.refusal(&skane), None);
        assert!(national.refusal(&hub).unwrap().contains("standby_hubs"));
        assert_eq!(national.refusal(&NodeId::hub("standby").unwrap()), None);
    }
}
