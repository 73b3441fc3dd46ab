//! `sfs`: the command line for stadforstad nodes. See `sfs --help`.

#[tokio::main]
async fn main() {
    let mut stdout = std::io::stdout();
    if let Err(err) = sfs_client::cli::run(std::env::args(), &mut stdout).await {
        let text = err.to_string();
        // One clear line; clap's usage errors carry their own hint lines, keep only the first.
        eprintln!(
            "error: {}",
            text.lines()
                .next()
                .unwrap_or("failed")
                .trim_start_matches("error: ")
        );
        std::process::exit(1);
    }
}
