//! The `sfs` command line: talks to one node's API, chosen from a `federation.json` or given
//! by endpoint, token and CA. Output is a readable table, or JSON with `--json`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::{v1 as pb, Client, ClientError};

/// Errors of the command line; each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Whether the error is only that the reader of the output went away (`sfs … | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(err) if err.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The error as one line for standard error, without a leading `error: `; clap's usage
    /// errors carry their own hint lines, only the first is kept.
    pub fn one_line(&self) -> String {
        let text = self.to_string();
        text.lines()
            .next()
            .unwrap_or("failed")
            .trim_start_matches("error: ")
            .to_string()
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "sfs",
    version,
    about = "Command line for stadforstad nodes",
    after_help = "Times are shown in this machine's local time zone (TZ)."
)]
pub struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

/// Which node to talk to; given before or after the subcommand.
#[derive(Args, Debug)]
#[command(next_help_heading = "Connection (every command)")]
struct Target {
    /// A federation.json written by `sfs-node demo` (or by hand): endpoint, token and CA of
    /// each node.
    #[arg(long, env = "SFS_FEDERATION", global = true)]
    federation: Option<PathBuf>,
    /// The node to talk to, by name, in the federation file (a city, a county hub, or the
    /// hub; `hub` also names the hub).
    #[arg(long, env = "SFS_NODE", global = true)]
    node: Option<String>,
    /// The node's API endpoint, for example https://127.0.0.1:7443 (always https).
    #[arg(long, env = "SFS_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// An API token (from `sfs-node token create`).
    #[arg(long, env = "SFS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The CA certificate (PEM) that signed the node's certificate.
    #[arg(long, env = "SFS_CA", global = true)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lessons: write your city's, read everyone's.
    Lessons {
        #[command(subcommand)]
        command: LessonsCommand,
    },
    /// The local network register (never leaves the city).
    Register {
        #[command(subcommand)]
        command: RegisterCommand,
    },
    /// Signals and support contacts (personal data; coordinator or admin).
    Signals {
        #[command(subcommand)]
        command: SignalsCommand,
    },
    /// The national method handbook: read it anywhere, write it at the hub.
    Handbook {
        #[command(subcommand)]
        command: HandbookCommand,
    },
    /// Progress through the method and adoption across cities.
    Progress {
        #[command(subcommand)]
        command: ProgressCommand,
    },
    /// Statistics: record, preview, publish, and read national figures.
    Stats {
        #[command(subcommand)]
        command: StatsCommand,
    },
    /// The member cities (kept by the hub).
    Cities {
        #[command(subcommand)]
        command: CitiesCommand,
    },
    /// The node's API tokens (admin): list them, revoke a leaked one.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Export for other programs, as CSV or JSON on standard output: lessons, the register,
    /// progress, published statistics. Holds what the token may read, nothing more.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// The node's peers, links and per-document sync state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which cities an export covers.
#[derive(Args, Debug)]
struct ExportCities {
    /// Every city, not only this node's.
    #[arg(long)]
    all_cities: bool,
    /// One city, by id (for example `malmo`); default: this node's city.
    #[arg(long, conflicts_with = "all_cities")]
    city: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ExportCommand {
    /// Lessons, one row each (tags separated by `;`).
    Lessons {
        #[command(flatten)]
        cities: ExportCities,
        /// Include archived lessons.
        #[arg(long)]
        archived: bool,
        /// csv or json.
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::export::Format,
    },
    /// The city's own register, read from its own node (it never leaves the city): one table
    /// in CSV (--table), every table in JSON unless --table is given.
    Register {
        /// organisations, groups, contacts, meetings or routine.
        #[arg(long, value_enum)]
        table: Option<crate::export::RegisterTable>,
        /// csv or json.
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::export::Format,
    },
    /// Progress through the method, one row per step a city started or finished.
    Progress {
        #[command(flatten)]
        cities: ExportCities,
        /// csv or json.
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::export::Format,
    },
    /// Published statistics releases (never previews): one row per cell, then per activity.
    Stats {
        #[command(flatten)]
        cities: ExportCities,
        /// csv or json.
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::export::Format,
    },
}

#[derive(Subcommand, Debug)]
enum TokensCommand {
    /// Every token: id, role, state, creation, expiry and last use (never a secret).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id; the node refuses it from its next request on.
    Revoke {
        /// The token's id, as `sfs tokens list` shows it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum LessonsCommand {
    /// Write a new lesson; prints its name.
    Add {
        /// The title.
        #[arg(long)]
        title: String,
        /// The text.
        #[arg(long, default_value = "")]
        body: String,
        /// A tag; repeat for more.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The method step it is about (method/steps/{id}).
        #[arg(long)]
        step: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List lessons of this node's city, of one city, or of all cities.
    List {
        /// Every city, not only this node's.
        #[arg(long)]
        all_cities: bool,
        /// One city, by id (for example `malmo`); default: this node's city.
        #[arg(long, conflicts_with = "all_cities")]
        city: Option<String>,
        /// Only the lessons of a county's cities, by the county hub's id (for example `skane`):
        /// every city of the county unless --city names one. Only that county hub answers.
        #[arg(long)]
        county: Option<String>,
        /// Only lessons with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only lessons about this method step (method/steps/{id}).
        #[arg(long)]
        step: Option<String>,
        /// Text to search for in titles, bodies and tags.
        #[arg(long)]
        query: Option<String>,
        /// Include archived lessons.
        #[arg(long)]
        archived: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one lesson by name (cities/{city}/lessons/{id}).
    Get {
        /// The lesson, `cities/{city}/lessons/{id}`.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a lesson of this node's city.
    Update {
        /// The lesson, `cities/{city}/lessons/{id}`.
        name: String,
        /// The title.
        #[arg(long)]
        title: Option<String>,
        /// The text.
        #[arg(long)]
        body: Option<String>,
        /// Replaces all tags; repeat for more.
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// The method step it is about (method/steps/{id}).
        #[arg(long)]
        step: Option<String>,
        /// Archive the lesson (hidden from lists unless --archived).
        #[arg(long, conflicts_with = "unarchive")]
        archive: bool,
        /// Bring an archived lesson back.
        #[arg(long)]
        unarchive: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a lesson of this node's city, also from the history on every node.
    Delete {
        /// The lesson, `lessons/{id}` (as `lessons list --json` shows it).
        name: String,
    },
    /// Remove a lesson's text (all of it, or the --field given) from every node and its
    /// history; the lesson stays, empty. Needs a coordinator token.
    Redact {
        /// The lesson, `lessons/{id}` (as `lessons list --json` shows it).
        name: String,
        /// title, body or tags; repeat for more. Default: all three.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Print the redacted lesson as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RegisterCommand {
    /// List member organisations.
    Organisations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a member organisation.
    AddOrganisation {
        /// The resource name, as the lists show it.
        #[arg(long)]
        name: String,
        /// municipality, police, region, county_board, civil_society, business or other.
        #[arg(long)]
        sector: String,
    },
    /// List groups.
    Groups {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a group.
    AddGroup {
        /// The resource name, as the lists show it.
        #[arg(long)]
        name: String,
        /// The description.
        #[arg(long, default_value = "")]
        description: String,
        /// A member organisation (organisations/{id}); repeat for more.
        #[arg(long = "organisation")]
        organisations: Vec<String>,
    },
    /// List contact persons.
    Contacts {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a contact person.
    AddContact {
        /// The resource name, as the lists show it.
        #[arg(long)]
        name: String,
        /// organisations/{id}
        #[arg(long)]
        organisation: String,
        /// The person's role in the organisation.
        #[arg(long, default_value = "")]
        role: String,
        /// Phone number.
        #[arg(long, default_value = "")]
        phone: String,
        /// E-mail address.
        #[arg(long, default_value = "")]
        email: String,
    },
    /// Erase a contact person for good (contacts/{id}): record, history and the key of its
    /// earlier versions. Irreversible; needs a coordinator token.
    EraseContact {
        /// The contact, `contacts/{id}`.
        name: String,
    },
    /// List meetings, newest first.
    Meetings {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Record a meeting.
    AddMeeting {
        /// YYYY-MM-DD
        #[arg(long)]
        date: String,
        /// An organisation (organisations/{id}); repeat for more.
        #[arg(long = "organisation")]
        organisations: Vec<String>,
        /// The agenda.
        #[arg(long, default_value = "")]
        agenda: String,
        /// Release notes.
        #[arg(long, default_value = "")]
        notes: String,
        /// A decision taken; repeat for more.
        #[arg(long = "decision")]
        decisions: Vec<String>,
    },
    /// Show the referral routine.
    Routine {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replace the referral routine; each --step is "description|organisations/{id}|how to reach".
    SetRoutine {
        /// One step, "description|organisations/{id}|how to reach"; repeat in order.
        #[arg(long = "step")]
        steps: Vec<String>,
    },
    /// Delete an organisation, group, contact or meeting by name.
    Delete {
        /// `organisations/{id}`, `groups/{id}`, `contacts/{id}` or `meetings/{id}`.
        name: String,
    },
    /// Show the deny list: words the city's shared text must never contain (admin).
    DenyWords {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a word to the deny list (admin).
    DenyWord {
        /// The word (any case; matched after Unicode normalisation).
        word: String,
    },
    /// Remove a word from the deny list (admin).
    AllowWord {
        /// The word to remove.
        word: String,
    },
}

#[derive(Subcommand, Debug)]
enum SignalsCommand {
    /// Log a new signal or support contact.
    Add {
        /// YYYY-MM-DD
        #[arg(long)]
        date: String,
        /// organisations/{id}
        #[arg(long)]
        organisation: String,
        /// signal or support_contact.
        #[arg(long, default_value = "signal")]
        kind: String,
        /// The description.
        #[arg(long)]
        description: String,
    },
    /// List signals (each listed signal is written to the access log).
    List {
        /// new, referred, in_support or closed.
        #[arg(long)]
        status: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one signal (written to the access log).
    Get {
        /// The signal, `signals/{id}`.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a signal's status: new, referred, in_support or closed.
    SetStatus {
        /// The signal, `signals/{id}`.
        name: String,
        /// new, referred, in_support or closed.
        status: String,
    },
    /// Erase a signal for good (signals/{id}): record, history and the key of its earlier
    /// versions. Irreversible.
    Erase {
        /// The signal, `signals/{id}`.
        name: String,
    },
    /// The access log of personal data (admin).
    AccessLog {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum HandbookCommand {
    /// Show the handbook this node serves (with a release key: the verified running release).
    Show {
        /// Show the newest state instead (at the hub: the working draft).
        #[arg(long)]
        latest: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The release this node runs, and every release it does not run with the reason.
    Running {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What changed since a release, or since a version shown earlier.
    Changes {
        /// A release, by name or label.
        #[arg(long, conflicts_with = "since_version")]
        since_release: Option<String>,
        /// A handbook version shown earlier (`handbook show`).
        #[arg(long)]
        since_version: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List releases.
    Releases {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cut a release (hub, coordinator). With --key the release is signed on this machine with
    /// the national coordinator's private key; a hub with a release key accepts only that.
    Release {
        /// The version label, for example 2027.1.
        #[arg(long)]
        label: String,
        /// Release notes.
        #[arg(long, default_value = "")]
        notes: String,
        /// The coordinator's private release key (PEM, from `sfs-node pki release-key`).
        #[arg(long, env = "SFS_RELEASE_KEY")]
        key: Option<PathBuf>,
        /// Days the release is accepted by cities after signing.
        #[arg(long, default_value_t = 365, requires = "key")]
        valid_days: i64,
        /// The release number (default: one more than the highest at the hub).
        #[arg(long, requires = "key")]
        number: Option<i64>,
        /// The handbook version to release (default: the hub's newest state).
        #[arg(long, requires = "key")]
        version: Option<String>,
    },
    /// Remove text from the handbook and from its whole history (hub, coordinator). The hub
    /// writes a new generation of the handbook without it; every city destroys its older copy.
    /// Releases of the older generation stop running: cities serve no handbook until a release
    /// of the new generation is signed, which --key does right after the redaction.
    ///
    /// Without --field and --text each named chapter, step or item is removed whole (a chapter
    /// with its steps and their items, a step with its items).
    ///
    /// Example: sfs handbook redact method/steps/abc --text "Anna Berg" --key release.key
    /// --label 2027.2
    Redact {
        /// What to take out: method/chapters/{id}, method/steps/{id} or method/items/{id}.
        #[arg(required = true)]
        names: Vec<String>,
        /// Clear only this field (repeatable): title or introduction of a chapter, title or
        /// description of a step, text of an item.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Cut only this text out of the fields (every occurrence), keeping the rest.
        #[arg(long)]
        text: Option<String>,
        /// Then sign and publish a release of the new generation with the national
        /// coordinator's private release key (it stays on this machine).
        #[arg(long, env = "SFS_RELEASE_KEY")]
        key: Option<PathBuf>,
        /// The version label of that release (required with --key).
        #[arg(long, requires = "key")]
        label: Option<String>,
        /// Release notes of that release.
        #[arg(long, default_value = "", requires = "key")]
        notes: String,
        /// Days that release is accepted by cities after signing.
        #[arg(long, default_value_t = 365, requires = "key")]
        valid_days: i64,
    },
    /// Add a chapter (hub, coordinator).
    AddChapter {
        /// The title.
        #[arg(long)]
        title: String,
        /// The chapter's introduction.
        #[arg(long, default_value = "")]
        introduction: String,
        /// Where it goes among its siblings (lower first).
        #[arg(long, default_value_t = 0)]
        position: i32,
    },
    /// Add a step to a chapter (hub, coordinator).
    AddStep {
        /// method/chapters/{id}
        #[arg(long)]
        chapter: String,
        /// The title.
        #[arg(long)]
        title: String,
        /// The description.
        #[arg(long, default_value = "")]
        description: String,
        /// Where it goes among its siblings (lower first).
        #[arg(long, default_value_t = 0)]
        position: i32,
    },
    /// Add a checklist item to a step (hub, coordinator).
    AddItem {
        /// method/steps/{id}
        #[arg(long)]
        step: String,
        /// The item's text.
        #[arg(long)]
        text: String,
        /// Where it goes among its siblings (lower first).
        #[arg(long, default_value_t = 0)]
        position: i32,
    },
}

#[derive(Subcommand, Debug)]
enum ProgressCommand {
    /// Mark a method step started or done for this city (coordinator).
    Set {
        /// method/steps/{id}
        #[arg(long)]
        step: String,
        /// started or done.
        #[arg(long)]
        state: String,
        /// YYYY-MM-DD
        #[arg(long)]
        date: String,
        /// A short public note (shared with every city).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// A city's progress (this node's city unless --city).
    List {
        /// One city, by id (for example `malmo`); default: this node's city.
        #[arg(long)]
        city: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per method step, which cities are where.
    Adoption {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum StatsCommand {
    /// Record raw data (stays in the city).
    Record {
        #[command(subcommand)]
        command: RecordCommand,
    },
    /// List this city's support records of a quarter (coordinator).
    Records {
        /// The quarter, `YYYY-Qn` (for example 2026-Q3).
        #[arg(long, default_value = "")]
        quarter: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show exactly what publishing a quarter would send (coordinator).
    Preview {
        /// YYYY-Qn
        #[arg(long)]
        quarter: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish the previewed release of a quarter (coordinator).
    Publish {
        /// The quarter, `YYYY-Qn` (for example 2026-Q3).
        #[arg(long)]
        quarter: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Published releases of this city, one city, or all cities.
    Releases {
        /// Every city, not only this node's.
        #[arg(long)]
        all_cities: bool,
        /// One city, by id (for example `malmo`); default: this node's city.
        #[arg(long, conflicts_with = "all_cities")]
        city: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show or change the national disclosure policy (changes at the hub, coordinator).
    Policy {
        /// suppression or noise.
        #[arg(long)]
        mode: Option<String>,
        /// Suppress counts from 1 to k-1.
        #[arg(long)]
        k: Option<i32>,
        /// ε per release, in thousandths.
        #[arg(long)]
        epsilon_milli: Option<i32>,
        /// Yearly ε cap, in thousandths.
        #[arg(long)]
        year_cap_milli: Option<i32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// National figures for a year (at a county hub, the county's own).
    National {
        /// The year, for example 2026.
        #[arg(long)]
        year: i32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print CSV instead.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RecordCommand {
    /// One person supported or identified as a possible victim in a quarter (coordinator).
    Support {
        /// The quarter, `YYYY-Qn` (for example 2026-Q3).
        #[arg(long)]
        quarter: String,
        /// female, male, other_or_unknown
        #[arg(long)]
        sex: String,
        /// 0-11, 12-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+, unknown
        #[arg(long)]
        age_band: String,
        /// swedish, other_eu, non_eu, unknown
        #[arg(long)]
        citizenship: String,
        /// sexual, forced_labour, forced_criminality, begging, other
        #[arg(long)]
        exploitation: String,
        /// police, social_services, civil_society, business, self_or_other
        #[arg(long)]
        referral_source: String,
        /// The city's own reference for the person (never published).
        #[arg(long)]
        person_ref: String,
    },
    /// An activity count (editor).
    Activity {
        /// The quarter, `YYYY-Qn` (for example 2026-Q3).
        #[arg(long)]
        quarter: String,
        /// trainings_held, people_trained, outreach_sessions, network_meetings, businesses_enrolled
        #[arg(long)]
        kind: String,
        /// How many.
        #[arg(long)]
        count: i64,
    },
}

#[derive(Subcommand, Debug)]
enum CitiesCommand {
    /// List member cities.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a member city (hub, admin); at a county hub, onboard a city into the county (its
    /// federation listener admits the city from then on). Warns when no city of that id has
    /// linked to the hub.
    Add {
        /// The city's id, exactly the name in its certificate: a-z, 0-9 and '-' (`goteborg`).
        #[arg(long)]
        id: String,
        /// The name shown to people; any letters (Göteborg). Needed at the national hub; a
        /// county hub shows the national directory's.
        #[arg(long)]
        display_name: Option<String>,
        /// The county (län), for example "Skåne län". Needed at the national hub.
        #[arg(long)]
        county: Option<String>,
    },
    /// Remove a member city (hub, admin); at a county hub, the county stops serving it.
    Remove {
        /// The city's id, for example `kalmar`.
        id: String,
    },
}

struct Resolved {
    endpoint: String,
    token: String,
    ca_pem: String,
}

fn resolve(target: &Target) -> Result<Resolved, CliError> {
    let usage = |m: String| CliError::Usage(m);
    if let Some(path) = &target.federation {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let file: Value = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{} is not a federation file: {e}", path.display())))?;
        let cities = file["cities"]
            .as_object()
            .ok_or_else(|| usage(format!("{} has no `cities`", path.display())))?;
        let hub_name = file["hub"]["name"]
            .as_str()
            .unwrap_or("national")
            .to_string();
        let empty = serde_json::Map::new();
        let counties = file["counties"].as_object().unwrap_or(&empty);
        let standby_name = file["standby"]["name"].as_str().map(String::from);
        let mut known: Vec<String> = vec![hub_name.clone()];
        known.extend(standby_name.clone());
        known.extend(counties.keys().cloned());
        known.extend(cities.keys().cloned());
        let name = target.node.clone().ok_or_else(|| {
            usage(format!(
                "--node is required with --federation; one of: hub, {}",
                known.join(", ")
            ))
        })?;
        let node = if name == "hub" || name == hub_name {
            &file["hub"]
        } else if standby_name.as_deref() == Some(name.as_str()) {
            &file["standby"]
        } else {
            cities
                .get(&name)
                .or_else(|| counties.get(&name))
                .ok_or_else(|| {
                    usage(format!(
                        "no node {name:?} in {}; known: hub, {}",
                        path.display(),
                        known.join(", ")
                    ))
                })?
        };
        let ca_path = target
            .ca
            .clone()
            .or_else(|| file["ca"].as_str().map(PathBuf::from))
            .ok_or_else(|| usage("no CA in the federation file".into()))?;
        let ca_pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| usage(format!("cannot read CA {}: {e}", ca_path.display())))?;
        return Ok(Resolved {
            endpoint: target
                .endpoint
                .clone()
                .or_else(|| node["api"].as_str().map(String::from))
                .unwrap_or_default(),
            token: target
                .token
                .clone()
                .or_else(|| node["token"].as_str().map(String::from))
                .unwrap_or_default(),
            ca_pem,
        });
    }
    let endpoint = target.endpoint.clone().ok_or_else(|| {
        usage("give --federation and --node, or --endpoint (or SFS_ENDPOINT)".into())
    })?;
    let token = target
        .token
        .clone()
        .ok_or_else(|| usage("give --token (or SFS_TOKEN)".into()))?;
    let ca_path = target.ca.clone().ok_or_else(|| {
        usage("give --ca (or SFS_CA), the CA certificate that signed the node".into())
    })?;
    let ca_pem = std::fs::read_to_string(&ca_path)
        .map_err(|e| usage(format!("cannot read CA {}: {e}", ca_path.display())))?;
    Ok(Resolved {
        endpoint,
        token,
        ca_pem,
    })
}

/// Milliseconds since the Unix epoch as a date and time in this machine's time zone (`TZ`, else
/// the system's); `-` for 0.
pub fn local_time(ms: i64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// A table: a header line and aligned columns; the last column is not padded.
struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table, or `empty` alone when it has no rows.
    fn print(&self, out: &mut dyn Write, empty: &str) -> Result<(), CliError> {
        if self.rows.is_empty() {
            writeln!(out, "{empty}")?;
            return Ok(());
        }
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| -> String {
            let last = cells.len().saturating_sub(1);
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i == last {
                    text.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.trim_end().to_string()
        };
        writeln!(out, "{}", line(self.head.clone()))?;
        for row in &self.rows {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

/// Display names of the register's organisations by resource name; empty when the token may
/// not read them (the ids are shown alone then).
async fn organisation_names(client: &mut Client) -> std::collections::BTreeMap<String, String> {
    match client.register.list_organisations(all()).await {
        Ok(list) => list
            .into_inner()
            .organisations
            .into_iter()
            .map(|o| (o.name, o.display_name))
            .collect(),
        Err(_) => Default::default(),
    }
}

/// `Name (organisations/{id})`, or the id alone when the name is unknown.
fn named(names: &std::collections::BTreeMap<String, String>, id: &str) -> String {
    match names.get(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_string(),
    }
}

/// Just the names, separated by semicolons (names hold commas); ids where a name is unknown.
fn names_only(names: &std::collections::BTreeMap<String, String>, ids: &[String]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first line of `text`, at most `max` characters, marked with … when shortened.
fn short(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && line.len() == text.trim_end().len() {
        return line.to_string();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

/// Prints a list as one JSON array, or one line per item.
fn emit_lines<T: serde::Serialize>(
    out: &mut dyn Write,
    items: &[T],
    as_json: bool,
    line: impl Fn(&T) -> String,
) -> Result<(), CliError> {
    if as_json {
        return emit(out, &items, true);
    }
    for item in items {
        writeln!(out, "{}", line(item))?;
    }
    Ok(())
}

/// Prints a message as JSON, or as indented `key: value` lines.
fn emit<T: serde::Serialize>(
    out: &mut dyn Write,
    value: &T,
    as_json: bool,
) -> Result<(), CliError> {
    let value = serde_json::to_value(value).map_err(|e| CliError::Usage(e.to_string()))?;
    if as_json {
        writeln!(out, "{value}")?;
    } else {
        print_value(out, &value, 0)?;
    }
    Ok(())
}

fn print_value(out: &mut dyn Write, value: &Value, indent: usize) -> Result<(), CliError> {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::Array(items) if items.is_empty() => {}
                    Value::String(s) if s.is_empty() => {}
                    Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
                        let parts: Vec<String> = items
                            .iter()
                            .map(|i| {
                                i.as_str()
                                    .map(String::from)
                                    .unwrap_or_else(|| i.to_string())
                            })
                            .collect();
                        writeln!(out, "{pad}{key}: {}", parts.join(", "))?;
                    }
                    Value::Array(items) => {
                        writeln!(out, "{pad}{key}:")?;
                        for item in items {
                            print_value(out, item, indent + 2)?;
                            writeln!(out)?;
                        }
                    }
                    Value::Object(_) => {
                        writeln!(out, "{pad}{key}:")?;
                        print_value(out, v, indent + 2)?;
                    }
                    Value::String(s) => writeln!(out, "{pad}{key}: {s}")?,
                    other => writeln!(out, "{pad}{key}: {other}")?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                print_value(out, item, indent)?;
                writeln!(out)?;
            }
        }
        Value::String(s) => writeln!(out, "{pad}{s}")?,
        other => writeln!(out, "{pad}{other}")?,
    }
    Ok(())
}

fn lesson_json(l: &pb::Lesson) -> Value {
    serde_json::to_value(l).unwrap_or(Value::Null)
}

fn print_lesson(out: &mut dyn Write, l: &pb::Lesson, as_json: bool) -> Result<(), CliError> {
    if as_json {
        writeln!(out, "{}", lesson_json(l))?;
    } else {
        writeln!(
            out,
            "{}\n  {}\n  tags: {}\n\n{}",
            l.name,
            l.title,
            l.tags.join(", "),
            l.body
        )?;
    }
    Ok(())
}

/// Runs the command line with `args` (the first being the program name), writing to `out` and
/// warnings to standard error.
pub async fn run(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    run_with_warnings(args, out, &mut std::io::stderr()).await
}

/// Like [`run`], with warnings (things done that may not be what was meant) written to `warn`.
pub async fn run_with_warnings(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<(), CliError> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            write!(out, "{err}")?;
            return Ok(());
        }
        Err(err) => return Err(CliError::Usage(err.to_string().trim_end().to_string())),
    };
    let target = resolve(&cli.target)?;
    let mut client = Client::connect(&target.endpoint, &target.token, &target.ca_pem).await?;
    match cli.command {
        Command::Lessons { command } => lessons(&mut client, command, out).await?,
        Command::Register { command } => register(&mut client, command, out).await?,
        Command::Signals { command } => signals(&mut client, command, out).await?,
        Command::Handbook { command } => handbook(&mut client, command, out).await?,
        Command::Progress { command } => progress(&mut client, command, out).await?,
        Command::Cities { command } => cities(&mut client, command, out, warn).await?,
        Command::Stats { command } => stats(&mut client, command, out).await?,
        Command::Tokens { command } => tokens(&mut client, command, out).await?,
        Command::Status { json } => status(&mut client, json, out).await?,
        Command::Export { command } => export(&mut client, command, out).await?,
    }
    Ok(())
}

async fn lessons(
    client: &mut Client,
    command: LessonsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        LessonsCommand::Add {
            title,
            body,
            tags,
            step,
            json,
        } => {
            let lesson = client
                .create_lesson_from(pb::Lesson {
                    title,
                    body,
                    tags,
                    method_step: step.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            if json {
                emit(out, &lesson, true)?;
            } else {
                writeln!(out, "{}", lesson.name)?;
            }
        }
        LessonsCommand::List {
            all_cities,
            city,
            county,
            tag,
            step,
            query,
            archived,
            json,
        } => {
            let parent = if all_cities || (county.is_some() && city.is_none()) {
                "cities/-".to_string()
            } else {
                let city = match city {
                    Some(city) => city,
                    None => client.status().await?.node_id,
                };
                format!("cities/{city}")
            };
            let county = county.unwrap_or_default();
            let mut lessons = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .lessons
                    .list_lessons(pb::ListLessonsRequest {
                        parent: parent.clone(),
                        page_size: 500,
                        page_token: token,
                        tag: tag.clone().unwrap_or_default(),
                        method_step: step.clone().unwrap_or_default(),
                        query: query.clone().unwrap_or_default(),
                        show_archived: archived,
                        county: county.clone(),
                    })
                    .await
                    .map_err(ClientError::from)?
                    .into_inner();
                lessons.extend(page.lessons);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            if json {
                writeln!(
                    out,
                    "{}",
                    Value::Array(lessons.iter().map(lesson_json).collect())
                )?;
            } else {
                let mut table = Table::new(&["CITY", "ID", "TITLE"]);
                for l in &lessons {
                    let archived = if l.archived { " (archived)" } else { "" };
                    table.row(vec![
                        l.city.clone(),
                        l.name.clone(),
                        format!("{}{archived}", l.title),
                    ]);
                }
                table.print(out, "no lessons")?;
            }
        }
        LessonsCommand::Get { name, json } => {
            let lesson = client.get_lesson(&name).await?;
            print_lesson(out, &lesson, json)?;
        }
        LessonsCommand::Update {
            name,
            title,
            body,
            tags,
            step,
            archive,
            unarchive,
            json,
        } => {
            let mut mask = Vec::new();
            for (field, given) in [
                ("title", title.is_some()),
                ("body", body.is_some()),
                ("tags", tags.is_some()),
                ("method_step", step.is_some()),
                ("archived", archive || unarchive),
            ] {
                if given {
                    mask.push(field.to_string());
                }
            }
            if mask.is_empty() {
                return Err(CliError::Usage("nothing to update: give --title, --body, --tag, --step, --archive or --unarchive".into()));
            }
            let lesson = pb::Lesson {
                name,
                title: title.unwrap_or_default(),
                body: body.unwrap_or_default(),
                tags: tags.unwrap_or_default(),
                method_step: step.unwrap_or_default(),
                archived: archive,
                ..Default::default()
            };
            let lesson = client.update_lesson(lesson, mask).await?;
            print_lesson(out, &lesson, json)?;
        }
        LessonsCommand::Delete { name } => {
            let generation = client.delete_lesson(&name).await?;
            writeln!(
                out,
                "deleted {name}; the city's lessons are now at generation {generation}"
            )?;
        }
        LessonsCommand::Redact { name, fields, json } => {
            let (lesson, generation) = client.redact_lesson(&name, fields).await?;
            if !json {
                writeln!(
                    out,
                    "redacted {name}; the city's lessons are now at generation {generation}"
                )?;
            }
            print_lesson(out, &lesson, json)?;
        }
    }
    Ok(())
}

fn all() -> pb::ListRequest {
    pb::ListRequest {
        page_size: 500,
        page_token: String::new(),
    }
}

async fn register(
    client: &mut Client,
    command: RegisterCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    match command {
        RegisterCommand::Organisations { json } => {
            let list = client
                .register
                .list_organisations(all())
                .await
                .map_err(err)?
                .into_inner()
                .organisations;
            if json {
                return emit(out, &list, true);
            }
            let mut table = Table::new(&["ID", "SECTOR", "NAME"]);
            for o in &list {
                table.row(vec![
                    o.name.clone(),
                    o.sector.clone(),
                    o.display_name.clone(),
                ]);
            }
            table.print(out, "no organisations")?;
        }
        RegisterCommand::AddOrganisation { name, sector } => {
            let organisation = pb::Organisation {
                display_name: name,
                sector,
                ..Default::default()
            };
            let created = client
                .register
                .create_organisation(pb::CreateOrganisationRequest {
                    organisation: Some(organisation),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Groups { json } => {
            let list = client
                .register
                .list_groups(all())
                .await
                .map_err(err)?
                .into_inner()
                .groups;
            if json {
                return emit(out, &list, true);
            }
            let names = organisation_names(client).await;
            let mut table = Table::new(&["ID", "NAME", "ORGANISATIONS", "DESCRIPTION"]);
            for g in &list {
                table.row(vec![
                    g.name.clone(),
                    g.display_name.clone(),
                    names_only(&names, &g.organisations),
                    short(&g.description, 50),
                ]);
            }
            table.print(out, "no groups")?;
        }
        RegisterCommand::AddGroup {
            name,
            description,
            organisations,
        } => {
            let group = pb::Group {
                display_name: name,
                description,
                organisations,
                ..Default::default()
            };
            let created = client
                .register
                .create_group(pb::CreateGroupRequest { group: Some(group) })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Contacts { json } => {
            let list = client
                .register
                .list_contacts(all())
                .await
                .map_err(err)?
                .into_inner()
                .contacts;
            if json {
                return emit(out, &list, true);
            }
            let names = organisation_names(client).await;
            let mut table = Table::new(&["ID", "NAME", "ROLE", "ORGANISATION"]);
            for c in &list {
                table.row(vec![
                    c.name.clone(),
                    c.full_name.clone(),
                    c.role.clone(),
                    named(&names, &c.organisation),
                ]);
            }
            table.print(out, "no contacts")?;
        }
        RegisterCommand::EraseContact { name } => {
            let done = client
                .register
                .erase_contact(pb::EraseRequest { name })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "erased {}", done.name)?;
        }
        RegisterCommand::AddContact {
            name,
            organisation,
            role,
            phone,
            email,
        } => {
            let contact = pb::Contact {
                full_name: name,
                organisation,
                role,
                phone,
                email,
                ..Default::default()
            };
            let created = client
                .register
                .create_contact(pb::CreateContactRequest {
                    contact: Some(contact),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Meetings { json } => {
            let list = client
                .register
                .list_meetings(all())
                .await
                .map_err(err)?
                .into_inner()
                .meetings;
            if json {
                return emit(out, &list, true);
            }
            let names = organisation_names(client).await;
            let mut table = Table::new(&[
                "DATE",
                "ID",
                "ORGANISATIONS",
                "DECISIONS",
                "OPEN FOLLOW-UPS",
                "AGENDA",
            ]);
            for m in &list {
                table.row(vec![
                    m.date.clone(),
                    m.name.clone(),
                    names_only(&names, &m.organisations),
                    m.decisions.len().to_string(),
                    m.follow_ups.iter().filter(|f| !f.done).count().to_string(),
                    short(&m.agenda, 40),
                ]);
            }
            table.print(out, "no meetings")?;
        }
        RegisterCommand::AddMeeting {
            date,
            organisations,
            agenda,
            notes,
            decisions,
        } => {
            let meeting = pb::Meeting {
                date,
                organisations,
                agenda,
                notes,
                decisions,
                ..Default::default()
            };
            let created = client
                .register
                .create_meeting(pb::CreateMeetingRequest {
                    meeting: Some(meeting),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Routine { json } => {
            let routine = client
                .register
                .get_routine(pb::GetRoutineRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if json {
                emit(out, &routine, true)?;
            } else if routine.steps.is_empty() {
                writeln!(out, "no routine yet")?;
            } else {
                let names = organisation_names(client).await;
                for (i, step) in routine.steps.iter().enumerate() {
                    let how = if step.how_to_reach.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", step.how_to_reach)
                    };
                    writeln!(
                        out,
                        "{}. {}\n   {}{how}",
                        i + 1,
                        step.description,
                        named(&names, &step.organisation),
                    )?;
                }
            }
        }
        RegisterCommand::SetRoutine { steps } => {
            let steps = steps
                .iter()
                .map(|s| {
                    let parts: Vec<&str> = s.splitn(3, '|').collect();
                    match parts.as_slice() {
                        [description, organisation, how] => Ok(pb::RoutineStep { description: description.to_string(), organisation: organisation.to_string(), how_to_reach: how.to_string() }),
                        [description, organisation] => Ok(pb::RoutineStep { description: description.to_string(), organisation: organisation.to_string(), how_to_reach: String::new() }),
                        _ => Err(CliError::Usage(format!("--step {s:?} must be \"description|organisations/{{id}}|how to reach\""))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let routine = pb::Routine {
                name: "routine".into(),
                steps,
            };
            let saved = client
                .register
                .update_routine(pb::UpdateRoutineRequest {
                    routine: Some(routine),
                })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "routine has {} steps", saved.steps.len())?;
        }
        RegisterCommand::DenyWords { json } => {
            let words = client
                .register
                .list_deny_words(pb::ListDenyWordsRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if json {
                return emit(out, &words, true);
            }
            if words.words.is_empty() {
                writeln!(out, "the deny list is empty")?;
            }
            for word in &words.words {
                writeln!(out, "{word}")?;
            }
        }
        RegisterCommand::DenyWord { word } => {
            let words = client
                .register
                .add_deny_word(pb::DenyWordRequest { word })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "deny list: {}", words.words.join(", "))?;
        }
        RegisterCommand::AllowWord { word } => {
            let words = client
                .register
                .remove_deny_word(pb::DenyWordRequest { word })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "deny list: {}", words.words.join(", "))?;
        }
        RegisterCommand::Delete { name } => {
            let request = pb::DeleteRequest { name: name.clone() };
            match name.split('/').next().unwrap_or_default() {
                "organisations" => drop(
                    client
                        .register
                        .delete_organisation(request)
                        .await
                        .map_err(err)?,
                ),
                "groups" => drop(client.register.delete_group(request).await.map_err(err)?),
                "contacts" => drop(client.register.delete_contact(request).await.map_err(err)?),
                "meetings" => drop(client.register.delete_meeting(request).await.map_err(err)?),
                _ => {
                    return Err(CliError::Usage(format!(
                        "{name:?} is not an organisation, group, contact or meeting name"
                    )))
                }
            }
            writeln!(out, "deleted {name}")?;
        }
    }
    Ok(())
}

/// One signal as labelled lines, its follow-ups as a table.
fn print_signal(
    out: &mut dyn Write,
    signal: &pb::Signal,
    names: &std::collections::BTreeMap<String, String>,
) -> Result<(), CliError> {
    let mut fields = vec![
        ("Signal", signal.name.clone()),
        ("Date", signal.date.clone()),
        ("Kind", signal.kind.clone()),
        ("Status", signal.status.clone()),
        ("Reported by", named(names, &signal.reporting_organisation)),
        ("Logged", local_time(signal.create_time_ms)),
        ("Changed", local_time(signal.update_time_ms)),
    ];
    if signal.close_time_ms != 0 {
        fields.push(("Closed", local_time(signal.close_time_ms)));
    }
    for (label, value) in fields {
        writeln!(out, "{label:<12} {value}")?;
    }
    writeln!(out, "\n{}", signal.description)?;
    if !signal.follow_ups.is_empty() {
        writeln!(out)?;
        print_follow_ups(out, &signal.follow_ups, names)?;
    }
    Ok(())
}

/// Follow-ups as a table: done or open, what, who, by when.
fn print_follow_ups(
    out: &mut dyn Write,
    follow_ups: &[pb::FollowUp],
    names: &std::collections::BTreeMap<String, String>,
) -> Result<(), CliError> {
    let mut table = Table::new(&["DONE", "DUE", "OWNER", "FOLLOW-UP"]);
    for f in follow_ups {
        table.row(vec![
            if f.done { "yes" } else { "no" }.to_string(),
            if f.due_date.is_empty() {
                "-".to_string()
            } else {
                f.due_date.clone()
            },
            named(names, &f.owner),
            f.action.clone(),
        ]);
    }
    table.print(out, "no follow-ups")
}

async fn signals(
    client: &mut Client,
    command: SignalsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    match command {
        SignalsCommand::Add {
            date,
            organisation,
            kind,
            description,
        } => {
            let signal = pb::Signal {
                date,
                reporting_organisation: organisation,
                kind,
                description,
                ..Default::default()
            };
            let created = client
                .signals
                .create_signal(pb::CreateSignalRequest {
                    signal: Some(signal),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        SignalsCommand::List { status, json } => {
            let request = pb::ListSignalsRequest {
                page_size: 500,
                page_token: String::new(),
                status: status.unwrap_or_default(),
            };
            let list = client
                .signals
                .list_signals(request)
                .await
                .map_err(err)?
                .into_inner()
                .signals;
            if json {
                return emit(out, &list, true);
            }
            let names = organisation_names(client).await;
            let mut table = Table::new(&["ID", "DATE", "STATUS", "KIND", "REPORTED BY"]);
            for signal in &list {
                table.row(vec![
                    signal.name.clone(),
                    signal.date.clone(),
                    signal.status.clone(),
                    signal.kind.clone(),
                    named(&names, &signal.reporting_organisation),
                ]);
            }
            table.print(out, "no signals")?;
        }
        SignalsCommand::Get { name, json } => {
            let signal = client
                .signals
                .get_signal(pb::GetRequest { name })
                .await
                .map_err(err)?
                .into_inner();
            if json {
                return emit(out, &signal, true);
            }
            let names = organisation_names(client).await;
            print_signal(out, &signal, &names)?;
        }
        SignalsCommand::SetStatus { name, status } => {
            let signal = pb::Signal {
                name,
                status,
                ..Default::default()
            };
            let request = pb::UpdateSignalRequest {
                signal: Some(signal),
                update_mask: vec!["status".into()],
            };
            let updated = client
                .signals
                .update_signal(request)
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "{} is {}", updated.name, updated.status)?;
        }
        SignalsCommand::Erase { name } => {
            let done = client
                .signals
                .erase_signal(pb::EraseRequest { name })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "erased {}", done.name)?;
        }
        SignalsCommand::AccessLog { json } => {
            let entries = client
                .signals
                .list_access_log(all())
                .await
                .map_err(err)?
                .into_inner()
                .entries;
            if json {
                return emit(out, &entries, true);
            }
            let mut table = Table::new(&["TIME", "ACTION", "RESOURCE", "WHO"]);
            for e in &entries {
                table.row(vec![
                    local_time(e.time_ms),
                    e.action.clone(),
                    e.resource.clone(),
                    e.actor.clone(),
                ]);
            }
            table.print(out, "the access log is empty")?;
        }
    }
    Ok(())
}

async fn handbook(
    client: &mut Client,
    command: HandbookCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    match command {
        HandbookCommand::Running { json } => {
            let running = client.running_release().await?;
            if json {
                emit(out, &running, true)?;
            } else {
                match &running.release {
                    Some(r) => writeln!(
                        out,
                        "running release {} (number {}, {}){}",
                        r.version_label,
                        r.number,
                        if running.verified {
                            format!("verified with key {}", running.key_id)
                        } else {
                            "not verified: no release key configured".to_string()
                        },
                        if running.expired { ", EXPIRED" } else { "" }
                    )?,
                    None => writeln!(out, "no release running")?,
                }
                if running.awaiting_release {
                    writeln!(
                        out,
                        "AWAITING a new release: the handbook was redacted at the hub (now \
                         generation {}); the content of the release above is destroyed and no \
                         handbook is served until the coordinator signs a release of the new \
                         generation",
                        running.handbook_generation
                    )?;
                }
                for check in &running.not_running {
                    let r = check.release.clone().unwrap_or_default();
                    let verdict = if check.older { "older" } else { "REFUSED" };
                    writeln!(
                        out,
                        "{verdict:<8} {} (number {}, {}): {}",
                        r.version_label, r.number, r.name, check.reason
                    )?;
                }
            }
        }
        HandbookCommand::Show { latest, json } => {
            let handbook = if latest {
                client.handbook_latest().await?
            } else {
                client.handbook().await?
            };
            if json {
                emit(out, &handbook, true)?;
            } else {
                let release = if handbook.current_release.is_empty() {
                    "no release yet".to_string()
                } else {
                    let how = if handbook.verified {
                        ", signature verified"
                    } else {
                        ""
                    };
                    format!("release {}{how}", handbook.current_release)
                };
                if handbook.awaiting_release {
                    writeln!(
                        out,
                        "No handbook served: it was redacted at the hub (generation {}); \
                         waiting for a signed release of the new generation\n",
                        handbook.generation
                    )?;
                } else if handbook.version.is_empty() {
                    writeln!(out, "Handbook ({release}; empty)\n")?;
                } else {
                    writeln!(out, "Handbook ({release}; version {})\n", handbook.version)?;
                }
                for chapter in &handbook.chapters {
                    writeln!(out, "{}  [{}]", chapter.title, chapter.name)?;
                    for step in &chapter.steps {
                        writeln!(out, "  - {}  [{}]", step.title, step.name)?;
                        for item in &step.checklist {
                            writeln!(out, "      [ ] {}", item.text)?;
                        }
                    }
                    writeln!(out)?;
                }
            }
        }
        HandbookCommand::Changes {
            since_release,
            since_version,
            json,
        } => {
            let diff = match (since_release, since_version) {
                (Some(release), _) => client.handbook_changes_since_release(&release).await?,
                (None, Some(version)) => client.handbook_changes_since_version(&version).await?,
                (None, None) => {
                    return Err(CliError::Usage(
                        "give --since-release or --since-version".into(),
                    ))
                }
            };
            if json {
                emit(out, &diff, true)?;
            } else if diff.changes.is_empty() {
                writeln!(out, "no changes")?;
            } else {
                for c in &diff.changes {
                    let fields = if c.fields.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", c.fields.join(", "))
                    };
                    writeln!(out, "{:<8} {:<30} {}{fields}", c.kind, c.resource, c.title)?;
                }
            }
        }
        HandbookCommand::Releases { json } => {
            let list = client
                .method
                .list_releases(all())
                .await
                .map_err(err)?
                .into_inner()
                .releases;
            emit_lines(out, &list, json, |r| {
                format!("{:<10} {:<32} {}", r.version_label, r.name, r.notes)
            })?;
        }
        HandbookCommand::Release {
            label,
            notes,
            key: Some(key),
            valid_days,
            number,
            version,
        } => {
            let key = crate::release::SigningKey::read(&key).map_err(ClientError::from)?;
            let draft = crate::ReleaseDraft {
                label,
                notes,
                valid_for_ms: valid_days.saturating_mul(86_400_000),
                number,
                version,
            };
            let created = client.create_signed_release(&key, draft).await?;
            writeln!(
                out,
                "{} (number {}, signed with key {})",
                created.name, created.number, created.key_id
            )?;
        }
        HandbookCommand::Release {
            label,
            notes,
            key: None,
            ..
        } => {
            let release = pb::Release {
                version_label: label,
                notes,
                ..Default::default()
            };
            let created = client
                .method
                .create_release(pb::CreateReleaseRequest {
                    release: Some(release),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        HandbookCommand::Redact {
            names,
            fields,
            text,
            key,
            label,
            notes,
            valid_days,
        } => {
            // Read the key before anything changes, so a bad key file stops the command early.
            let key = match &key {
                Some(path) => {
                    if label.is_none() {
                        return Err(CliError::Usage(
                            "give --label for the release signed after the redaction".into(),
                        ));
                    }
                    Some(crate::release::SigningKey::read(path).map_err(ClientError::from)?)
                }
                None => None,
            };
            let redacted = client
                .redact_handbook(names, fields, text.unwrap_or_default())
                .await?;
            writeln!(
                out,
                "redacted: the handbook is now generation {} (version {})",
                redacted.generation, redacted.version
            )?;
            match (key, label) {
                (Some(key), Some(label)) => {
                    let draft = crate::ReleaseDraft {
                        label,
                        notes,
                        valid_for_ms: valid_days.saturating_mul(86_400_000),
                        number: None,
                        version: Some(redacted.version),
                    };
                    let created = client.create_signed_release(&key, draft).await?;
                    writeln!(
                        out,
                        "{} (number {}, generation {}, signed with key {}); cities run it as it \
                         reaches them",
                        created.name, created.number, created.generation, created.key_id
                    )?;
                }
                _ => writeln!(
                    out,
                    "cities with a release key serve no handbook until a release of \
                     generation {} is signed: sfs handbook release --key <private key file> \
                     --label <label>",
                    redacted.generation
                )?,
            }
        }
        HandbookCommand::AddChapter {
            title,
            introduction,
            position,
        } => {
            let chapter = pb::Chapter {
                title,
                introduction,
                position,
                ..Default::default()
            };
            let created = client
                .method
                .create_chapter(pb::CreateChapterRequest {
                    chapter: Some(chapter),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        HandbookCommand::AddStep {
            chapter,
            title,
            description,
            position,
        } => {
            let step = pb::Step {
                chapter,
                title,
                description,
                position,
                ..Default::default()
            };
            let created = client
                .method
                .create_step(pb::CreateStepRequest { step: Some(step) })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        HandbookCommand::AddItem {
            step,
            text,
            position,
        } => {
            let item = pb::ChecklistItem {
                step,
                text,
                position,
                ..Default::default()
            };
            let created = client
                .method
                .create_checklist_item(pb::CreateChecklistItemRequest { item: Some(item) })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
    }
    Ok(())
}

async fn progress(
    client: &mut Client,
    command: ProgressCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    match command {
        ProgressCommand::Set {
            step,
            state,
            date,
            note,
        } => {
            let progress = pb::StepProgress {
                step,
                state,
                date,
                note,
                ..Default::default()
            };
            let saved = client
                .progress
                .set_step_progress(pb::SetStepProgressRequest {
                    progress: Some(progress),
                })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "{} {} {}", saved.step, saved.state, saved.date)?;
        }
        ProgressCommand::List { city, json } => {
            let city = match city {
                Some(city) => city,
                None => client.status().await?.node_id,
            };
            let list = client
                .progress
                .list_progress(pb::ListProgressRequest {
                    parent: format!("cities/{city}"),
                })
                .await
                .map_err(err)?
                .into_inner()
                .progress;
            if json {
                return emit(out, &list, true);
            }
            let titles: std::collections::BTreeMap<String, String> =
                match client.handbook_latest().await {
                    Ok(handbook) => handbook
                        .chapters
                        .into_iter()
                        .flat_map(|c| c.steps)
                        .map(|s| (s.name, s.title))
                        .collect(),
                    Err(_) => Default::default(),
                };
            let mut table = Table::new(&["DATE", "STATE", "STEP", "NOTE"]);
            for p in &list {
                table.row(vec![
                    p.date.clone(),
                    p.state.clone(),
                    named(&titles, &p.step),
                    p.note.clone(),
                ]);
            }
            table.print(out, "no progress recorded")?;
        }
        ProgressCommand::Adoption { json } => {
            let adoption = client
                .progress
                .get_adoption(pb::GetAdoptionRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if json {
                emit(out, &adoption, true)?;
            } else {
                for step in &adoption.steps {
                    let states: Vec<String> = step
                        .cities
                        .iter()
                        .map(|c| format!("{} {}", c.city, c.state))
                        .collect();
                    writeln!(
                        out,
                        "{}\n  {}\n  not started: {}",
                        step.title,
                        if states.is_empty() {
                            "-".to_string()
                        } else {
                            states.join(", ")
                        },
                        step.not_started.join(", ")
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn print_release(out: &mut dyn Write, r: &pb::StatsRelease) -> Result<(), CliError> {
    let state = if r.draft {
        "preview (not published)"
    } else {
        "published"
    };
    writeln!(out, "{} {} — {state}, mode {}", r.name, r.quarter, r.mode)?;
    if !r.corrects.is_empty() {
        writeln!(out, "  corrects {}", r.corrects)?;
    }
    if r.mode == "noise" {
        writeln!(
            out,
            "  spends ε {:.3}; spent this year before: {:.3} of {:.3}",
            r.epsilon_milli as f64 / 1000.0,
            r.year_spent_milli as f64 / 1000.0,
            r.year_cap_milli as f64 / 1000.0
        )?;
    } else {
        writeln!(out, "  counts from 1 to {} are suppressed", r.k - 1)?;
    }
    let mut table = String::new();
    for c in &r.cells {
        if c.table != table {
            table = c.table.clone();
            writeln!(out, "  {table}")?;
        }
        let row = if c.row.is_empty() {
            "total"
        } else {
            c.row.as_str()
        };
        let col = if c.col.is_empty() {
            "total"
        } else {
            c.col.as_str()
        };
        let value = match (c.value, c.status.as_str()) {
            (Some(v), "noisy") => format!("{v} ± {:.1}", c.sd),
            (Some(v), _) => v.to_string(),
            (None, _) => {
                if c.reason.is_empty() {
                    "suppressed".to_string()
                } else {
                    format!("suppressed ({})", c.reason)
                }
            }
        };
        writeln!(out, "    {row:<20} {col:<18} {value}")?;
    }
    let activity: Vec<String> = r.activity.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(out, "  activity: {}", activity.join(", "))?;
    Ok(())
}

async fn stats(
    client: &mut Client,
    command: StatsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    match command {
        StatsCommand::Record {
            command:
                RecordCommand::Support {
                    quarter,
                    sex,
                    age_band,
                    citizenship,
                    exploitation,
                    referral_source,
                    person_ref,
                },
        } => {
            let record = pb::SupportRecord {
                quarter,
                sex,
                age_band,
                citizenship,
                exploitation,
                referral_source,
                person_ref,
                ..Default::default()
            };
            let created = client
                .stats
                .create_support_record(pb::CreateSupportRecordRequest {
                    record: Some(record),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        StatsCommand::Record {
            command:
                RecordCommand::Activity {
                    quarter,
                    kind,
                    count,
                },
        } => {
            let record = pb::ActivityRecord {
                quarter,
                kind,
                count,
                ..Default::default()
            };
            let created = client
                .stats
                .create_activity_record(pb::CreateActivityRecordRequest {
                    record: Some(record),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        StatsCommand::Records { quarter, json } => {
            let request = pb::ListStatsRecordsRequest {
                quarter,
                page_size: 500,
                page_token: String::new(),
            };
            let records = client
                .stats
                .list_support_records(request)
                .await
                .map_err(err)?
                .into_inner()
                .records;
            if json {
                return emit(out, &records, true);
            }
            let mut table = Table::new(&[
                "QUARTER",
                "ID",
                "SEX",
                "AGE",
                "CITIZENSHIP",
                "EXPLOITATION",
                "REFERRED BY",
                "PERSON REF",
            ]);
            for r in &records {
                table.row(vec![
                    r.quarter.clone(),
                    r.name.clone(),
                    r.sex.clone(),
                    r.age_band.clone(),
                    r.citizenship.clone(),
                    r.exploitation.clone(),
                    r.referral_source.clone(),
                    r.person_ref.clone(),
                ]);
            }
            table.print(out, "no support records")?;
        }
        StatsCommand::Preview { quarter, json } => {
            let release = client
                .stats
                .preview_release(pb::PreviewReleaseRequest { quarter })
                .await
                .map_err(err)?
                .into_inner();
            if json {
                emit(out, &release, true)?
            } else {
                print_release(out, &release)?
            }
        }
        StatsCommand::Publish { quarter, json } => {
            let release = client
                .stats
                .publish_release(pb::PublishReleaseRequest { quarter })
                .await
                .map_err(err)?
                .into_inner();
            if json {
                emit(out, &release, true)?
            } else {
                print_release(out, &release)?
            }
        }
        StatsCommand::Releases {
            all_cities,
            city,
            json,
        } => {
            let parent = if all_cities {
                "cities/-".to_string()
            } else {
                format!(
                    "cities/{}",
                    match city {
                        Some(c) => c,
                        None => client.status().await?.node_id,
                    }
                )
            };
            let releases = client
                .stats
                .list_stats_releases(pb::ListStatsReleasesRequest {
                    parent,
                    period: String::new(),
                })
                .await
                .map_err(err)?
                .into_inner()
                .releases;
            if json {
                emit(out, &releases, true)?;
            } else if releases.is_empty() {
                writeln!(out, "no releases")?;
            } else {
                for r in &releases {
                    print_release(out, r)?;
                }
            }
        }
        StatsCommand::Policy {
            mode,
            k,
            epsilon_milli,
            year_cap_milli,
            json,
        } => {
            let mut policy = client
                .stats
                .get_disclosure_policy(pb::GetDisclosurePolicyRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if mode.is_some() || k.is_some() || epsilon_milli.is_some() || year_cap_milli.is_some()
            {
                if let Some(mode) = mode {
                    policy.mode = mode;
                }
                if let Some(k) = k {
                    policy.k = k;
                }
                if let Some(e) = epsilon_milli {
                    policy.epsilon_milli = e;
                }
                if let Some(cap) = year_cap_milli {
                    policy.year_cap_milli = cap;
                }
                policy = client
                    .stats
                    .update_disclosure_policy(pb::UpdateDisclosurePolicyRequest {
                        policy: Some(policy),
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
            }
            emit(out, &policy, json)?;
        }
        StatsCommand::National { year, json, csv } => {
            if csv {
                let export = client
                    .stats
                    .export_national_stats_csv(pb::GetNationalStatsRequest { year })
                    .await
                    .map_err(err)?
                    .into_inner();
                write!(out, "{}", export.csv)?;
            } else {
                let national = client
                    .stats
                    .get_national_stats(pb::GetNationalStatsRequest { year })
                    .await
                    .map_err(err)?
                    .into_inner();
                if json {
                    emit(out, &national, true)?;
                } else {
                    writeln!(
                        out,
                        "National figures {year} (from {} releases)",
                        national.releases.len()
                    )?;
                    let mut marks = std::collections::BTreeSet::new();
                    for c in national
                        .cells
                        .iter()
                        .filter(|c| c.county.is_empty() && c.period == year.to_string())
                    {
                        let row = if c.row.is_empty() {
                            "total"
                        } else {
                            c.row.as_str()
                        };
                        let col = if c.col.is_empty() {
                            "total"
                        } else {
                            c.col.as_str()
                        };
                        let figure = national_figure(&c.status, c.value, c.sd);
                        marks.insert(c.status.clone());
                        writeln!(out, "  {:<26} {row:<20} {col:<18} {figure}", c.table)?;
                    }
                    for a in national
                        .activity
                        .iter()
                        .filter(|a| a.period == year.to_string())
                    {
                        writeln!(out, "  activity {:<20} {}", a.kind, a.value)?;
                    }
                    for line in national_legend(&marks) {
                        writeln!(out, "{line}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A national figure as `sfs stats national` prints it: exact as is, a lower bound as `≥ N`, a
/// noisy count as `≈ N ± M` (M = 1.96 × sd, about 95 %).
fn national_figure(status: &str, value: i64, sd: f64) -> String {
    match status {
        "exact" => value.to_string(),
        "lower_bound" => format!("≥ {value}"),
        "noisy" => format!("≈ {value} ± {:.0}", 1.96 * sd),
        "lower_bound_noisy" => format!("≥ ≈ {value} ± {:.0}", 1.96 * sd),
        other => format!("{value} ({other})"),
    }
}

/// What the marks printed for `statuses` mean, one line each, after the figures.
fn national_legend(statuses: &std::collections::BTreeSet<String>) -> Vec<&'static str> {
    let mut lines = Vec::new();
    if statuses.contains("lower_bound") || statuses.contains("lower_bound_noisy") {
        lines.push(
            "≥ N: at least N. A city hid a small count in this cell to protect the people \
             counted; N adds up only what is certain, so \"≥ 0\" means \"unknown, but small\".",
        );
    }
    if statuses.contains("noisy") || statuses.contains("lower_bound_noisy") {
        lines.push(
            "≈ N ± M: noise was added to protect individuals; the true figure is within ± M of N \
             about 95 times in 100.",
        );
    }
    lines
}

/// Titles of the handbook's steps by name, from the newest handbook on the node; empty if it
/// cannot be read.
async fn step_titles(client: &mut Client) -> std::collections::BTreeMap<String, String> {
    match client.handbook_latest().await {
        Ok(handbook) => handbook
            .chapters
            .into_iter()
            .flat_map(|c| c.steps)
            .map(|s| (s.name, s.title))
            .collect(),
        Err(_) => Default::default(),
    }
}

/// The ids of the cities an export covers.
async fn export_cities(
    client: &mut Client,
    cities: &ExportCities,
) -> Result<Vec<String>, CliError> {
    if cities.all_cities {
        let list = client
            .directory
            .list_cities(all())
            .await
            .map_err(ClientError::from)?
            .into_inner()
            .cities;
        return Ok(list
            .into_iter()
            .map(|c| c.name.trim_start_matches("cities/").to_string())
            .collect());
    }
    Ok(vec![match &cities.city {
        Some(city) => city.clone(),
        None => client.status().await?.node_id,
    }])
}

/// The `cities/{city}` or `cities/-` parent an export covers.
async fn export_parent(client: &mut Client, cities: &ExportCities) -> Result<String, CliError> {
    if cities.all_cities {
        return Ok("cities/-".to_string());
    }
    Ok(format!(
        "cities/{}",
        export_cities(client, cities).await?[0]
    ))
}

async fn export(
    client: &mut Client,
    command: ExportCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    use crate::export::{self as ex, Format, RegisterTable};
    let err = ClientError::from;
    let text = match command {
        ExportCommand::Lessons {
            cities,
            archived,
            format,
        } => {
            let parent = export_parent(client, &cities).await?;
            let mut lessons = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .lessons
                    .list_lessons(pb::ListLessonsRequest {
                        parent: parent.clone(),
                        page_size: 500,
                        page_token: token,
                        show_archived: archived,
                        ..Default::default()
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                lessons.extend(page.lessons);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            let titles = step_titles(client).await;
            ex::lessons(&lessons, &titles).render(format)
        }
        ExportCommand::Register { table, format } => {
            let r = &mut client.register;
            let register = ex::Register {
                organisations: r
                    .list_organisations(all())
                    .await
                    .map_err(err)?
                    .into_inner()
                    .organisations,
                groups: r.list_groups(all()).await.map_err(err)?.into_inner().groups,
                contacts: r
                    .list_contacts(all())
                    .await
                    .map_err(err)?
                    .into_inner()
                    .contacts,
                meetings: r
                    .list_meetings(all())
                    .await
                    .map_err(err)?
                    .into_inner()
                    .meetings,
                routine: r
                    .get_routine(pb::GetRoutineRequest {})
                    .await
                    .map_err(err)?
                    .into_inner()
                    .steps,
            };
            match (table, format) {
                (Some(table), format) => register.table(table).render(format),
                (None, Format::Json) => format!("{}\n", register.to_json()),
                (None, Format::Csv) => {
                    let names: Vec<&str> = RegisterTable::ALL.iter().map(|t| t.as_str()).collect();
                    return Err(CliError::Usage(format!(
                        "CSV holds one table: give --table {}, or --format json for all",
                        names.join("|")
                    )));
                }
            }
        }
        ExportCommand::Progress { cities, format } => {
            let ids = export_cities(client, &cities).await?;
            let titles = step_titles(client).await;
            let mut export: Option<ex::Export> = None;
            for city in ids {
                let list = client
                    .progress
                    .list_progress(pb::ListProgressRequest {
                        parent: format!("cities/{city}"),
                    })
                    .await
                    .map_err(err)?
                    .into_inner()
                    .progress;
                let part = ex::progress(&city, &list, &titles);
                match &mut export {
                    Some(export) => export.rows.extend(part.rows),
                    None => export = Some(part),
                }
            }
            export
                .unwrap_or_else(|| ex::progress("", &[], &titles))
                .render(format)
        }
        ExportCommand::Stats { cities, format } => {
            let parent = export_parent(client, &cities).await?;
            let releases = client
                .stats
                .list_stats_releases(pb::ListStatsReleasesRequest {
                    parent,
                    period: String::new(),
                })
                .await
                .map_err(err)?
                .into_inner()
                .releases;
            ex::statistics(&releases).render(format)
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// How a city is linked, as the node sees it: `revoked` (its certificate is on the hub's
/// revocation list), `connected`, `disconnected` (seen before), or `never seen`; at the
/// national hub, for a city under a county hub, followed by `via <county>`.
fn link_state(city: &pb::City) -> String {
    let state = if city.revoked {
        "revoked"
    } else if city.connected {
        "connected"
    } else if city.last_seen_ms != 0 {
        "disconnected"
    } else {
        "never seen"
    };
    if city.linked_via.is_empty() || city.revoked {
        state.to_string()
    } else {
        format!("{state} via {}", city.linked_via)
    }
}

/// Edit distance between two short ids (for "did you mean").
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// After `cities add` at the hub: a warning when no city of that id has linked (a typo of the
/// name in the city's certificate leaves the city outside the directory).
async fn warn_if_unknown_city(
    client: &mut Client,
    id: &str,
    warn: &mut dyn Write,
) -> Result<(), CliError> {
    let Ok(status) = client.status().await else {
        return Ok(());
    };
    if status.role != "hub" {
        return Ok(());
    }
    let linked: Vec<String> = status
        .peers
        .iter()
        .filter(|p| p.peer_role == "city")
        .map(|p| p.peer_id.clone())
        .collect();
    if linked.iter().any(|p| p == id) {
        return Ok(());
    }
    let mut near: Vec<&String> = linked
        .iter()
        .filter(|p| edit_distance(p, id) <= 2)
        .collect();
    near.sort_by_key(|p| edit_distance(p, id));
    let hint = match near.first() {
        Some(near) => format!(" Did you mean {near}? (`sfs cities remove {id}` undoes this)"),
        None => String::new(),
    };
    writeln!(
        warn,
        "warning: no city {id} has linked to this hub since it started: check that {id} is \
         exactly the name in the city's certificate (spiffe://stadforstad/city/{id}).{hint}"
    )?;
    Ok(())
}

async fn cities(
    client: &mut Client,
    command: CitiesCommand,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    // A hub (the national hub, or a county hub for its own cities) sees the cities' links; a
    // city sees none but its own.
    let at_hub = matches!(command, CitiesCommand::List { json: false })
        && client
            .status()
            .await
            .is_ok_and(|s| s.role == "hub" || s.role == "county");
    let d = &mut client.directory;
    match command {
        CitiesCommand::List { json } => {
            let list = d.list_cities(all()).await.map_err(err)?.into_inner().cities;
            if json {
                emit(out, &list, true)?;
            } else {
                let now = now_ms();
                let mut table = Table::new(&[
                    "ID",
                    "NAME",
                    "COUNTY",
                    "JOINED",
                    "LINK",
                    "LAST SEEN",
                    "HANDBOOK",
                    "RUNS",
                    "LESSONS GEN",
                    "CERTIFICATE EXPIRES",
                ]);
                for c in &list {
                    let dash = |s: &str| {
                        if s.is_empty() {
                            "-".to_string()
                        } else {
                            s.to_string()
                        }
                    };
                    let certificate = if c.certificate_expire_time_ms == 0 {
                        "-".to_string()
                    } else {
                        let warn = if expiring(c.certificate_expire_time_ms, now).is_some() {
                            " RENEW"
                        } else {
                            ""
                        };
                        format!("{}{warn}", local_time(c.certificate_expire_time_ms))
                    };
                    table.row(vec![
                        c.name.trim_start_matches("cities/").to_string(),
                        c.display_name.clone(),
                        c.county.clone(),
                        c.joined_date.clone(),
                        if at_hub {
                            link_state(c)
                        } else {
                            "-".to_string()
                        },
                        if at_hub {
                            local_time(c.last_seen_ms)
                        } else {
                            "-".to_string()
                        },
                        dash(&c.handbook_release),
                        dash(&c.running_release),
                        c.lessons_generation.to_string(),
                        certificate,
                    ]);
                }
                table.print(out, "no cities")?;
            }
        }
        CitiesCommand::Add {
            id,
            display_name,
            county,
        } => {
            let city = pb::City {
                name: format!("cities/{id}"),
                display_name: display_name.unwrap_or_default(),
                county: county.unwrap_or_default(),
                ..Default::default()
            };
            let created = d
                .create_city(pb::CreateCityRequest { city: Some(city) })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
            warn_if_unknown_city(client, &id, warn).await?;
        }
        CitiesCommand::Remove { id } => {
            d.delete_city(pb::DeleteRequest {
                name: format!("cities/{id}"),
            })
            .await
            .map_err(err)?;
            writeln!(out, "removed cities/{id}")?;
        }
    }
    Ok(())
}

async fn tokens(
    client: &mut Client,
    command: TokensCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let err = ClientError::from;
    match command {
        TokensCommand::List { json } => {
            let list = client
                .node
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(err)?
                .into_inner()
                .tokens;
            if json {
                return emit(out, &list, true);
            }
            let mut table = Table::new(&["ID", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED"]);
            for t in &list {
                table.row(vec![
                    t.id.clone(),
                    t.role.clone(),
                    t.state.clone(),
                    local_time(t.create_time_ms),
                    local_time(t.expire_time_ms),
                    local_time(t.last_use_time_ms),
                ]);
            }
            table.print(out, "no tokens")?;
        }
        TokensCommand::Revoke { id } => {
            let token = client
                .node
                .revoke_token(pb::RevokeTokenRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "token {} ({}) revoked", token.id, token.role)?;
        }
    }
    Ok(())
}

/// Days from `now` before which a certificate expiry is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whole days left until `expire_ms` (negative once past), when that is fewer than
/// [`EXPIRY_WARNING_DAYS`]; `None` when unknown (0) or further away.
fn expiring(expire_ms: i64, now_ms: i64) -> Option<i64> {
    if expire_ms == 0 {
        return None;
    }
    let days = (expire_ms - now_ms).div_euclid(86_400_000);
    (days < EXPIRY_WARNING_DAYS).then_some(days)
}

fn in_days(days: i64) -> String {
    match days {
        d if d < 0 => "has expired".to_string(),
        0 => "expires within a day".to_string(),
        1 => "expires in 1 day".to_string(),
        d => format!("expires in {d} days"),
    }
}

/// ` (in N days)`, or ` (EXPIRED)`.
fn expiry_note(expire_ms: i64, now_ms: i64) -> String {
    let days = (expire_ms - now_ms).div_euclid(86_400_000);
    if days < 0 {
        " (EXPIRED)".to_string()
    } else {
        format!(" (in {days} days)")
    }
}

async fn status(client: &mut Client, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let status = client.status().await?;
    if json {
        return emit(out, &status, true);
    }
    writeln!(out, "node {} ({})", status.node_id, status.role)?;
    let now = now_ms();
    if status.certificate_expire_time_ms != 0 {
        writeln!(
            out,
            "certificate expires {}{}",
            local_time(status.certificate_expire_time_ms),
            expiry_note(status.certificate_expire_time_ms, now)
        )?;
    }
    let mut warnings = Vec::new();
    if let Some(days) = expiring(status.certificate_expire_time_ms, now) {
        warnings.push(format!(
            "this node's certificate {}: issue a new one (`sfs-node pki issue`) and restart the \
             node before then",
            in_days(days)
        ));
    }
    if status.role == "hub" {
        if let Ok(cities) = client.directory.list_cities(all()).await {
            for city in cities.into_inner().cities {
                let id = city.name.trim_start_matches("cities/");
                if city.revoked {
                    warnings.push(format!(
                        "{id}'s certificate is revoked: it cannot link until it has a new one"
                    ));
                } else if let Some(days) = expiring(city.certificate_expire_time_ms, now) {
                    warnings.push(format!(
                        "{id}'s certificate {}: issue it a new one (`sfs-node pki issue --node \
                         {id}`)",
                        in_days(days)
                    ));
                }
            }
        }
    }
    for warning in &warnings {
        writeln!(out, "WARNING: {warning}")?;
    }
    writeln!(out, "peers:")?;
    for p in &status.peers {
        let error = if p.last_error.is_empty() {
            String::new()
        } else {
            format!("  last error: {}", p.last_error)
        };
        writeln!(
            out,
            "  {:<14} {:<5} {:<12} since {}{}",
            p.peer_id,
            p.peer_role,
            p.state,
            local_time(p.since_ms),
            error
        )?;
    }
    writeln!(out, "documents:")?;
    for d in &status.documents {
        let peers: Vec<String> = d
            .peers
            .iter()
            .map(|p| format!("{}: {}", p.peer_id, p.state))
            .collect();
        writeln!(
            out,
            "  {:<28} {} head(s)  {}",
            d.doc_id,
            d.heads.len(),
            peers.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn national_figures_say_what_their_marks_mean() {
        use super::{national_figure, national_legend};
        assert_eq!(national_figure("exact", 27, 0.0), "27");
        assert_eq!(national_figure("lower_bound", 0, 0.0), "≥ 0");
        assert_eq!(national_figure("noisy", 17, 2.0), "≈ 17 ± 4");
        assert_eq!(national_figure("lower_bound_noisy", 9, 1.0), "≥ ≈ 9 ± 2");
        let marks = |s: &[&str]| s.iter().map(|m| m.to_string()).collect();
        assert!(national_legend(&marks(&["exact"])).is_empty());
        let both = national_legend(&marks(&["exact", "lower_bound", "noisy"]));
        assert_eq!(both.len(), 2);
        assert!(both[0].starts_with("≥ N: at least N."), "{both:?}");
        assert!(both[1].starts_with("≈ N ± M:"), "{both:?}");
        assert_eq!(national_legend(&marks(&["lower_bound_noisy"])).len(), 2);
    }

    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every subcommand, with the path of subcommands to it.
    fn all_args(command: &clap::Command, path: &str, found: &mut Vec<(String, String, bool)>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            found.push((path.to_string(), id.to_string(), arg.get_help().is_some()));
        }
        for sub in command.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), found);
        }
    }

    #[test]
    fn every_option_has_a_description() {
        let mut found = Vec::new();
        all_args(&Cli::command(), "sfs", &mut found);
        let missing: Vec<String> = found
            .iter()
            .filter(|(_, _, has_help)| !has_help)
            .map(|(path, id, _)| format!("{path} --{id}"))
            .collect();
        assert!(found.len() > 100, "walked {} options", found.len());
        assert!(
            missing.is_empty(),
            "options without --help text: {missing:#?}"
        );
    }

    #[test]
    fn connection_options_are_listed_apart_and_read_the_environment() {
        let command = Cli::command();
        for id in ["federation", "node", "endpoint", "token", "ca"] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id().as_str() == id)
                .unwrap();
            assert_eq!(
                arg.get_help_heading(),
                Some("Connection (every command)"),
                "--{id}"
            );
            assert!(
                arg.get_env().is_some(),
                "--{id} has an environment variable"
            );
        }
    }
}
