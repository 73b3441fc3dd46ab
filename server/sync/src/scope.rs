//! Document ids, scopes, owners and node identities, and the rule of who may write what.
//!
//! A document id names its scope and owner: `local/network` lives only on its city,
//! `shared/lessons/malmo` is owned by Malmö and exists everywhere, `county/skane/guidance` is
//! owned by the county hub of Skåne and exists everywhere, `national/method` is owned by the
//! national hub. [`ShareableDocId`] can only be made from a document id that is not local, and it is
//! the only kind of id the sync [`Engine`](crate::Engine) accepts: local documents cannot reach it.

use std::fmt;

/// Longest text of a peer's (an id, an error it caused) quoted in an error, a log line or a
/// status, in characters.
pub const MAX_QUOTED_CHARS: usize = 100;

/// Longest document id in bytes: `shared/progress/` and a 63-character node name.
pub const MAX_DOC_ID_BYTES: usize = 96;

/// `text` as it may be quoted back: at most [`MAX_QUOTED_CHARS`] characters, control
/// characters escaped, and `…` when something was cut off.
pub fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_QUOTED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Errors from parsing ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "invalid node name \"{}\": an id uses only a-z, 0-9 and '-' (1 to 63 characters, \
         starting with a letter), as it appears in certificates and document names{}",
        quote(.0),
        id_hint(.0)
    )]
    InvalidNodeName(String),
    #[error("invalid node identity \"{}\": expected spiffe://stadforstad/city/<id>, spiffe://stadforstad/county/<id> or spiffe://stadforstad/hub/<id>", quote(.0))]
    InvalidIdentity(String),
    #[error("unknown document id \"{}\"", quote(.0))]
    UnknownDocument(String),
    #[error("document \"{}\" is local and never leaves its city", quote(.0))]
    LocalDocument(String),
}

/// The role a node plays in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A city node: holds one city's network data.
    City,
    /// The national hub: relays shared documents and owns the national ones.
    Hub,
    /// A county hub, between its cities and the national hub: relays documents both ways and
    /// owns only its county's documents (`county/<id>/…`).
    County,
}

impl Role {
    /// The lower-case name used in certificates, configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::City => "city",
            Role::Hub => "hub",
            Role::County => "county",
        }
    }

    /// Parses `city`, `hub` or `county`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "city" => Some(Role::City),
            "hub" => Some(Role::Hub),
            "county" => Some(Role::County),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to write instead of an invalid id: the suggested id, and the name itself as the display
/// name when it has letters an id cannot hold.
fn id_hint(name: &str) -> String {
    match suggest_node_name(name) {
        Some(id) if id != name => format!(
            "; use \"{id}\" as the id and \"{}\" as the display name, which may hold any letters",
            quote(&display_name_of(name))
        ),
        _ => String::new(),
    }
}

/// `göteborg` → `Göteborg`: the first letter in upper case.
fn display_name_of(name: &str) -> String {
    let mut chars = name.trim().chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A valid id close to `name`: lower case, Swedish and other accented letters without their
/// marks (å, ä → a; ö → o; é → e), spaces and `_` as `-`, anything else dropped.
pub fn suggest_node_name(name: &str) -> Option<String> {
    let mut id = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        let mapped: &str = match c {
            'a'..='z' | '0'..='9' | '-' => {
                id.push(c);
                continue;
            }
            'å' | 'ä' | 'à' | 'á' | 'â' | 'ã' => "a",
            'ö' | 'ø' | 'ó' | 'ò' | 'ô' | 'õ' => "o",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'ü' | 'ú' | 'ù' | 'û' => "u",
            'í' | 'ì' | 'î' | 'ï' => "i",
            'ç' => "c",
            'ñ' => "n",
            'æ' => "ae",
            'ß' => "ss",
            ' ' | '_' | '.' => "-",
            _ => "",
        };
        id.push_str(mapped);
    }
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    let id: String = id
        .trim_start_matches(|c: char| !c.is_ascii_lowercase())
        .trim_end_matches('-')
        .chars()
        .take(63)
        .collect();
    let id = id.trim_end_matches('-').to_string();
    validate_node_name(&id).ok().map(|_| id)
}

