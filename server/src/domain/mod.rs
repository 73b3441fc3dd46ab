//! The document models, the lowest layer: what each document holds, how it is read, written
//! and validated, with typed errors and no gRPC, no storage and no federation. Each model reads
//! and writes the API's own message types (`sfs_proto`), so there is no second set of structs.
//!
//! - [`model`]: what every model shares (`ModelError`, input checks, `quote`, the clock);
//!   [`docmodel`]: collections of records as Automerge maps, text, lists, versions.
//! - [`lessons`] (`shared/lessons/{city}`), [`register`] (`local/network`), [`signals`]
//!   (`local/signals`), [`method`] (`national/method`: handbook, releases, history diffs),
//!   [`progress`] (`shared/progress/{city}`), [`directory`] (`national/directory`),
//!   [`county_links`] (`county/{county}/links`: a county hub's cities' link state),
//!   [`stats`] (anonymised statistics, pure, and their documents).
//! - [`release`]: which signed handbook release may run (pure).
//! - [`privacy`]: the guard for shared text (pure).

pub mod county_links;
pub mod directory;
pub mod docmodel;
pub mod handbook_notes;
pub mod lessons;
pub mod method;
pub mod model;
pub mod privacy;
pub mod progress;
pub mod register;
pub mod release;
pub mod signals;
pub mod stats;
