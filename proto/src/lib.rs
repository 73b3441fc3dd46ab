//! The gRPC contract of stadforstad, generated from the files in `proto/stadforstad/v1`.
//!
//! Everything a client or the node needs to speak the API and the federation protocol lives in
//! [`v1`]. The encoded file descriptor set is in [`FILE_DESCRIPTOR_SET`] for server reflection.

/// Version 1 of the API and of the federation protocol.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("stadforstad.v1");
}

pub mod codec;

/// The encoded `FileDescriptorSet` of every .proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/stadforstad_descriptor.bin"));