/// Checks a city, county or hub name: 1 to 63 characters `a-z0-9-`, starting with a letter.
pub fn validate_node_name(name: &str) -> Result<(), ScopeError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ScopeError::InvalidNodeName(name.to_string()))
    }
}

/// A node's identity, as written in its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    role: Role,
    name: String,
}

const SPIFFE_PREFIX: &str = "spiffe://stadforstad/";

impl NodeId {
    /// Makes an identity from a role and a validated name.
    pub fn new(role: Role, name: &str) -> Result<NodeId, ScopeError> {
        validate_node_name(name)?;
        Ok(NodeId {
            role,
            name: name.to_string(),
        })
    }

    /// A city identity.
    pub fn city(name: &str) -> Result<NodeId, ScopeError> {
        NodeId::new(Role::City, name)
    }

    /// A hub identity.
    pub fn hub(name: &str) -> Result<NodeId, ScopeError> {
        NodeId::new(Role::Hub, name)
    }

    /// A county hub identity (`spiffe://stadforstad/county/<id>`).
    pub fn county(name: &str) -> Result<NodeId, ScopeError> {
        NodeId::new(Role::County, name)
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The node's name, for example `helsingborg`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SPIFFE id put in the certificate's SAN: `spiffe://stadforstad/city/helsingborg`.
    pub fn spiffe_uri(&self) -> String {
        format!("{SPIFFE_PREFIX}{}/{}", self.role, self.name)
    }

    /// Parses a SPIFFE id as written by [`NodeId::spiffe_uri`].
    pub fn from_spiffe_uri(uri: &str) -> Result<NodeId, ScopeError> {
        let invalid = || ScopeError::InvalidIdentity(uri.to_string());
        let rest = uri.strip_prefix(SPIFFE_PREFIX).ok_or_else(invalid)?;
        let (role, name) = rest.split_once('/').ok_or_else(invalid)?;
        let role = Role::parse(role).ok_or_else(invalid)?;
        NodeId::new(role, name).map_err(|_| invalid())
    }

    /// The DNS name put in the certificate so that TLS server-name checks pin the role:
    /// `helsingborg.city.stadforstad`.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.stadforstad", self.name, self.role)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

/// Where a document may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only on its city.
    Local,
    /// Owned by a city, replicated to the hubs and every city.
    Shared,
    /// Owned by a county hub, replicated to the national hub and every city.
    County,
    /// Owned by the national hub, replicated to every county hub and city.
    National,
}

/// Who may change a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The city whose node holds the document (local documents).
    ThisCity,
    /// The named city.
    City(String),
    /// The named county's hub.
    County(String),
    /// The national hub.
    Hub,
}

impl std::fmt::Display for Owner {
    /// The owner in plain words, for messages people read.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::ThisCity => f.write_str("the city's own node"),
            Owner::City(city) => write!(f, "the city {city}"),
            Owner::County(county) => write!(f, "the county hub {county}"),
            Owner::Hub => f.write_str("the national hub"),
        }
    }
}

const LOCAL_KINDS: &[&str] = &["network", "signals", "stats-records", "handbook-notes"];
const SHARED_KINDS: &[&str] = &["lessons", "stats", "progress"];
const NATIONAL_KINDS: &[&str] = &["method", "directory", "stats", "policy"];
/// A county hub's documents: its guidance, its meetings calendar for network coordinators, its
/// published county figures, and the link state of its cities (ids, linked, last seen) for the
/// national hub's directory.
const COUNTY_KINDS: &[&str] = &["guidance", "meetings", "stats", "links"];

/// A validated document id of any scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

