//! The `Node` service: who the node is, its federation links, and how each document stands.

use std::time::UNIX_EPOCH;

use sfs_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{require, ApiState};
use crate::tokens::ApiRole;

/// The `Node` gRPC service.
pub struct NodeService(pub ApiState);

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        require(&request, ApiRole::Reader)?;
        let sync = &self.0.sync;
        let me = sync.me().clone();
        let peers = sync
            .peer_states()
            .into_iter()
            .map(|(peer, state)| pb::PeerStatus {
                peer_id: peer.name().to_string(),
                peer_role: peer.role().as_str().to_string(),
                state: state.state.to_string(),
                last_error: state.last_error,
                since_ms: state
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            })
            .collect();
        let documents = sync.read(|engine| {
            engine
                .documents()
                .map(|(id, doc)| pb::DocumentStatus {
                    doc_id: id.as_str().to_string(),
                    heads: doc.get_heads().iter().map(|h| h.to_string()).collect(),
                    peers: engine
                        .doc_sync_with_peers(id)
                        .into_iter()
                        .map(|(peer, in_sync)| pb::DocPeerSync {
                            peer_id: peer.name().to_string(),
                            state: if in_sync { "in_sync" } else { "syncing" }.to_string(),
                        })
                        .collect(),
                })
                .collect()
        });
        Ok(Response::new(pb::NodeStatus {
            node_id: me.name().to_string(),
            role: me.role().as_str().to_string(),
            peers,
            documents,
        }))
    }
}
