//! `sfs-bench`: the benchmark harness of stadforstad.
//!
//! Runs the real node (as processes, and as in-process cities using the node's own store, sync
//! and link code) with real TLS on loopback, measures each scenario of BENCHMARKS.md, measures
//! raw Automerge on the same workload in the same run, and prints one JSON line per figure and
//! then a table with every figure as a ratio to raw Automerge.
//!
//! ```text
//! cargo run --release -p sfs-bench            # the full run (several minutes)
//! cargo run --release -p sfs-bench -- --quick # small numbers: proves the harness works
//! ```

mod cluster;
mod privacy;
mod raw;
mod scenarios;
mod storage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sfs-bench",
    about = "Measures stadforstad against raw Automerge"
)]
struct Cli {
    /// Small numbers, to prove the harness works (not to time it).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated): writes, propagation, bulk, fanout,
    /// reconnect, idle, footprint, privacy, storage, costs; and counties (21 county hub
    /// processes), which runs only when named.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the JSON lines to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Subcommand)]
enum Internal {
    /// Runs one node until SIGTERM (the harness starts its nodes this way).
    #[command(hide = true)]
    ServeNode {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // The nodes it starts (and the in-process cities) allocate as `sfs-node` does;
    // SFS_MALLOC_DEFAULT=1 keeps glibc's default settings instead, to compare.
    if std::env::var_os("SFS_MALLOC_DEFAULT").is_none() {
        sfs_node::node::memory::return_large_blocks_to_the_system();
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Internal::ServeNode { config }) => runtime.block_on(cluster::serve_node(&config)),
        None => {
            let sizes = if cli.quick {
                scenarios::Sizes::quick()
            } else {
                scenarios::Sizes::full()
            };
            let figures = runtime.block_on(scenarios::run(&sizes, &cli.only))?;
            if let Some(path) = cli.json_out {
                let lines: Vec<String> = figures
                    .iter()
                    .map(|f| serde_json::to_string(f).expect("figures serialise"))
                    .collect();
                std::fs::write(path, lines.join("\n") + "\n")?;
            }
            println!();
            println!("{}", scenarios::table(&figures, &sizes));
            Ok(())
        }
    }
}
