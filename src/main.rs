//! The `scimsync` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = scimsync::cli::Cli::parse();
    match scimsync::cli::dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("scimsync: {e:#}");
            std::process::exit(1);
        }
    }
}
