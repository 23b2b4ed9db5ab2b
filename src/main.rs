//! The `scimsync` binary: parse the command line and hand over to the library.

use clap::Parser;

/// Rows and JSON are built on the store's threads and freed on the runtime's: mimalloc
/// frees them without glibc's arena locks (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
