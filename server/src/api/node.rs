//! The `Node` service: who the node is, its federation links, and how each document stands.

use std::time::UNIX_EPOCH;

use sfs_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{require, ApiState};
use crate::api::tokens::ApiRole;

/// The `Node` gRPC service.
pub struct NodeService(pub ApiState);

/// Size of one backup chunk.
const BACKUP_CHUNK: usize = 1024 * 1024;

impl NodeService {
    /// Every document, the token file and the access log, as one archive; local documents and
    /// the access log sealed with the backup key derived from the at-rest key.
    fn archive(&self) -> Result<pb::BackupArchive, Status> {
        let state = &self.0;
        let me = state.sync.me().clone();
        let mut documents: Vec<pb::BackupDocument> = state
            .local
            .save_all()
            .into_iter()
            .map(|(id, data)| pb::BackupDocument {
                doc_id: id.to_string(),
                data: state.at_rest.seal_backup(&data),
            })
            .collect();
        documents.extend(state.sync.read(|engine| {
            engine
                .documents()
                .map(|(id, doc)| pb::BackupDocument {
                    doc_id: id.to_string(),
                    data: doc.save(),
                })
                .collect::<Vec<_>>()
        }));
        let tokens = read_or_empty(
            &crate::api::tokens::token_file(&state.data_dir),
            "the token file",
        )?;
        let running_release = read_or_empty(
            &crate::federation::releases::ReleaseTracker::file(&state.data_dir),
            "the running release",
        )?;
        let mut entries = state
            .access_log
            .list()
            .map_err(|err| Status::unavailable(err.to_string()))?;
        entries.reverse();
        Ok(pb::BackupArchive {
            node_id: me.name().to_string(),
            role: me.role().as_str().to_string(),
            create_time_ms: super::now_ms(),
            documents,
            tokens,
            access_log: entries
                .iter()
                .map(|e| {
                    state
                        .at_rest
                        .seal_backup(&serde_json::to_vec(e).expect("entry serialises"))
                })
                .collect(),
            sealed: true,
            running_release,
        })
    }
}

/// A file's bytes, or none if it does not exist.
fn read_or_empty(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Status> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(Status::unavailable(format!("reading {what}: {err}"))),
    }
}

/// What the API shows of a token.
fn token_message(info: &crate::api::tokens::TokenInfo) -> pb::ApiToken {
    let ms = |secs: Option<u64>| secs.map(|s| (s as i64).saturating_mul(1000)).unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    pb::ApiToken {
        id: info.id.clone(),
        role: info.role.as_str().to_string(),
        state: info.state(now).to_string(),
        create_time_ms: ms(Some(info.created_unix)),
        expire_time_ms: ms(info.expires_unix),
        revoke_time_ms: ms(info.revoked_unix),
        last_use_time_ms: ms(info.last_used_unix),
        labelled: info.labelled,
    }
}

/// A token-file error as a status.
fn token_status(err: crate::api::tokens::TokenError) -> Status {
    use crate::api::tokens::TokenError;
    match err {
        TokenError::BadId(_) => Status::invalid_argument(format!("field `id`: {err}")),
        TokenError::Ambiguous { .. } => Status::invalid_argument(format!("field `id`: {err}")),
        TokenError::Unknown(_) => Status::not_found(err.to_string()),
        other => Status::unavailable(format!("the token file: {other}")),
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        require(&request, ApiRole::Admin)?;
        let tokens = self.0.tokens.clone();
        let list = super::blocking(move || tokens.list())
            .await?
            .map_err(token_status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: list.iter().map(token_message).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let caller = require(&request, ApiRole::Admin)?;
        let id = request.into_inner().id;
        let tokens = self.0.tokens.clone();
        let info = super::blocking(move || tokens.revoke(&id))
            .await?
            .map_err(token_status)?;
        tracing::info!(token = %info.id, by = %caller.actor, "revoked an API token");
        Ok(Response::new(token_message(&info)))
    }

    type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>>;

    /// The response starts at once and the archive is built and sent behind it, so the API's
    /// request timeout (`limits.api_request_timeout_ms`, which runs until a response starts)
    /// never cuts a backup of a large node.
    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        require(&request, ApiRole::Admin)?;
        let service = NodeService(self.0.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        self.0.request_tasks.spawn(async move {
            let archive = match super::blocking(move || service.archive()).await {
                Ok(Ok(archive)) => archive,
                Ok(Err(status)) | Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let bytes = prost::Message::encode_to_vec(&archive);
            for chunk in bytes.chunks(BACKUP_CHUNK) {
                let chunk = pb::BackupChunk {
                    data: chunk.to_vec(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let caller = require(&request, ApiRole::Reader)?;
        let sync = &self.0.sync;
        let certificate_expire_time_ms =
            self.0.certificates.own_not_after_unix.saturating_mul(1000);
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
                    generation: engine.generation(id).unwrap_or(0),
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
            caller_role: caller.role.as_str().to_string(),
            certificate_expire_time_ms,
        }))
    }
}
