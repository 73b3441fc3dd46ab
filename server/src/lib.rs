//! The stadforstad node: a city node or the national hub, in one binary (`sfs-node`).
//!
//! Layout: [`config`] reads `node.toml`; [`pki`] makes and reads certificates; [`store`] keeps
//! documents in sled, local ones sealed by [`seal`]; [`sync`] drives the sans-IO engine of the `sfs-sync` crate over tonic and
//! [`hub`] accepts city links; [`api`] serves apps and the CLI; [`lessons`] and [`register`]
//! are the document models, sharing [`model`] (typed errors, input checks; no gRPC); [`release`] decides which signed handbook release a node runs; [`tokens`] holds API tokens; [`node`] starts and stops it all;
//! [`demo`] runs a whole local federation.

pub mod api;
pub mod api_listener;
pub mod config;
pub mod demo;
pub mod directory;
pub mod docmodel;
pub mod handbook_notes;
pub mod hub;
pub mod lessons;
pub mod limits;
pub mod method;
pub mod metrics;
pub mod model;
pub mod node;
pub mod outbox;
pub mod pieces;
pub mod pki;
pub mod privacy;
pub mod progress;
pub mod register;
pub mod release;
pub mod seal;
pub mod signals;
pub mod stats;
pub mod store;
pub mod sync;
pub mod tokens;
pub mod workers;
