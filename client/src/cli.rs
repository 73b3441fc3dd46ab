//! The `sfs` command line: talks to one node's API, chosen from a `federation.json` or given
//! by endpoint, token and CA. Output is a readable table, or JSON with `--json`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

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
    /// The node's peers, links and per-document sync state.
    Status {
        #[arg(long)]
        json: bool,
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
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RegisterCommand {
    /// Add a member organisation.
    AddOrganisation {
        #[arg(long)]
        name: String,
        /// municipality, police, region, county_board, civil_society, business or other.
        #[arg(long)]
        sector: String,
    },
    /// List member organisations.
    Organisations {
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
    /// List contact persons.
    Contacts {
        #[arg(long)]
        json: bool,
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

fn lesson_json(l: &pb::Lesson) -> Value {
    json!({
        "name": l.name, "city": l.city, "title": l.title, "body": l.body, "tags": l.tags,
        "create_time_ms": l.create_time_ms, "update_time_ms": l.update_time_ms,
    })
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
        Command::Lessons { command } => match command {
            LessonsCommand::Add {
                title,
                body,
                tags,
                json,
            } => {
                let lesson = client.create_lesson(&title, &body, tags).await?;
                if json {
                    writeln!(out, "{}", lesson_json(&lesson))?;
                } else {
                    writeln!(out, "{}", lesson.name)?;
                }
            }
            LessonsCommand::List {
                all_cities,
                city,
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
                let lessons = client.list_lessons(&parent).await?;
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
                        writeln!(out, "{:<14} {:<45} {}", l.city, l.name, l.title)?;
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
                json,
            } => {
                let mut mask = Vec::new();
                if title.is_some() {
                    mask.push("title".to_string());
                }
                if body.is_some() {
                    mask.push("body".to_string());
                }
                if tags.is_some() {
                    mask.push("tags".to_string());
                }
                if mask.is_empty() {
                    return Err(CliError::Usage(
                        "nothing to update: give --title, --body or --tag".into(),
                    ));
                }
                let lesson = pb::Lesson {
                    name,
                    title: title.unwrap_or_default(),
                    body: body.unwrap_or_default(),
                    tags: tags.unwrap_or_default(),
                    ..Default::default()
                };
                let lesson = client.update_lesson(lesson, mask).await?;
                print_lesson(out, &lesson, json)?;
            }
        },
        Command::Register { command } => match command {
            RegisterCommand::AddOrganisation { name, sector } => {
                writeln!(
                    out,
                    "{}",
                    client.create_organisation(&name, &sector).await?.name
                )?;
            }
            RegisterCommand::Organisations { json } => {
                let orgs = client.list_organisations().await?;
                for o in &orgs {
                    if json {
                        writeln!(
                            out,
                            "{}",
                            json!({"name": o.name, "display_name": o.display_name, "sector": o.sector})
                        )?;
                    } else {
                        writeln!(out, "{:<32} {:<15} {}", o.name, o.sector, o.display_name)?;
                    }
                }
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
                writeln!(out, "{}", client.create_contact(contact).await?.name)?;
            }
            RegisterCommand::Contacts { json } => {
                for c in client.list_contacts().await? {
                    if json {
                        writeln!(
                            out,
                            "{}",
                            json!({"name": c.name, "full_name": c.full_name, "role": c.role, "organisation": c.organisation, "phone": c.phone, "email": c.email})
                        )?;
                    } else {
                        writeln!(out, "{:<27} {:<30} {}", c.name, c.full_name, c.organisation)?;
                    }
                }
            }
        },
        Command::Status { json } => {
            let status = client.status().await?;
            if json {
                let value = json!({
                    "node_id": status.node_id,
                    "role": status.role,
                    "peers": status.peers.iter().map(|p| json!({
                        "peer_id": p.peer_id, "peer_role": p.peer_role, "state": p.state,
                        "last_error": p.last_error, "since_ms": p.since_ms,
                    })).collect::<Vec<_>>(),
                    "documents": status.documents.iter().map(|d| json!({
                        "doc_id": d.doc_id, "heads": d.heads,
                        "peers": d.peers.iter().map(|p| json!({"peer_id": p.peer_id, "state": p.state})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                });
                writeln!(out, "{value}")?;
            } else {
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
            }
        }
    }
    Ok(())
}
