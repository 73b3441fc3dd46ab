//! `sfs`: the command line for stadforstad nodes. See `sfs --help`.

#[tokio::main]
async fn main() {
    let mut stdout = std::io::stdout();
    if let Err(err) = sfs_client::cli::run(std::env::args(), &mut stdout).await {
        // A reader that stops early (`sfs … | head`) is not an error.
        if err.is_broken_pipe() {
            std::process::exit(0);
        }
        eprintln!("error: {}", err.one_line());
        std::process::exit(1);
    }
}