impl DocId {
    /// Parses and validates a document id.
    pub fn parse(text: &str) -> Result<DocId, ScopeError> {
        // The error keeps at most a quotable prefix of what it was given, never all of it.
        let unknown = || {
            let cut = text
                .char_indices()
                .nth(MAX_QUOTED_CHARS + 1)
                .map_or(text.len(), |(i, _)| i);
            ScopeError::UnknownDocument(text[..cut].to_string())
        };
        if text.len() > MAX_DOC_ID_BYTES {
            return Err(unknown());
        }
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            ["local", kind] if LOCAL_KINDS.contains(kind) => {}
            ["shared", kind, city] if SHARED_KINDS.contains(kind) => {
                validate_node_name(city).map_err(|_| unknown())?
            }
            ["county", county, kind] if COUNTY_KINDS.contains(kind) => {
                validate_node_name(county).map_err(|_| unknown())?
            }
            ["national", kind] if NATIONAL_KINDS.contains(kind) => {}
            _ => return Err(unknown()),
        }
        Ok(DocId(text.to_string()))
    }

    /// The local document of the given kind (`network`, `signals`, `stats-records`).
    pub fn local(kind: &str) -> Result<DocId, ScopeError> {
        DocId::parse(&format!("local/{kind}"))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document's scope.
    pub fn scope(&self) -> Scope {
        if self.0.starts_with("local/") {
            Scope::Local
        } else if self.0.starts_with("shared/") {
            Scope::Shared
        } else if self.0.starts_with("county/") {
            Scope::County
        } else {
            Scope::National
        }
    }

    /// The document's owner.
    pub fn owner(&self) -> Owner {
        match self.scope() {
            Scope::Local => Owner::ThisCity,
            Scope::National => Owner::Hub,
            Scope::Shared => Owner::City(self.0.rsplit('/').next().unwrap_or_default().to_string()),
            Scope::County => {
                Owner::County(self.0.split('/').nth(1).unwrap_or_default().to_string())
            }
        }
    }

    /// The id as a [`ShareableDocId`], refused for local documents.
    pub fn shareable(self) -> Result<ShareableDocId, ScopeError> {
        match self.scope() {
            Scope::Local => Err(ScopeError::LocalDocument(self.0)),
            _ => Ok(ShareableDocId(self)),
        }
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a shared, county or national document: the only kind that may cross a federation
/// link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareableDocId(DocId);

impl ShareableDocId {
    /// Parses a document id and refuses local ones.
    pub fn parse(text: &str) -> Result<ShareableDocId, ScopeError> {
        DocId::parse(text)?.shareable()
    }

    /// `shared/lessons/{city}`.
    pub fn lessons(city: &str) -> Result<ShareableDocId, ScopeError> {
        ShareableDocId::parse(&format!("shared/lessons/{city}"))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The underlying document id.
    pub fn doc_id(&self) -> &DocId {
        &self.0
    }

    /// The document's owner (a city, a county hub or the national hub).
    pub fn owner(&self) -> Owner {
        self.0.owner()
    }

    /// Whether `node` owns this document.
    pub fn is_owned_by(&self, node: &NodeId) -> bool {
        match (self.owner(), node.role()) {
            (Owner::City(city), Role::City) => city == node.name(),
            (Owner::County(county), Role::County) => county == node.name(),
            (Owner::Hub, Role::Hub) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ShareableDocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a document is exchanged at all on the link between `me` and `peer`.
///
/// The federation is a tree: cities link to their county hub or to a national hub, county
/// hubs link to a national hub, and the national hub and its standby link to each other.
/// Every shared, county and national document crosses each of these links; two cities, or two
/// county hubs, never exchange documents.
pub fn shared_on_link(me: &NodeId, peer: &NodeId) -> bool {
    matches!(
        (me.role(), peer.role()),
        (Role::City, Role::Hub | Role::County)
            | (Role::County, Role::City | Role::Hub)
            | (Role::Hub, Role::City | Role::County | Role::Hub)
    )
}

/// The owner-writes rule (DESIGN.md promise 2), at every hop: whether `me` applies changes to
/// `doc` that arrive from `peer`.
///
/// - The national hub applies a city's changes only to that city's own documents, and a county
///   hub's changes only to city documents (which it relays) and to that county's own
///   documents; never anyone's changes to national documents.
/// - A county hub applies a city's changes only to that city's own documents, and the national
///   hub's changes to every document.
/// - A city applies changes only from its upstream (a county hub or the national hub), which
///   relays every owner's document, to every document.
/// - The national hub and its standby apply each other's changes to every document: each
///   relays what its own links bring, and either may edit the national documents.
///
/// A node takes even its own documents from its upstream: that is how a node restored from an
/// older backup gets back the changes it had sent before (the author check lets only its own
/// changes into them).
///
/// Who wrote each change is checked besides, by actor ([`actor_belongs_to`], [`owner_nodes`]): a
/// hub that relays can pass on only changes its owner made.
pub fn accepts_changes_from(me: &NodeId, peer: &NodeId, doc: &ShareableDocId) -> bool {
    match (me.role(), peer.role()) {
        (Role::Hub, Role::City) | (Role::County, Role::City) => doc.is_owned_by(peer),
        (Role::Hub, Role::County) => matches!(doc.owner(), Owner::City(_)) || doc.is_owned_by(peer),
        (Role::County, Role::Hub) | (Role::City, Role::Hub | Role::County) => true,
        (Role::Hub, Role::Hub) => true,
        _ => false,
    }
}
/// The first 8 bytes of every Automerge actor id `node` writes with: SHA-256 of its SPIFFE URI.
/// The other 8 bytes are random per run of the node (see [`run_actor`]).
pub fn actor_prefix(node: &NodeId) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(node.spiffe_uri().as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    prefix
}

/// The actor id `node` writes with in one run: its [`actor_prefix`] and 8 bytes chosen for the
/// run (random in a real node).
pub fn run_actor(node: &NodeId, run: [u8; 8]) -> automerge::ActorId {
    let mut bytes = actor_prefix(node).to_vec();
    bytes.extend_from_slice(&run);
    automerge::ActorId::from(bytes)
}

/// Automerge's marker for the actor of an edit made at an older version (`transaction_at`):
/// these bytes, a LEB128 level, then the editor's own actor id.
const ISOLATED_ACTOR_MAGIC: [u8; 4] = [0x13, 0xb2, 0x23, 0x09];

/// Whether a change with this actor id was written by `node` (directly, or as an edit at an
/// older version): what a hub checks before it accepts or relays a change.
pub fn actor_belongs_to(actor: &[u8], node: &NodeId) -> bool {
    let mut bytes = actor;
    if let Some(rest) = bytes.strip_prefix(&ISOLATED_ACTOR_MAGIC[..]) {
        // Skip the LEB128 level: bytes with the high bit set continue it.
        let level_len = rest.iter().position(|b| b & 0x80 == 0).map(|i| i + 1);
        match level_len {
            Some(len) if len <= 10 => bytes = &rest[len..],
            _ => return false,
        }
    }
    bytes.len() == 16 && bytes[..8] == actor_prefix(node)
}

/// The nodes whose changes `doc` may hold, seen from `me` on the link with `peer`: a named city
/// or county hub; or, for a national document, the national hubs — `me` and `peer` when they
/// are national hubs, and `national_hubs`, the national hubs this node knows from its
/// configuration (a city or county whose upstream is a county hub checks national documents
/// two hops away with them; every node takes a standby's edits relayed by the other hub).
pub fn owner_nodes(
    doc: &ShareableDocId,
    me: &NodeId,
    peer: &NodeId,
    national_hubs: &[NodeId],
) -> Vec<NodeId> {
    match doc.owner() {
        Owner::City(city) => NodeId::city(&city).ok().into_iter().collect(),
        Owner::County(county) => NodeId::county(&county).ok().into_iter().collect(),
        Owner::Hub => {
            let mut hubs: Vec<NodeId> = Vec::new();
            for node in [me, peer].into_iter().chain(national_hubs) {
                if node.role() == Role::Hub && !hubs.contains(node) {
                    hubs.push(node.clone());
                }
            }
            hubs
        }
        Owner::ThisCity => Vec::new(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_id_with_swedish_letters_is_refused_with_an_id_and_a_display_name_to_use() {
        let err = NodeId::city("göteborg").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid node name \"göteborg\": an id uses only a-z, 0-9 and '-' (1 to 63 \
             characters, starting with a letter), as it appears in certificates and document \
             names; use \"goteborg\" as the id and \"Göteborg\" as the display name, which may \
             hold any letters"
        );
        assert_eq!(
            suggest_node_name("Malmö Stad").as_deref(),
            Some("malmo-stad")
        );
        assert_eq!(suggest_node_name("Åre").as_deref(), Some("are"));
        assert_eq!(suggest_node_name("123"), None);
        assert!(NodeId::city("1abc")
            .unwrap_err()
            .to_string()
            .contains("use \"abc\""));
    }

    use super::*;

    #[test]
    fn doc_ids_name_scope_and_owner() {
        let doc = DocId::parse("shared/lessons/malmo").unwrap();
        assert_eq!(doc.scope(), Scope::Shared);
        assert_eq!(doc.owner(), Owner::City("malmo".into()));
        assert_eq!(DocId::parse("national/method").unwrap().owner(), Owner::Hub);
        assert_eq!(DocId::parse("local/signals").unwrap().scope(), Scope::Local);
        for bad in [
            "",
            "local/other",
            "shared/lessons",
            "shared/lessons/Malmo",
            "shared/x/malmo",
            "national/method/x",
            "shared/lessons/a/b",
        ] {
            assert!(DocId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn errors_quote_at_most_a_bounded_prefix_of_what_a_peer_sent() {
        let huge = format!("shared/lessons/{}", "x".repeat(6 * 1024 * 1024));
        let err = DocId::parse(&huge).unwrap_err();
        let ScopeError::UnknownDocument(kept) = &err else {
            panic!("{err:?}")
        };
        assert!(kept.len() <= MAX_QUOTED_CHARS + 1, "{}", kept.len());
        let text = err.to_string();
        assert!(text.len() < 200 && text.ends_with("…\""), "{text}");
        let longest = format!("shared/progress/{}", "a".repeat(63));
        assert!(DocId::parse(&longest).is_ok(), "the longest real id fits");
        assert_eq!(quote("a\nb"), "a\\nb", "control characters are escaped");
        assert_eq!(quote("kort"), "kort");
    }

    #[test]
    fn local_documents_are_never_shareable() {
        for kind in LOCAL_KINDS {
            let err = DocId::local(kind).unwrap().shareable().unwrap_err();
            assert!(matches!(err, ScopeError::LocalDocument(_)));
            assert!(ShareableDocId::parse(&format!("local/{kind}")).is_err());
        }
    }

    #[test]
    fn spiffe_ids_round_trip() {
        let id = NodeId::city("helsingborg").unwrap();
        assert_eq!(id.spiffe_uri(), "spiffe://stadforstad/city/helsingborg");
        assert_eq!(NodeId::from_spiffe_uri(&id.spiffe_uri()).unwrap(), id);
        for bad in [
            "spiffe://other/city/x",
            "spiffe://stadforstad/king/x",
            "spiffe://stadforstad/city/",
            "spiffe://stadforstad/city/a/b",
            "spiffe://stadforstad/county/Skane",
            "spiffe://stadforstad/county/",
        ] {
            assert!(NodeId::from_spiffe_uri(bad).is_err(), "{bad:?}");
        }
        let county = NodeId::county("skane").unwrap();
        assert_eq!(county.spiffe_uri(), "spiffe://stadforstad/county/skane");
        assert_eq!(county.dns_name(), "skane.county.stadforstad");
        assert_eq!(county.to_string(), "county/skane");
        assert_eq!(
            NodeId::from_spiffe_uri(&county.spiffe_uri()).unwrap(),
            county
        );
        assert_eq!(Role::parse("county"), Some(Role::County));
        assert!(NodeId::county("skåne")
            .unwrap_err()
            .to_string()
            .contains("use \"skane\""));
    }

    #[test]
    fn county_documents_are_owned_by_their_county_hub() {
        let skane = NodeId::county("skane").unwrap();
        for kind in COUNTY_KINDS {
            let doc = ShareableDocId::parse(&format!("county/skane/{kind}")).unwrap();
            assert_eq!(doc.doc_id().scope(), Scope::County);
            assert_eq!(doc.owner(), Owner::County("skane".into()));
            assert!(doc.is_owned_by(&skane));
            assert!(!doc.is_owned_by(&NodeId::county("norrbotten").unwrap()));
            assert!(!doc.is_owned_by(&NodeId::city("skane").unwrap()));
            assert!(!doc.is_owned_by(&NodeId::hub("national").unwrap()));
        }
        let longest = format!("county/{}/guidance", "a".repeat(63));
        assert!(DocId::parse(&longest).is_ok(), "the longest county id fits");
        for bad in [
            "county/skane",
            "county/skane/lessons",
            "county/Skane/guidance",
            "county/skane/guidance/x",
            "county//guidance",
        ] {
            assert!(DocId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(!ShareableDocId::lessons("malmo")
            .unwrap()
            .is_owned_by(&NodeId::county("malmo").unwrap()));
    }

    #[test]
    fn owner_writes_rule() {
        let hub = NodeId::hub("national").unwrap();
        let malmo = NodeId::city("malmo").unwrap();
        let lund = NodeId::city("lund").unwrap();
        let malmo_lessons = ShareableDocId::lessons("malmo").unwrap();
        let method = ShareableDocId::parse("national/method").unwrap();
        assert!(accepts_changes_from(&hub, &malmo, &malmo_lessons));
        assert!(!accepts_changes_from(&hub, &lund, &malmo_lessons));
        assert!(!accepts_changes_from(&hub, &malmo, &method));
        assert!(accepts_changes_from(&lund, &hub, &malmo_lessons));
        assert!(accepts_changes_from(&lund, &hub, &method));
        assert!(!accepts_changes_from(&lund, &malmo, &malmo_lessons));
        // A city takes its own documents back from the hub (a restore from an older backup).
        assert!(accepts_changes_from(&malmo, &hub, &malmo_lessons));
    }

    #[test]
    fn owner_writes_rule_at_every_hop_of_three_levels() {
        let hub = NodeId::hub("national").unwrap();
        let skane = NodeId::county("skane").unwrap();
        let norrbotten = NodeId::county("norrbotten").unwrap();
        let malmo = NodeId::city("malmo").unwrap();
        let lund = NodeId::city("lund").unwrap();
        let malmo_lessons = ShareableDocId::lessons("malmo").unwrap();
        let umea_lessons = ShareableDocId::lessons("umea").unwrap();
        let method = ShareableDocId::parse("national/method").unwrap();
        let guidance = ShareableDocId::parse("county/skane/guidance").unwrap();
        let other_guidance = ShareableDocId::parse("county/norrbotten/guidance").unwrap();

        // The national hub from a county hub: city documents (relayed) and the county's own.
        assert!(accepts_changes_from(&hub, &skane, &malmo_lessons));
        assert!(accepts_changes_from(&hub, &skane, &umea_lessons));
        assert!(accepts_changes_from(&hub, &skane, &guidance));
        assert!(!accepts_changes_from(&hub, &skane, &other_guidance));
        assert!(!accepts_changes_from(&hub, &skane, &method));
        // The national hub from a city: never a county's document.
        assert!(!accepts_changes_from(&hub, &malmo, &guidance));

        // A county hub from a city: only that city's documents.
        assert!(accepts_changes_from(&skane, &malmo, &malmo_lessons));
        assert!(!accepts_changes_from(&skane, &lund, &malmo_lessons));
        assert!(!accepts_changes_from(&skane, &malmo, &guidance));
        assert!(!accepts_changes_from(&skane, &malmo, &method));
        // A county hub from the national hub: everything, its own documents back included.
        assert!(accepts_changes_from(&skane, &hub, &method));
        assert!(accepts_changes_from(&skane, &hub, &umea_lessons));
        assert!(accepts_changes_from(&skane, &hub, &other_guidance));
        assert!(accepts_changes_from(&skane, &hub, &guidance));

        // A city from its county hub: everything, its own documents back included.
        assert!(accepts_changes_from(&lund, &skane, &malmo_lessons));
        assert!(accepts_changes_from(&lund, &skane, &method));
        assert!(accepts_changes_from(&lund, &skane, &guidance));
        assert!(accepts_changes_from(&lund, &skane, &other_guidance));
        assert!(accepts_changes_from(&malmo, &skane, &malmo_lessons));

        // County hubs never exchange documents with each other, nor cities with cities.
        assert!(!shared_on_link(&skane, &norrbotten));
        assert!(!shared_on_link(&malmo, &lund));
        // (The national hub and its standby do: see the standby test below.)
        assert!(!accepts_changes_from(&skane, &norrbotten, &other_guidance));
        for (a, b) in [(&malmo, &skane), (&skane, &hub), (&malmo, &hub)] {
            assert!(shared_on_link(a, b) && shared_on_link(b, a), "{a} and {b}");
        }
    }

    #[test]
    fn the_owner_of_a_national_document_is_known_two_hops_away() {
        let hub = NodeId::hub("national").unwrap();
        let skane = NodeId::county("skane").unwrap();
        let malmo = NodeId::city("malmo").unwrap();
        let method = ShareableDocId::parse("national/method").unwrap();
        let guidance = ShareableDocId::parse("county/skane/guidance").unwrap();
        let none: &[NodeId] = &[];
        assert_eq!(owner_nodes(&method, &malmo, &hub, none), vec![hub.clone()]);
        assert_eq!(owner_nodes(&method, &hub, &skane, none), vec![hub.clone()]);
        // Under a county hub, a city knows the national hub only from its configuration.
        assert!(owner_nodes(&method, &malmo, &skane, none).is_empty());
        assert_eq!(
            owner_nodes(&method, &malmo, &skane, std::slice::from_ref(&hub)),
            vec![hub.clone()]
        );
        // A national hub identity that is not a hub's is never taken for one.
        assert!(owner_nodes(&method, &malmo, &skane, std::slice::from_ref(&skane)).is_empty());
        assert_eq!(owner_nodes(&guidance, &malmo, &hub, none), vec![skane]);
    }

    #[test]
    fn the_national_hub_and_its_standby_share_everything_and_both_write_national_documents() {
        let hub = NodeId::hub("national").unwrap();
        let standby = NodeId::hub("standby").unwrap();
        let malmo = NodeId::city("malmo").unwrap();
        let method = ShareableDocId::parse("national/method").unwrap();
        let lessons = ShareableDocId::lessons("malmo").unwrap();
        assert!(shared_on_link(&hub, &standby));
        assert!(accepts_changes_from(&hub, &standby, &method));
        assert!(accepts_changes_from(&standby, &hub, &lessons));
        // Between the hubs, both are owners; a city linked to one knows the other from its
        // configuration.
        assert_eq!(
            owner_nodes(&method, &hub, &standby, &[]),
            vec![hub.clone(), standby.clone()]
        );
        assert_eq!(
            owner_nodes(&method, &malmo, &standby, &[]),
            vec![standby.clone()]
        );
        assert_eq!(
            owner_nodes(&method, &malmo, &standby, &[hub.clone(), standby.clone()]),
            vec![standby.clone(), hub.clone()]
        );
        // Still no city document written by a hub.
        assert_eq!(owner_nodes(&lessons, &hub, &standby, &[]), vec![malmo]);
    }
}
