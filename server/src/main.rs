//! `sfs-node`: runs a city node or the national hub, and manages its PKI and tokens.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sfs_node::api::tokens::ApiRole;
use sfs_node::federation::pki;
use sfs_node::node::config::NodeConfig;
use sfs_node::node::{self, demo};
use sfs_sync::{NodeId, Role};

#[derive(Parser)]
#[command(
    name = "sfs-node",
    version,
    about = "A stadforstad node: a city node or the national hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node from its configuration file.
    Run {
        /// The node's configuration file (TOML; see deploy/ for templates).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// The node's configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// What a configuration can hold.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the national CA and node certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Create an at-rest key file (for `store.key_file`), readable by its owner only. A node
    /// also creates its key on first start; this is for keys kept on other media.
    AtRestKey {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Back up a running node through its API (admin token) into one file.
    Backup {
        /// The node's API endpoint, for example https://127.0.0.1:7443.
        #[arg(long, env = "SFS_ENDPOINT")]
        endpoint: String,
        /// An admin token.
        #[arg(long, env = "SFS_TOKEN", hide_env_values = true)]
        token: String,
        /// The CA certificate that signed the node.
        #[arg(long, env = "SFS_CA")]
        ca: PathBuf,
        /// Where to write the backup.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty data directory (the node must not be running on it).
    Restore {
        /// The backup file made by `sfs-node backup`.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to fill.
        #[arg(long)]
        data_dir: PathBuf,
        /// The at-rest key file of the node that made the backup (its `store.key_file`);
        /// default: beside the data directory, named after it with `.key`.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// The coordinators' web app (`[web]` in the configuration).
    Web {
        #[command(subcommand)]
        command: WebCommand,
    },
    /// Run a whole local federation (a hub and some cities) on 127.0.0.1.
    Demo {
        /// Where the demo keeps its PKI, data and federation.json.
        #[arg(long)]
        dir: PathBuf,
        /// The cities to run, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "helsingborg,malmo,lund")]
        cities: Vec<String>,
        /// A county hub between some of the cities and the national hub, as
        /// COUNTY=CITY,CITY (`skane=helsingborg,malmo,lund`); repeat for more county hubs.
        #[arg(long = "county")]
        counties: Vec<demo::DemoCounty>,
        /// Also run a standby national hub (`standby`), linked to the national hub; every
        /// county hub and city fails over to it when its upstream is unreachable.
        #[arg(long)]
        standby: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// List every environment variable that overrides a configuration field, with the field.
    Env {
        /// Print the Markdown table of deploy/README.md.
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Make the national CA in DIR.
    Init {
        /// The CA directory to create (keep it offline after issuing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate and key for a node, signed by the CA in DIR.
    Issue {
        /// The CA directory (`pki init --dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The node's name, for example `malmo`.
        #[arg(long)]
        node: String,
        /// `city`, `county` (a county hub) or `hub` (the national hub or a standby national hub, each with its own name).
        #[arg(long)]
        role: String,
        /// Further DNS names or IP addresses the node is reached at.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Make the national coordinator's release signing key (Ed25519): the private key at OUT
    /// (PKCS#8 PEM, mode 0600; keep it on the coordinator's machine, never on the hub) and the
    /// public key beside it with the extension `.pub`, for `method.release_public_key` on every
    /// node.
    ReleaseKey {
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the public key (default: OUT with the extension `.pub`).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// List every certificate in DIR (the CA and the last one issued for each node) with its
    /// expiry and whether it is revoked, soonest first; flags those within 30 days of expiry.
    Status {
        /// The CA directory (`pki init --dir`).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revoke the certificate last issued for a node: adds its serial to `revoked.txt` in DIR.
    /// The hub (`tls.revoked`) refuses it for new connections at once and closes its open link
    /// within about a second; a certificate issued afterwards works.
    Revoke {
        /// The CA directory (`pki init --dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The node's name, for example `malmo`.
        #[arg(long)]
        node: String,
        /// `city`, `county` or `hub`.
        #[arg(long, default_value = "city")]
        role: String,
    },
}

#[derive(Subcommand)]
enum WebCommand {
    /// Create a token for a person and print a one-time link that signs them in to the node's
    /// web app. The link works once, within --valid-for; the token behind it stays (see
    /// `token list --label`, `token revoke`). Works while the node runs: run it as the user
    /// the node runs as, so the node can read the token and the code.
    SignInLink {
        /// The node's configuration file (its `data_dir` and `[web] listen`).
        #[arg(long)]
        config: PathBuf,
        /// reader, editor, coordinator or admin.
        #[arg(long)]
        role: String,
        /// Whom the token is for, to find it again with `token list --label`.
        #[arg(long, default_value = "")]
        label: String,
        /// Refuse the token after this long (for example `90d`); without it the token works
        /// until revoked.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// How long the link works if unused.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        valid_for: std::time::Duration,
        /// The web app's address as people reach it (for example https://stadforstad.malmo.se);
        /// default: from `[web] listen`.
        #[arg(long)]
        base_url: Option<String>,
    },
}

/// The web app's base URL from `[web]`: HTTPS with a certificate, else plain HTTP (loopback).
fn web_base_url(config: &NodeConfig) -> anyhow::Result<String> {
    let listen = config
        .web
        .listen
        .context("the configuration has no [web] listen: the node serves no web app")?;
    anyhow::ensure!(
        !listen.ip().is_unspecified() && listen.port() != 0,
        "[web] listen is {listen}, which is no address a browser can open: give --base-url"
    );
    let scheme = if config.web.cert.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{listen}"))
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is stored only as a hash).
    ///
    /// Run it as the user the node runs as (for example `sudo -u stadforstad sfs-node token
    /// create ...` under systemd), so the node can read the token file.
    Create {
        /// The node's data directory (`data_dir` of its configuration).
        #[arg(long)]
        data_dir: PathBuf,
        /// reader, editor, coordinator or admin.
        #[arg(long)]
        role: String,
        /// What the token is for. Stored only as a salted hash (a label may name a person);
        /// `token list --label` finds it again.
        #[arg(long, default_value = "")]
        label: String,
        /// Refuse the token after this long: a number and a unit, `s`, `m`, `h`, `d` or `w`
        /// (for example `90d`). Without it the token works until revoked.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List the tokens (ids, roles, state, times; never a secret). Works while the node runs;
    /// the last use is as the node last wrote it (at most a minute old).
    List {
        /// The node's data directory (`data_dir` of its configuration).
        #[arg(long)]
        data_dir: PathBuf,
        /// Only tokens created with this label.
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a token by its id (from `token list`). A running node refuses it from its next
    /// request on.
    Revoke {
        /// The node's data directory (`data_dir` of its configuration).
        #[arg(long)]
        data_dir: PathBuf,
        /// The token's id: the first 8 hex digits of its hash, as `token list` shows it.
        id: String,
    },
}

/// Parses `90d`, `12h`, `30m`, `45s` or `2w`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write for example 90d (s, m, h, d or w)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number, as in 90d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h, d or w"
            ))
        }
    };
    if number == 0 {
        return Err("the expiry must be longer than zero".to_string());
    }
    number
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A Unix time as an ISO date and time (UTC), or `-`.
fn show_time(secs: Option<u64>) -> String {
    secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s as i64).ok())
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".to_string())
}

/// Logs to standard error as text or JSON; `RUST_LOG` overrides the configured level. Text is
/// coloured only on a terminal (never in a file or a journal) and never with `NO_COLOR` set.
fn init_logging(format: &str, level: &str) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    node::memory::return_large_blocks_to_the_system();
    let cli = Cli::parse();
    if let Err(err) = run(cli).await {
        // Each cause once: many errors already repeat their source in their own message.
        eprintln!("error: {}", sfs_client::error_chain(err.as_ref()));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = NodeConfig::load(&config)?;
            init_logging(&config.log.format, &config.log.level);
            let signal = node::shutdown_signal();
            let node = node::start(config, node::StartOptions::default()).await?;
            if let Some(metrics) = node.metrics_addr {
                println!("{} metrics: http://{metrics}/metrics", node.id);
            }
            match node.federation_addr {
                Some(federation) => println!(
                    "{} ready: api https://{} federation https://{federation}",
                    node.id, node.api_addr
                ),
                None => println!("{} ready: api https://{}", node.id, node.api_addr),
            }
            node.run_until_signal(signal).await;
        }
        Command::CheckConfig { config } => {
            let config = NodeConfig::load(&config)?;
            let checked = node::preflight(&config)?;
            println!("{}: configuration is valid", checked.id);
        }
        Command::Config {
            command: ConfigCommand::Env { markdown },
        } => {
            if markdown {
                print!("{}", sfs_node::node::config::env_overrides_markdown());
            } else {
                for (var, field) in sfs_node::node::config::env_overrides() {
                    println!("{var:<45} {field}");
                }
            }
        }
        Command::Pki {
            command: PkiCommand::Init { dir },
        } => {
            let files = pki::init_ca(&dir)?;
            println!("CA certificate: {}", files.cert.display());
            println!("CA key (keep it offline): {}", files.key.display());
        }
        Command::Pki {
            command:
                PkiCommand::Issue {
                    dir,
                    node,
                    role,
                    names,
                    days,
                },
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role must be city, county or hub, not {role:?}"))?;
            let id = NodeId::new(role, &node)?;
            let files = pki::issue(&dir, &id, &names, days)?;
            println!(
                "{}: certificate {} key {}",
                id.spiffe_uri(),
                files.cert.display(),
                files.key.display()
            );
        }
        Command::Pki {
            command: PkiCommand::ReleaseKey { out, public },
        } => {
            let public = public.unwrap_or_else(|| out.with_extension("pub"));
            let key = sfs_client::release::generate_key_files(&out, &public)?;
            println!("release key {}:", key.key_id());
            println!(
                "  private key (coordinator's machine only): {}",
                out.display()
            );
            println!(
                "  public key (method.release_public_key on every node): {}",
                public.display()
            );
        }
        Command::Pki {
            command: PkiCommand::Status { dir },
        } => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            println!(
                "{:<40}  {:<17}  {:<10}  {:<7}  SERIAL",
                "CERTIFICATE", "EXPIRES", "DAYS LEFT", "STATE"
            );
            for cert in pki::status(&dir)? {
                let days = pki::days_left(cert.not_after_unix, now);
                let state = if cert.revoked {
                    "revoked"
                } else if days < 0 {
                    "EXPIRED"
                } else if days < pki::EXPIRY_WARNING_DAYS {
                    "RENEW"
                } else {
                    "ok"
                };
                println!(
                    "{:<40}  {:<17}  {:<10}  {:<7}  {}",
                    cert.identity,
                    show_time(u64::try_from(cert.not_after_unix).ok()),
                    days,
                    state,
                    cert.serial
                );
            }
        }
        Command::Pki {
            command: PkiCommand::Revoke { dir, node, role },
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role must be city, county or hub, not {role:?}"))?;
            let id = NodeId::new(role, &node)?;
            let serial = pki::revoke(&dir, &id)?;
            println!(
                "{}: certificate {serial} revoked in {}; copy it to the hub's tls.revoked",
                id.spiffe_uri(),
                pki::CaFiles::in_dir(&dir).revoked.display()
            );
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    data_dir,
                    role,
                    label,
                    expires_in,
                },
        } => {
            let role = ApiRole::parse(&role).with_context(|| {
                format!("--role must be reader, editor, coordinator or admin, not {role:?}")
            })?;
            sfs_node::api::tokens::check_data_dir(&data_dir)?;
            println!(
                "{}",
                sfs_node::api::tokens::create_token_expiring(&data_dir, role, &label, expires_in)?
            );
        }
        Command::Web {
            command:
                WebCommand::SignInLink {
                    config,
                    role,
                    label,
                    expires_in,
                    valid_for,
                    base_url,
                },
        } => {
            let config = NodeConfig::load(&config)?;
            let role = ApiRole::parse(&role).with_context(|| {
                format!("--role must be reader, editor, coordinator or admin, not {role:?}")
            })?;
            let base_url = match base_url {
                Some(url) => url.trim_end_matches('/').to_string(),
                None => web_base_url(&config)?,
            };
            sfs_node::api::tokens::check_data_dir(&config.data_dir)?;
            let token = sfs_node::api::tokens::create_token_expiring(
                &config.data_dir,
                role,
                &label,
                expires_in,
            )?;
            let code = sfs_web::session::write_code_file(
                &config.data_dir.join(sfs_web::session::CODE_DIR),
                &token,
                valid_for,
            )
            .context("writing the sign-in code into the data directory")?;
            println!("{base_url}/login?code={code}");
        }
        Command::Token {
            command: TokenCommand::List { data_dir, label },
        } => {
            sfs_node::api::tokens::check_data_dir(&data_dir)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let tokens = sfs_node::api::tokens::list_tokens(&data_dir, label.as_deref())?;
            println!(
                "{:<8}  {:<11}  {:<7}  {:<17}  {:<17}  {:<17}",
                "ID", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED"
            );
            for t in &tokens {
                println!(
                    "{:<8}  {:<11}  {:<7}  {:<17}  {:<17}  {:<17}",
                    t.id,
                    t.role.as_str(),
                    t.state(now),
                    show_time(Some(t.created_unix)),
                    show_time(t.expires_unix),
                    show_time(t.last_used_unix)
                );
            }
        }
        Command::Token {
            command: TokenCommand::Revoke { data_dir, id },
        } => {
            sfs_node::api::tokens::check_data_dir(&data_dir)?;
            let info = sfs_node::api::tokens::revoke_token(&data_dir, &id)?;
            println!(
                "token {} ({}) revoked; a running node refuses it from its next request on",
                info.id,
                info.role.as_str()
            );
        }
        Command::Backup {
            endpoint,
            token,
            ca,
            out,
        } => {
            let ca = std::fs::read_to_string(&ca)
                .with_context(|| format!("reading {}", ca.display()))?;
            let mut client = sfs_client::Client::connect(&endpoint, &token, &ca).await?;
            let mut stream = client
                .node
                .backup(sfs_client::v1::BackupRequest {})
                .await
                .map_err(sfs_client::ClientError::from)?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(sfs_client::ClientError::from)?
            {
                bytes.extend_from_slice(&chunk.data);
            }
            let archive: sfs_client::v1::BackupArchive =
                prost::Message::decode(bytes.as_slice())
                    .context("the node sent a damaged backup")?;
            sfs_durable::write(&out, &bytes, sfs_durable::Access::Private)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "backed up {} ({}): {} documents, {} access-log entries, {} bytes to {}",
                archive.node_id,
                archive.role,
                archive.documents.len(),
                archive.access_log.len(),
                bytes.len(),
                out.display()
            );
        }
        Command::AtRestKey { out } => {
            sfs_node::storage::seal::MasterKey::create(&out)?;
            println!("created the at-rest key {}", out.display());
        }
        Command::Restore {
            from,
            data_dir,
            key_file,
        } => {
            let bytes =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let archive: sfs_client::v1::BackupArchive =
                prost::Message::decode(bytes.as_slice())
                    .context("not a backup made by sfs-node backup")?;
            let key_file = sfs_node::node::config::default_key_file(&data_dir, key_file.as_deref());
            if archive.sealed && !key_file.exists() {
                anyhow::bail!(
                    "the backup is sealed with the at-rest key of {}; give that key file with \
                     --key-file (looked for {})",
                    archive.node_id,
                    key_file.display()
                );
            }
            std::fs::create_dir_all(&data_dir)?;
            let (key, _) = sfs_node::storage::seal::MasterKey::for_data_dir(&key_file, &data_dir)?;
            let count = sfs_node::node::restore(&data_dir, &archive, key)?;
            println!(
                "restored {} ({}): {count} documents into {}",
                archive.node_id,
                archive.role,
                data_dir.display()
            );
        }
        Command::Demo {
            dir,
            cities,
            counties,
            standby,
        } => {
            init_logging("text", "info");
            demo::run(&dir, &cities, &counties, standby).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn missing_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                missing.push(format!("{path} --{id}"));
            }
        }
        for sub in command.get_subcommands() {
            missing_help(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_option_has_a_description() {
        let mut missing = Vec::new();
        missing_help(&Cli::command(), "sfs-node", &mut missing);
        assert!(
            missing.is_empty(),
            "options without --help text: {missing:#?}"
        );
    }
}
