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

#[derive(Parser, Debug)]
#[command(name = "sfs", version, about = "Command line for stadforstad nodes")]
pub struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Target {
    /// A federation.json written by `sfs-node demo`.
    #[arg(long, global = true)]
    federation: Option<PathBuf>,
    /// The node to talk to, by name, in the federation file (`hub` also names the hub).
    #[arg(long, global = true)]
    node: Option<String>,
    /// The node's API endpoint, for example https://127.0.0.1:7443.
    #[arg(long, env = "SFS_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// An API token.
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
    /// The node's peers, links and per-document sync state.
    Status {
        #[arg(long)]
        json: bool,
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
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        body: String,
        /// A tag; repeat for more.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The method step it is about (method/steps/{id}).
        #[arg(long)]
        step: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List lessons of this node's city, of one city, or of all cities.
    List {
        #[arg(long)]
        all_cities: bool,
        #[arg(long, conflicts_with = "all_cities")]
        city: Option<String>,
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
        #[arg(long)]
        json: bool,
    },
    /// Show one lesson by name (cities/{city}/lessons/{id}).
    Get {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a lesson of this node's city.
    Update {
        name: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        body: Option<String>,
        /// Replaces all tags; repeat for more.
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        #[arg(long)]
        step: Option<String>,
        #[arg(long, conflicts_with = "unarchive")]
        archive: bool,
        #[arg(long)]
        unarchive: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a lesson of this node's city, also from the history on every node.
    Delete { name: String },
    /// Remove a lesson's text (all of it, or the --field given) from every node and its
    /// history; the lesson stays, empty. Needs a coordinator token.
    Redact {
        name: String,
        /// title, body or tags; repeat for more. Default: all three.
        #[arg(long = "field")]
        fields: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RegisterCommand {
    /// List member organisations.
    Organisations {
        #[arg(long)]
        json: bool,
    },
    /// Add a member organisation.
    AddOrganisation {
        #[arg(long)]
        name: String,
        /// municipality, police, region, county_board, civil_society, business or other.
        #[arg(long)]
        sector: String,
    },
    /// List groups.
    Groups {
        #[arg(long)]
        json: bool,
    },
    /// Add a group.
    AddGroup {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A member organisation (organisations/{id}); repeat for more.
        #[arg(long = "organisation")]
        organisations: Vec<String>,
    },
    /// List contact persons.
    Contacts {
        #[arg(long)]
        json: bool,
    },
    /// Add a contact person.
    AddContact {
        #[arg(long)]
        name: String,
        /// organisations/{id}
        #[arg(long)]
        organisation: String,
        #[arg(long, default_value = "")]
        role: String,
        #[arg(long, default_value = "")]
        phone: String,
        #[arg(long, default_value = "")]
        email: String,
    },
    /// Erase a contact person for good (contacts/{id}): record, history and the key of its
    /// earlier versions. Irreversible; needs a coordinator token.
    EraseContact { name: String },
    /// List meetings, newest first.
    Meetings {
        #[arg(long)]
        json: bool,
    },
    /// Record a meeting.
    AddMeeting {
        /// YYYY-MM-DD
        #[arg(long)]
        date: String,
        #[arg(long = "organisation")]
        organisations: Vec<String>,
        #[arg(long, default_value = "")]
        agenda: String,
        #[arg(long, default_value = "")]
        notes: String,
        #[arg(long = "decision")]
        decisions: Vec<String>,
    },
    /// Show the referral routine.
    Routine {
        #[arg(long)]
        json: bool,
    },
    /// Replace the referral routine; each --step is "description|organisations/{id}|how to reach".
    SetRoutine {
        #[arg(long = "step")]
        steps: Vec<String>,
    },
    /// Delete an organisation, group, contact or meeting by name.
    Delete { name: String },
    /// Show the deny list: words the city's shared text must never contain (admin).
    DenyWords {
        #[arg(long)]
        json: bool,
    },
    /// Add a word to the deny list (admin).
    DenyWord { word: String },
    /// Remove a word from the deny list (admin).
    AllowWord { word: String },
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
        #[arg(long)]
        description: String,
    },
    /// List signals (each listed signal is written to the access log).
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one signal (written to the access log).
    Get {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a signal's status: new, referred, in_support or closed.
    SetStatus { name: String, status: String },
    /// Erase a signal for good (signals/{id}): record, history and the key of its earlier
    /// versions. Irreversible.
    Erase { name: String },
    /// The access log of personal data (admin).
    AccessLog {
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
        #[arg(long)]
        json: bool,
    },
    /// The release this node runs, and every release it does not run with the reason.
    Running {
        #[arg(long)]
        json: bool,
    },
    /// What changed since a release, or since a version shown earlier.
    Changes {
        #[arg(long, conflicts_with = "since_version")]
        since_release: Option<String>,
        #[arg(long)]
        since_version: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List releases.
    Releases {
        #[arg(long)]
        json: bool,
    },
    /// Cut a release (hub, coordinator). With --key the release is signed on this machine with
    /// the national coordinator's private key; a hub with a release key accepts only that.
    Release {
        #[arg(long)]
        label: String,
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
    /// Add a chapter (hub, coordinator).
    AddChapter {
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        introduction: String,
        #[arg(long, default_value_t = 0)]
        position: i32,
    },
    /// Add a step to a chapter (hub, coordinator).
    AddStep {
        /// method/chapters/{id}
        #[arg(long)]
        chapter: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value_t = 0)]
        position: i32,
    },
    /// Add a checklist item to a step (hub, coordinator).
    AddItem {
        /// method/steps/{id}
        #[arg(long)]
        step: String,
        #[arg(long)]
        text: String,
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
        #[arg(long, default_value = "")]
        note: String,
    },
    /// A city's progress (this node's city unless --city).
    List {
        #[arg(long)]
        city: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Per method step, which cities are where.
    Adoption {
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
        #[arg(long, default_value = "")]
        quarter: String,
        #[arg(long)]
        json: bool,
    },
    /// Show exactly what publishing a quarter would send (coordinator).
    Preview {
        /// YYYY-Qn
        #[arg(long)]
        quarter: String,
        #[arg(long)]
        json: bool,
    },
    /// Publish the previewed release of a quarter (coordinator).
    Publish {
        #[arg(long)]
        quarter: String,
        #[arg(long)]
        json: bool,
    },
    /// Published releases of this city, one city, or all cities.
    Releases {
        #[arg(long)]
        all_cities: bool,
        #[arg(long, conflicts_with = "all_cities")]
        city: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show or change the national disclosure policy (changes at the hub, coordinator).
    Policy {
        /// suppression or noise.
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        k: Option<i32>,
        /// ε per release, in thousandths.
        #[arg(long)]
        epsilon_milli: Option<i32>,
        /// Yearly ε cap, in thousandths.
        #[arg(long)]
        year_cap_milli: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// National figures for a year.
    National {
        #[arg(long)]
        year: i32,
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
        #[arg(long)]
        quarter: String,
        /// trainings_held, people_trained, outreach_sessions, network_meetings, businesses_enrolled
        #[arg(long)]
        kind: String,
        #[arg(long)]
        count: i64,
    },
}

#[derive(Subcommand, Debug)]
enum CitiesCommand {
    /// List member cities.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a member city (hub, admin).
    Add {
        /// The city's id, as in its certificate.
        #[arg(long)]
        id: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        county: String,
    },
    /// Remove a member city (hub, admin).
    Remove { id: String },
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
        let mut known: Vec<String> = vec![hub_name.clone()];
        known.extend(cities.keys().cloned());
        let name = target.node.clone().ok_or_else(|| {
            usage(format!(
                "--node is required with --federation; one of: hub, {}",
                known.join(", ")
            ))
        })?;
        let node = if name == "hub" || name == hub_name {
            &file["hub"]
        } else {
            cities.get(&name).ok_or_else(|| {
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

/// Runs the command line with `args` (the first being the program name), writing to `out`.
pub async fn run(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
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
        Command::Cities { command } => cities(&mut client, command, out).await?,
        Command::Stats { command } => stats(&mut client, command, out).await?,
        Command::Tokens { command } => tokens(&mut client, command, out).await?,
        Command::Status { json } => status(&mut client, json, out).await?,
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
            tag,
            step,
            query,
            archived,
            json,
        } => {
            let parent = if all_cities {
                "cities/-".to_string()
            } else {
                let city = match city {
                    Some(city) => city,
                    None => client.status().await?.node_id,
                };
                format!("cities/{city}")
            };
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
            } else if lessons.is_empty() {
                writeln!(out, "no lessons")?;
            } else {
                for l in &lessons {
                    let archived = if l.archived { " (archived)" } else { "" };
                    writeln!(out, "{:<14} {:<45} {}{archived}", l.city, l.name, l.title)?;
                }
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
    let r = &mut client.register;
    let err = ClientError::from;
    match command {
        RegisterCommand::Organisations { json } => {
            let list = r
                .list_organisations(all())
                .await
                .map_err(err)?
                .into_inner()
                .organisations;
            emit_lines(out, &list, json, |o| {
                format!("{:<32} {:<15} {}", o.name, o.sector, o.display_name)
            })?;
        }
        RegisterCommand::AddOrganisation { name, sector } => {
            let organisation = pb::Organisation {
                display_name: name,
                sector,
                ..Default::default()
            };
            let created = r
                .create_organisation(pb::CreateOrganisationRequest {
                    organisation: Some(organisation),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Groups { json } => {
            let list = r.list_groups(all()).await.map_err(err)?.into_inner().groups;
            emit(out, &list, json)?;
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
            let created = r
                .create_group(pb::CreateGroupRequest { group: Some(group) })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Contacts { json } => {
            let list = r
                .list_contacts(all())
                .await
                .map_err(err)?
                .into_inner()
                .contacts;
            emit_lines(out, &list, json, |c| {
                format!("{:<27} {:<30} {}", c.name, c.full_name, c.organisation)
            })?;
        }
        RegisterCommand::EraseContact { name } => {
            let done = r
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
            let created = r
                .create_contact(pb::CreateContactRequest {
                    contact: Some(contact),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Meetings { json } => {
            let list = r
                .list_meetings(all())
                .await
                .map_err(err)?
                .into_inner()
                .meetings;
            emit(out, &list, json)?;
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
            let created = r
                .create_meeting(pb::CreateMeetingRequest {
                    meeting: Some(meeting),
                })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
        }
        RegisterCommand::Routine { json } => {
            let routine = r
                .get_routine(pb::GetRoutineRequest {})
                .await
                .map_err(err)?
                .into_inner();
            if json {
                emit(out, &routine, true)?;
            } else {
                for (i, step) in routine.steps.iter().enumerate() {
                    writeln!(
                        out,
                        "{}. {}\n   {} — {}",
                        i + 1,
                        step.description,
                        step.organisation,
                        step.how_to_reach
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
            let saved = r
                .update_routine(pb::UpdateRoutineRequest {
                    routine: Some(routine),
                })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "routine has {} steps", saved.steps.len())?;
        }
        RegisterCommand::DenyWords { json } => {
            let words = r
                .list_deny_words(pb::ListDenyWordsRequest {})
                .await
                .map_err(err)?
                .into_inner();
            emit(out, &words, json)?;
        }
        RegisterCommand::DenyWord { word } => {
            let words = r
                .add_deny_word(pb::DenyWordRequest { word })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "deny list: {}", words.words.join(", "))?;
        }
        RegisterCommand::AllowWord { word } => {
            let words = r
                .remove_deny_word(pb::DenyWordRequest { word })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "deny list: {}", words.words.join(", "))?;
        }
        RegisterCommand::Delete { name } => {
            let request = pb::DeleteRequest { name: name.clone() };
            match name.split('/').next().unwrap_or_default() {
                "organisations" => drop(r.delete_organisation(request).await.map_err(err)?),
                "groups" => drop(r.delete_group(request).await.map_err(err)?),
                "contacts" => drop(r.delete_contact(request).await.map_err(err)?),
                "meetings" => drop(r.delete_meeting(request).await.map_err(err)?),
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

async fn signals(
    client: &mut Client,
    command: SignalsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let s = &mut client.signals;
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
            let created = s
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
            let list = s
                .list_signals(request)
                .await
                .map_err(err)?
                .into_inner()
                .signals;
            emit_lines(out, &list, json, |signal| {
                format!(
                    "{:<24} {} {:<10} {:<15} {}",
                    signal.name,
                    signal.date,
                    signal.status,
                    signal.kind,
                    signal.reporting_organisation
                )
            })?;
        }
        SignalsCommand::Get { name, json } => {
            let signal = s
                .get_signal(pb::GetRequest { name })
                .await
                .map_err(err)?
                .into_inner();
            emit(out, &signal, json)?;
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
            let updated = s.update_signal(request).await.map_err(err)?.into_inner();
            writeln!(out, "{} is {}", updated.name, updated.status)?;
        }
        SignalsCommand::Erase { name } => {
            let done = s
                .erase_signal(pb::EraseRequest { name })
                .await
                .map_err(err)?
                .into_inner();
            writeln!(out, "erased {}", done.name)?;
        }
        SignalsCommand::AccessLog { json } => {
            let entries = s
                .list_access_log(all())
                .await
                .map_err(err)?
                .into_inner()
                .entries;
            emit_lines(out, &entries, json, |e| {
                format!(
                    "{} {:<7} {:<24} {}",
                    e.time_ms, e.action, e.resource, e.actor
                )
            })?;
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
                writeln!(out, "Handbook ({release}; version {})\n", handbook.version)?;
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
            emit_lines(out, &list, json, |p| {
                format!("{:<28} {:<8} {} {}", p.step, p.state, p.date, p.note)
            })?;
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
            emit(out, &records, json)?;
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
                        let note = match c.status.as_str() {
                            "exact" => String::new(),
                            "lower_bound" => "  (at least)".to_string(),
                            other => format!("  ({other}, sd {:.1})", c.sd),
                        };
                        writeln!(
                            out,
                            "  {:<26} {row:<20} {col:<18} {}{note}",
                            c.table, c.value
                        )?;
                    }
                    for a in national
                        .activity
                        .iter()
                        .filter(|a| a.period == year.to_string())
                    {
                        writeln!(out, "  activity {:<20} {}", a.kind, a.value)?;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn cities(
    client: &mut Client,
    command: CitiesCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let d = &mut client.directory;
    let err = ClientError::from;
    match command {
        CitiesCommand::List { json } => {
            let list = d.list_cities(all()).await.map_err(err)?.into_inner().cities;
            if json {
                emit(out, &list, true)?;
            } else {
                for c in &list {
                    let link = if c.connected { "connected" } else { "" };
                    let release = if c.handbook_release.is_empty() {
                        "-"
                    } else {
                        c.handbook_release.as_str()
                    };
                    let running = if c.running_release.is_empty() {
                        "-"
                    } else {
                        c.running_release.as_str()
                    };
                    writeln!(
                        out,
                        "{:<20} {:<16} {:<22} joined {}  handbook {release}  runs {running}  {link}",
                        c.name, c.display_name, c.county, c.joined_date
                    )?;
                }
            }
        }
        CitiesCommand::Add {
            id,
            display_name,
            county,
        } => {
            let city = pb::City {
                name: format!("cities/{id}"),
                display_name,
                county,
                ..Default::default()
            };
            let created = d
                .create_city(pb::CreateCityRequest { city: Some(city) })
                .await
                .map_err(err)?;
            writeln!(out, "{}", created.into_inner().name)?;
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

/// Milliseconds since the Unix epoch as an ISO date and time (UTC); `-` for 0.
fn iso_ms(ms: i64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
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
            writeln!(
                out,
                "{:<8}  {:<11}  {:<7}  {:<17}  {:<17}  {:<17}",
                "ID", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED"
            )?;
            for t in &list {
                writeln!(
                    out,
                    "{:<8}  {:<11}  {:<7}  {:<17}  {:<17}  {:<17}",
                    t.id,
                    t.role,
                    t.state,
                    iso_ms(t.create_time_ms),
                    iso_ms(t.expire_time_ms),
                    iso_ms(t.last_use_time_ms)
                )?;
            }
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

async fn status(client: &mut Client, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let status = client.status().await?;
    if json {
        return emit(out, &status, true);
    }
    writeln!(out, "node {} ({})", status.node_id, status.role)?;
    writeln!(out, "peers:")?;
    for p in &status.peers {
        let error = if p.last_error.is_empty() {
            String::new()
        } else {
            format!("  last error: {}", p.last_error)
        };
        writeln!(
            out,
            "  {:<14} {:<5} {}{}",
            p.peer_id, p.peer_role, p.state, error
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
