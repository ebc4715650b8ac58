//! `vmq-passwd`: creates and edits password files for the `vmq_passwd` plugin, as VerneMQ's tool
//! of the same name (same file format, same flags):
//!
//! ```text
//! vmq-passwd [-c | -D] <passwordfile> <username>    add or update a user (-c: new file), or delete one
//! vmq-passwd -U <passwordfile>                      hash a file of user:password lines in place
//! ```
//!
//! The password is asked twice on a terminal (not echoed), or read as one line from standard
//! input otherwise (`echo "$PW" | vmq-passwd ...`). The file is replaced atomically and the
//! broker picks the change up at its next reload check.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use vmq_broker::plugins::passwd;

#[derive(Parser, Debug)]
#[command(version, about = "Manage password files for the vmq_passwd plugin")]
struct Args {
    /// Create a new file (replacing an existing one).
    #[arg(short = 'c', conflicts_with_all = ["delete", "upgrade"])]
    create: bool,
    /// Delete the user.
    #[arg(short = 'D', conflicts_with = "upgrade")]
    delete: bool,
    /// Hash a file of plain `user:password` lines in place.
    #[arg(short = 'U')]
    upgrade: bool,
    /// The password file.
    file: PathBuf,
    /// The user (not with -U).
    username: Option<String>,
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Reenter password: ")?;
        if first != again {
            bail!("passwords do not match");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn lines_of(file: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(t.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} does not exist (use -c to create it)", file.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

fn write(file: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))
}

fn user_of(line: &str) -> Option<&str> {
    line.split_once(':').map(|(u, _)| u)
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.upgrade {
        if args.username.is_some() {
            bail!("-U takes only the password file");
        }
        let mut out = Vec::new();
        for line in lines_of(&args.file)? {
            match line.split_once(':') {
                Some((user, pw)) if !line.starts_with('#') && !pw.starts_with("$6$") => {
                    out.push(passwd::entry(user, pw))
                }
                _ => out.push(line),
            }
        }
        return write(&args.file, &out);
    }
    let user = args
        .username
        .as_deref()
        .context("a username is needed: vmq-passwd [-c | -D] <passwordfile> <username>")?;
    if user.is_empty() || user.contains(':') {
        bail!("usernames must not be empty or contain ':'");
    }
    let mut lines = if args.create {
        Vec::new()
    } else {
        lines_of(&args.file)?
    };
    let before = lines.len();
    lines.retain(|l| user_of(l) != Some(user));
    if args.delete {
        if lines.len() == before {
            bail!("user {user} not found in {}", args.file.display());
        }
    } else {
        let password = read_password()?;
        if password.is_empty() {
            bail!("empty password");
        }
        lines.push(passwd::entry(user, &password));
    }
    write(&args.file, &lines)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmq-passwd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
