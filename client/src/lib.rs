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

use sfs_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub use sfs_proto::v1;

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
}

impl Client {
    /// Connects over TLS, trusting only `ca_pem`, and authenticates every call with `token`.
    pub async fn connect(endpoint: &str, token: &str, ca_pem: &str) -> Result<Client, ClientError> {
        let bad = |message: String| ClientError::Endpoint {
            endpoint: endpoint.to_string(),
            message,
        };
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| bad(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| ClientError::Connect {
                endpoint: endpoint.to_string(),
                message: error_chain(&e),
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
            node: pb::node_client::NodeClient::with_interceptor(channel, auth),
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

    /// The method handbook as this node has it.
    pub async fn handbook(&mut self) -> Result<pb::Handbook, ClientError> {
        Ok(self
            .method
            .get_handbook(pb::GetHandbookRequest {})
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

    /// The node's status: peers and per-document sync state.
    pub async fn status(&mut self) -> Result<pb::NodeStatus, ClientError> {
        Ok(self
            .node
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner())
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
