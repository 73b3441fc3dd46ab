//! The stadforstad node: a city node or the national hub, in one binary (`sfs-node`).
//!
//! Layers, each using only the ones below it (ARCHITECTURE.md):
//!
//! - [`node`] (top): configuration, starting and stopping a node, background workers, the demo.
//! - [`api`]: the gRPC services, tokens and roles, the API listener, the one mapping of errors
//!   to gRPC status.
//! - [`federation`]: the transport of the sync engine and its one driver, the hub's side of
//!   links, outboxes, limits, certificates, release tracking.
//! - [`storage`]: sled, sealing at rest, local documents.
//! - [`domain`] (bottom): the document models, with typed errors and no I/O.
//!
//! [`metrics`] is shared by every layer and uses none of them.

pub mod api;
pub mod domain;
pub mod federation;
pub mod metrics;
pub mod node;
pub mod storage;
