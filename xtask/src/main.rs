//! `xtask docs DIR`: write scimsync's man pages and shell completions, generated from the
//! CLI's clap definitions (`scimsync::cli::Cli`), so they say what `--help` says.
//!
//! Owns: rendering roff (clap_mangen) and completion scripts (clap_complete) into files. Must
//! not touch: the CLI itself (`src/cli.rs` defines it; this only reads `Cli::command()`).
//!
//! Layout written under DIR, as scripts/package.sh installs it:
//! `man/scimsync.1` and one page per subcommand (`man/scimsync-outbox-list.1`, as git does),
//! `completions/scimsync.bash`, `completions/_scimsync` (zsh), `completions/scimsync.fish`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir] if cmd == "docs" => write_docs(Path::new(dir)),
        _ => {
            eprintln!("usage: xtask docs DIR   (man pages in DIR/man, completions in DIR/completions)");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

/// The CLI as clap sees it, with the binary's name fixed (the man page and the completions
/// name the command `scimsync`, whatever the generator is called).
fn command() -> clap::Command {
    let mut cmd = scimsync::cli::Cli::command().bin_name("scimsync");
    cmd.build();
    cmd
}

/// Every man page: `scimsync.1` for the command, `scimsync-SUB[-SUB].1` for each subcommand.
fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    collect_pages(&command(), "scimsync", &mut pages)?;
    Ok(pages)
}

fn collect_pages(cmd: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    // clap_mangen titles a page by the command's name: give subcommands their full name so
    // the page for `outbox list` is scimsync-outbox-list(1), as `man` is asked for it.
    // (clap's names are `&'static str` without its "string" feature; a few leaked names in a
    // short-lived generator are fine.)
    // Subcommands carry no version of their own: the footer names the program's.
    let version = command().get_version().unwrap_or_default().to_string();
    let titled = cmd.clone().name(&*name.to_string().leak()).version(&*version.leak());
    let mut buf = Vec::new();
    clap_mangen::Man::new(titled).render(&mut buf)?;
    pages.push((format!("{name}.1"), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        collect_pages(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

/// The completion script for one shell, and the file name each shell looks for.
fn completion(shell: Shell) -> (&'static str, Vec<u8>) {
    let file = match shell {
        Shell::Bash => "scimsync.bash",
        Shell::Zsh => "_scimsync",
        Shell::Fish => "scimsync.fish",
        _ => unreachable!("only bash, zsh and fish are shipped"),
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command(), "scimsync", &mut buf);
    (file, buf)
}

const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

fn write_docs(dir: &Path) -> std::io::Result<()> {
    let write = |sub: &str, file: &str, body: &[u8]| -> std::io::Result<PathBuf> {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        let path = d.join(file);
        std::fs::write(&path, body)?;
        Ok(path)
    };
    for (file, body) in man_pages()? {
        write("man", &file, &body)?;
    }
    for shell in SHELLS {
        let (file, body) = completion(shell);
        write("completions", file, &body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand as its path of names, e.g. ["outbox", "list"] (help excluded).
    fn subcommand_paths() -> Vec<Vec<String>> {
        fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
                let mut path = prefix.to_vec();
                path.push(sub.get_name().to_string());
                out.push(path.clone());
                walk(sub, &path, out);
            }
        }
        let mut out = Vec::new();
        walk(&command(), &[], &mut out);
        out
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn the_cli_has_the_subcommands_the_readme_documents() {
        // A guard against a vacuous walk: if clap stopped reporting subcommands, the checks
        // below would pass on nothing.
        let paths = subcommand_paths();
        for want in [&["serve"][..], &["outbox", "list"], &["sync", "now"], &["token", "revoke"], &["backup"]] {
            assert!(paths.iter().any(|p| p == want), "{want:?} missing from {paths:?}");
        }
    }

    /// Each subcommand has its own page, listed in its parent's SUBCOMMANDS section
    /// (`scimsync-outbox(1)` names `list`, and `scimsync-outbox-list.1` exists with that title).
    #[test]
    fn every_subcommand_appears_in_the_man_pages() {
        let pages = man_pages().unwrap();
        let page = |name: &str| {
            pages.iter().find(|(f, _)| f == &format!("{name}.1")).map(|(_, b)| text(b)).unwrap_or_else(|| {
                panic!("no man page {name}.1 among {:?}", pages.iter().map(|p| &p.0).collect::<Vec<_>>())
            })
        };
        // The daemon's version (from its Cargo.toml, through clap), not this crate's.
        let version = command().get_version().unwrap().to_string();
        let main = page("scimsync");
        assert!(main.contains(&format!(".TH scimsync 1  \"scimsync {}\"", version)), "{main}");
        for path in subcommand_paths() {
            let parent = std::iter::once("scimsync".to_string()).chain(path[..path.len() - 1].iter().cloned());
            let parent = parent.collect::<Vec<_>>().join("-");
            let name = path.last().unwrap();
            // clap_mangen lists a subcommand as a `parent-sub(1)` reference under SUBCOMMANDS
            // (roff escapes the hyphens of the text, not of the title)
            let reference = format!("{parent}-{name}(1)").replace('-', "\\-");
            assert!(page(&parent).contains(&format!("\n{reference}\n")), "{reference} not in {parent}.1");
            let own = format!("scimsync-{}", path.join("-"));
            let title = format!(".TH {own} 1  \"{own} {version}\"");
            assert!(page(&own).contains(&title), "{own}.1 has no title {title:?}");
        }
    }

    #[test]
    fn every_subcommand_appears_in_every_completion() {
        let paths = subcommand_paths();
        for shell in SHELLS {
            let (_, body) = completion(shell);
            let script = text(&body);
            for path in &paths {
                let name = path.last().unwrap();
                // What each generator writes for a subcommand the shell may offer.
                let needle = match shell {
                    // `case "${cmd},${i}"` arms: `scimsync__subcmd__outbox,list)`
                    Shell::Bash => {
                        let parent: String = path[..path.len() - 1]
                            .iter()
                            .map(|p| format!("__subcmd__{}", p.replace('-', "__")))
                            .collect();
                        format!("scimsync{parent},{name})")
                    }
                    // zsh: `'list:Undelivered changes ...'` in the parent's command list
                    Shell::Zsh => format!("'{name}:"),
                    // fish: `-a "list" -d '...'` under the parent's condition
                    Shell::Fish => format!("-a \"{name}\""),
                    _ => unreachable!(),
                };
                assert!(script.contains(&needle), "{shell:?} completion lacks {needle:?} for {path:?}");
            }
        }
    }

    #[test]
    fn docs_are_written_where_the_package_takes_them() {
        let dir = tempfile_dir();
        write_docs(&dir).unwrap();
        for f in [
            "man/scimsync.1",
            "man/scimsync-outbox-list.1",
            "completions/scimsync.bash",
            "completions/_scimsync",
            "completions/scimsync.fish",
        ] {
            let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(meta.len() > 100, "{f} is nearly empty");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("scimsync-xtask-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
