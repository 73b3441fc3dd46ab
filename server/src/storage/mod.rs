//! Storage, above the document models: sled behind our own types ([`store`]) with a redo log in
//! front of it that makes writes durable ([`journal`]), sealing at rest
//! ([`seal`]), values cut into pieces under sled's blob threshold ([`pieces`]), and the city's
//! local documents with their one-writer-per-document path to the disk ([`local`]).

pub mod journal;
pub mod local;
pub mod pieces;
pub mod seal;
pub mod store;
