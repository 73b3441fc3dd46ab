//! Rust client library for a stadforstad node's gRPC API, and the `sfs` command line.
//!
//! ```no_run
//! # async fn example() -> Result<(), sfs_client::ClientError> {
//! let ca = std::fs::read_to_string("pki/ca.crt").unwrap();
//! let mut client = sfs_client::Client::connect("https://127.0.0.1:7443", "sfs_…", &ca).await?;
//! let lesson = client.create_lesson("Title", "Body", vec!["tag".into()]).await?;
//! println!("{}", lesson.name);
//! # Ok(()) }
//! ```

pub mod cli;
pub mod export;

use sfs_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub use sfs_proto::v1;
/// Signed handbook releases (the crate both the `sfs` command line and every node use).
pub use sfs_release as release;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("the token contains characters that cannot be sent in a header")]
    BadToken,
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
}

/// A release the national coordinator wants to sign; the rest is read from the hub.
#[derive(Debug, Clone)]
pub struct ReleaseDraft {
    /// The version label, for example `2027.1`.
    pub label: String,
    /// The release notes.
    pub notes: String,
    /// How long cities accept the release after it is signed, in milliseconds.
    pub valid_for_ms: i64,
    /// The release number; by default one more than the highest at the hub.
    pub number: Option<i64>,
    /// The handbook version (heads) to release; by default the hub's newest state.
    pub version: Option<String>,
}

/// The gRPC status code in the words of the gRPC specification.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that adds the bearer token to every call.
pub type Authed = InterceptedService<Channel, BearerToken>;

/// A connection to one node's API. Each service's generated client is a public field for full
/// access to every method; the methods below cover the common tasks.
#[derive(Clone)]
pub struct Client {
    pub lessons: pb::lessons_client::LessonsClient<Authed>,
    pub register: pb::register_client::RegisterClient<Authed>,
    pub signals: pb::signals_client::SignalsClient<Authed>,
    pub method: pb::method_client::MethodClient<Authed>,
    pub progress: pb::progress_client::ProgressClient<Authed>,
    pub directory: pb::directory_client::DirectoryClient<Authed>,
    pub stats: pb::statistics_client::StatisticsClient<Authed>,
    pub node: pb::node_client::NodeClient<Authed>,
    /// The standard gRPC health service (no token needed; the bearer is sent anyway).
    pub health: tonic_health::pb::health_client::HealthClient<Authed>,
}

