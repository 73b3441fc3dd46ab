//! The federation, above storage: the node's transport for the sans-IO engine and its one
//! driver ([`sync`]), the hub's side of links ([`hub`]), the bounded outboxes ([`outbox`]), the
//! per-peer limits ([`limits`]), the federation's certificates ([`pki`]), the tracking of the
//! signed handbook release a node runs ([`releases`]), the cities a county hub serves
//! ([`county`]) and a node's upstream links with failover
//! to a standby national hub ([`upstream`]).

pub mod county;
pub mod hub;
pub mod limits;
pub mod outbox;
pub mod pki;
pub mod releases;
pub mod sync;
pub mod upstream;
