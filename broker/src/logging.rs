//! Where the broker's log goes, as VerneMQ's `log.*` keys say: the console (stderr), a file
//! (`log.console = file | both`, `log.console.file`) rotated by size (`log.console.rotation.size`,
//! `.keep`), errors also to their own file (`log.error`, `log.error.file`, its rotation keys),
//! and the local syslog (`log.syslog = on`, `log.syslog.facility`). A file that cannot be opened
//! is an error at start.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConsoleTarget, LogConfig, LogFile};

/// A log file that is rotated once it reaches its size: `f` becomes `f.0`, `f.0` becomes
/// `f.1`, ... and only `keep` rotated files are kept.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max: Option<u64>,
    keep: usize,
}

impl RotatingFile {
    /// Opens (appending to) `path`, creating its directory.
    pub fn open(path: &Path, max: Option<u64>, keep: usize) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            written,
            max,
            keep,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep - 1));
            for n in (0..self.keep - 1).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(0))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .max
            .is_some_and(|max| self.written > 0 && self.written + buf.len() as u64 > max)
        {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Sends each log line as one datagram to the local syslog socket (RFC 3164).
struct Syslog {
    socket: std::os::unix::net::UnixDatagram,
    facility: u8,
}

/// One line on its way to syslog: sent when the event is written out (dropped).
struct SyslogLine<'a> {
    syslog: &'a Syslog,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf);
        let pri = self.syslog.facility * 8 + self.severity;
        let msg = format!(
            "<{pri}>vmq-broker[{}]: {}",
            std::process::id(),
            line.trim_end()
        );
        let _ = self.syslog.socket.send(msg.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            syslog: self,
            severity: 6,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let severity = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        SyslogLine {
            syslog: self,
            severity,
            buf: Vec::new(),
        }
    }
}

fn open(f: &LogFile) -> Result<Mutex<RotatingFile>, String> {
    RotatingFile::open(&f.path, f.rotation_size, f.rotation_keep)
        .map(Mutex::new)
        .map_err(|e| format!("cannot open log file {}: {e}", f.path.display()))
}

/// Installs the global subscriber `config` describes (`RUST_LOG`, when set, overrides the
/// level). Fails when a log file or the syslog socket cannot be opened.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let level = match config.level.as_str() {
        "warning" => "warn",
        other => other,
    };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let mut layers: Vec<Box<dyn Layer<_> + Send + Sync>> = Vec::new();
    if matches!(config.console, ConsoleTarget::Console | ConsoleTarget::Both) {
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed(),
        );
    }
    if matches!(config.console, ConsoleTarget::File | ConsoleTarget::Both) {
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(open(&config.console_file)?)
                .with_filter(filter())
                .boxed(),
        );
    }
    if let Some(errors) = config.error_file() {
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(open(errors)?)
                .with_filter(LevelFilter::ERROR)
                .boxed(),
        );
    }
    if config.syslog {
        let facility = config.facility;
        let socket = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .map_err(|e| format!("log.syslog = on, but /dev/log cannot be used: {e}"))?;
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(Syslog { socket, facility })
                .with_filter(filter())
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_keep_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/console.log");
        let mut f = RotatingFile::open(&path, Some(100), 2).unwrap();
        for i in 0..20 {
            writeln!(f, "line {i:02} of forty characters, roughly....").unwrap();
        }
        f.flush().unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) > 0 && size(&path) <= 100);
        let r0 = dir.path().join("log/console.log.0");
        let r1 = dir.path().join("log/console.log.1");
        assert!(size(&r0) > 0 && size(&r0) <= 100);
        assert!(size(&r1) > 0);
        assert!(!dir.path().join("log/console.log.2").exists(), "keep = 2");
        // The newest lines are in the file, the ones before in .0.
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.contains("line 19"), "{now}");
        assert!(std::fs::read_to_string(&r0).unwrap().contains("line 17"));
    }
}