impl Client {
    /// Connects over TLS, trusting only `ca_pem`, and authenticates every call with `token`.
    pub async fn connect(endpoint: &str, token: &str, ca_pem: &str) -> Result<Client, ClientError> {
        let bad = |message: String| ClientError::Endpoint {
            endpoint: endpoint.to_string(),
            message,
        };
        if let Some(rest) = endpoint.strip_prefix("http://") {
            return Err(bad(format!(
                "the API is served over TLS only: write https://{rest}"
            )));
        }
        if !endpoint.contains("://") {
            return Err(bad(format!(
                "the scheme is missing: write https://{endpoint}"
            )));
        }
        if !endpoint.starts_with("https://") {
            return Err(bad("the API is served over https:// only".to_string()));
        }
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| bad(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                let message = error_chain(&e);
                let message = message
                    .strip_prefix("transport error: ")
                    .unwrap_or(&message);
                ClientError::Connect {
                    endpoint: endpoint.to_string(),
                    message: format!("{message}{}", connect_hint(message)),
                }
            })?;
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::BadToken)?;
        let auth = BearerToken(value);
        Ok(Client {
            lessons: pb::lessons_client::LessonsClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            register: pb::register_client::RegisterClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            signals: pb::signals_client::SignalsClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            method: pb::method_client::MethodClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            progress: pb::progress_client::ProgressClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            directory: pb::directory_client::DirectoryClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            stats: pb::statistics_client::StatisticsClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            node: pb::node_client::NodeClient::with_interceptor(channel.clone(), auth.clone()),
            health: tonic_health::pb::health_client::HealthClient::with_interceptor(channel, auth),
        })
    }

    /// Creates a lesson owned by the node's city.
    pub async fn create_lesson(
        &mut self,
        title: &str,
        body: &str,
        tags: Vec<String>,
    ) -> Result<pb::Lesson, ClientError> {
        let lesson = pb::Lesson {
            title: title.to_string(),
            body: body.to_string(),
            tags,
            ..Default::default()
        };
        self.create_lesson_from(lesson).await
    }

    /// Creates a lesson from a full message (for example with `method_step` set).
    pub async fn create_lesson_from(
        &mut self,
        lesson: pb::Lesson,
    ) -> Result<pb::Lesson, ClientError> {
        Ok(self
            .lessons
            .create_lesson(pb::CreateLessonRequest {
                lesson: Some(lesson),
            })
            .await?
            .into_inner())
    }

    /// Deletes a lesson of the node's own city, also from the history on every node; returns
    /// the generation of the city's lessons without it.
    pub async fn delete_lesson(&mut self, name: &str) -> Result<u64, ClientError> {
        Ok(self
            .lessons
            .delete_lesson(pb::DeleteLessonRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner()
            .generation)
    }

    /// Removes the text of a lesson (the `fields` named, or all) from every node and its
    /// history; returns the lesson as it now stands and the new generation.
    pub async fn redact_lesson(
        &mut self,
        name: &str,
        fields: Vec<String>,
    ) -> Result<(pb::Lesson, u64), ClientError> {
        let response = self
            .lessons
            .redact_lesson(pb::RedactLessonRequest {
                name: name.to_string(),
                fields,
            })
            .await?
            .into_inner();
        Ok((response.lesson.unwrap_or_default(), response.generation))
    }

    /// Gets one lesson by name (`cities/{city}/lessons/{id}`).
    pub async fn get_lesson(&mut self, name: &str) -> Result<pb::Lesson, ClientError> {
        Ok(self
            .lessons
            .get_lesson(pb::GetLessonRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Updates the fields of `lesson` named in `mask` (empty: all writable fields).
    pub async fn update_lesson(
        &mut self,
        lesson: pb::Lesson,
        mask: Vec<String>,
    ) -> Result<pb::Lesson, ClientError> {
        Ok(self
            .lessons
            .update_lesson(pb::UpdateLessonRequest {
                lesson: Some(lesson),
                update_mask: mask,
            })
            .await?
            .into_inner())
    }

    /// One page of lessons under `parent` (`cities/{city}` or `cities/-`).
    pub async fn list_lessons_page(
        &mut self,
        parent: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListLessonsResponse, ClientError> {
        Ok(self
            .lessons
            .list_lessons(pb::ListLessonsRequest {
                parent: parent.to_string(),
                page_size,
                page_token: page_token.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// Every lesson under `parent`, following pages.
    pub async fn list_lessons(&mut self, parent: &str) -> Result<Vec<pb::Lesson>, ClientError> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_lessons_page(parent, 500, &token).await?;
            all.extend(page.lessons);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Adds a member organisation to the register.
    pub async fn create_organisation(
        &mut self,
        display_name: &str,
        sector: &str,
    ) -> Result<pb::Organisation, ClientError> {
        let organisation = pb::Organisation {
            display_name: display_name.to_string(),
            sector: sector.to_string(),
            ..Default::default()
        };
        Ok(self
            .register
            .create_organisation(pb::CreateOrganisationRequest {
                organisation: Some(organisation),
            })
            .await?
            .into_inner())
    }

    /// Lists every member organisation.
    pub async fn list_organisations(&mut self) -> Result<Vec<pb::Organisation>, ClientError> {
        Ok(self
            .register
            .list_organisations(pb::ListRequest {
                page_size: 500,
                page_token: String::new(),
            })
            .await?
            .into_inner()
            .organisations)
    }

    /// Adds a contact person to the register.
    pub async fn create_contact(
        &mut self,
        contact: pb::Contact,
    ) -> Result<pb::Contact, ClientError> {
        Ok(self
            .register
            .create_contact(pb::CreateContactRequest {
                contact: Some(contact),
            })
            .await?
            .into_inner())
    }

    /// Lists every contact person.
    pub async fn list_contacts(&mut self) -> Result<Vec<pb::Contact>, ClientError> {
        Ok(self
            .register
            .list_contacts(pb::ListRequest {
                page_size: 500,
                page_token: String::new(),
            })
            .await?
            .into_inner()
            .contacts)
    }

    /// The method handbook this node serves (on a node with a release key: the content of
    /// the verified release it runs).
    pub async fn handbook(&mut self) -> Result<pb::Handbook, ClientError> {
        Ok(self
            .method
            .get_handbook(pb::GetHandbookRequest { latest: false })
            .await?
            .into_inner())
    }

    /// The newest state of the handbook on this node (at the hub: the working draft).
    pub async fn handbook_latest(&mut self) -> Result<pb::Handbook, ClientError> {
        Ok(self
            .method
            .get_handbook(pb::GetHandbookRequest { latest: true })
            .await?
            .into_inner())
    }

    /// The release this node runs and the releases it does not run, with reasons.
    pub async fn running_release(&mut self) -> Result<pb::RunningRelease, ClientError> {
        Ok(self
            .method
            .get_running_release(pb::GetRunningReleaseRequest {})
            .await?
            .into_inner())
    }

    /// Builds and signs a release at the hub's current state (or `draft.version`), numbered
    /// one above the hub's highest release unless `draft.number` says otherwise. Nothing is
    /// sent; see [`Client::create_signed_release`].
    pub async fn sign_release(
        &mut self,
        key: &release::SigningKey,
        draft: ReleaseDraft,
        now_ms: i64,
    ) -> Result<pb::Release, ClientError> {
        // The release names the generation of the handbook its heads belong to (signed too).
        let latest = self.handbook_latest().await?;
        let version = draft.version.unwrap_or(latest.version);
        let number = match draft.number {
            Some(number) => number,
            None => {
                let mut highest = 0;
                let mut page_token = String::new();
                loop {
                    let page = self
                        .method
                        .list_releases(pb::ListRequest {
                            page_size: 500,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    highest = page
                        .releases
                        .iter()
                        .map(|r| r.number)
                        .fold(highest, i64::max);
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
                highest + 1
            }
        };
        let mut release = pb::Release {
            version_label: draft.label.trim().to_string(),
            notes: draft.notes,
            version,
            number,
            issue_time_ms: now_ms,
            expire_time_ms: now_ms.saturating_add(draft.valid_for_ms),
            generation: latest.generation,
            ..Default::default()
        };
        key.sign(&mut release)?;
        Ok(release)
    }

    /// Signs a release on this machine ([`Client::sign_release`]) and submits it to the hub.
    pub async fn create_signed_release(
        &mut self,
        key: &release::SigningKey,
        draft: ReleaseDraft,
    ) -> Result<pb::Release, ClientError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let release = self.sign_release(key, draft, now_ms).await?;
        Ok(self
            .method
            .create_release(pb::CreateReleaseRequest {
                release: Some(release),
            })
            .await?
            .into_inner())
    }

    /// Removes text from the handbook and its history at the hub (`Method.RedactHandbook`):
    /// the resources named whole, or only `fields` of them, or only the occurrences of `text`.
    pub async fn redact_handbook(
        &mut self,
        names: Vec<String>,
        fields: Vec<String>,
        text: String,
    ) -> Result<pb::RedactHandbookResponse, ClientError> {
        Ok(self
            .method
            .redact_handbook(pb::RedactHandbookRequest {
                names,
                fields,
                text,
            })
            .await?
            .into_inner())
    }

    /// What changed in the handbook since a release (label or name).
    pub async fn handbook_changes_since_release(
        &mut self,
        release: &str,
    ) -> Result<pb::DiffHandbookResponse, ClientError> {
        let since = pb::diff_handbook_request::Since::SinceRelease(release.to_string());
        Ok(self
            .method
            .diff_handbook(pb::DiffHandbookRequest { since: Some(since) })
            .await?
            .into_inner())
    }

    /// What changed in the handbook since a version seen earlier.
    pub async fn handbook_changes_since_version(
        &mut self,
        version: &str,
    ) -> Result<pb::DiffHandbookResponse, ClientError> {
        let since = pb::diff_handbook_request::Since::SinceVersion(version.to_string());
        Ok(self
            .method
            .diff_handbook(pb::DiffHandbookRequest { since: Some(since) })
            .await?
            .into_inner())
    }

    /// Whether the node answers the standard gRPC health check as serving: a call that reads no
    /// document and checks no token.
    pub async fn serving(&mut self) -> Result<bool, ClientError> {
        let status = self
            .health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status;
        Ok(status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    }

    /// The node's status: peers and per-document sync state.
    pub async fn status(&mut self) -> Result<pb::NodeStatus, ClientError> {
        Ok(self
            .node
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner())
    }
}

/// An error and its causes as one line, each cause once: a cause whose text the line already
/// holds (many errors repeat their source in their own message) is left out.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let cause = err.to_string();
        if !cause.is_empty() && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = err.source();
    }
    text
}

/// What to do about a failed connection, by its cause.
fn connect_hint(message: &str) -> &'static str {
    if message.contains("Connection refused") {
        "; is the node running, and is this its API address (api.listen)?"
    } else if message.contains("certificate") || message.contains("UnknownIssuer") {
        "; is --ca (SFS_CA) the CA that signed the node's certificate?"
    } else if message.contains("timed out") || message.contains("deadline") {
        "; is the address reachable from here (firewall)?"
    } else {
        ""
    }
}
