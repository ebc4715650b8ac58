//! Real database servers for tests: PostgreSQL, MariaDB, Redis and memcached, each started as
//! an unprivileged process in a temporary directory on a free loopback port, stopped (and the
//! directory removed) when dropped. `scripts/test` installs the Debian packages.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password of the databases' `vmq` user.
pub const PASSWORD: &str = "vmq-secret";

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The (uid, gid) of system user `name` when the tests run as root (a database refuses to
/// run as root, or should not); `None` otherwise.
fn unprivileged(name: &str) -> Option<(u32, u32)> {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for candidate in [name, "nobody"] {
        if let Some(line) = passwd
            .lines()
            .find(|l| l.split(':').next() == Some(candidate))
        {
            let f: Vec<&str> = line.split(':').collect();
            return Some((f[2].parse().unwrap(), f[3].parse().unwrap()));
        }
    }
    panic!("no user {name} or nobody to run a database as");
}

fn find(program: &str, dirs: &[&str]) -> PathBuf {
    for dir in dirs {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let p = Path::new(dir).join(program);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "{program} not found (scripts/test installs postgresql, mariadb-server, redis-server, memcached)"
    );
}

/// PostgreSQL's binaries: the newest /usr/lib/postgresql/<version>/bin.
fn pg_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    let dirs: Vec<String> = versions
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    find(program, &dirs)
}

/// A server process and its directory.
pub struct Server {
    name: &'static str,
    child: Option<Child>,
    dir: tempfile::TempDir,
    user: Option<(u32, u32)>,
    start: Box<dyn Fn(&Path) -> Command + Send + Sync>,
    ready: Box<dyn Fn(&Server) -> bool + Send + Sync>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    fn new(name: &'static str, user: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vmq-{name}-"))
            .tempdir()
            .unwrap();
        let user = unprivileged(user);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        Server {
            name,
            child: None,
            dir,
            user,
            start: Box::new(|_| Command::new("true")),
            ready: Box::new(|_| true),
            port: free_port(),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command run as the server's user.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c.current_dir(self.dir());
        c
    }

    fn run_as(&self, mut c: Command) -> Output {
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{}: {:?} failed: {}{}",
            self.name,
            c,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Starts (or starts again, on the same data) and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let mut c = (self.start)(self.dir.path());
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("server.log"))
            .unwrap();
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(self.dir().join("server.log"), Some(uid), Some(gid)).unwrap();
        }
        c.current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(c.spawn().unwrap_or_else(|e| panic!("{}: {e}", self.name)));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && (self.ready)(self)
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited ({status}): {}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after 20 s) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// PostgreSQL: a cluster made by initdb with a `vmq` superuser (password [`PASSWORD`],
/// scram-sha-256), the database `vernemq_db` with pgcrypto, and TLS on (plain connections are
/// still accepted): the server certificate for 127.0.0.1 is signed by the CA in
/// `<dir>/tls/ca.pem`.
pub fn postgres() -> Server {
    let mut s = Server::new("postgres", "postgres");
    let tls = s.dir().join("tls");
    std::fs::create_dir(&tls).unwrap();
    super::make_pki(&tls);
    for f in ["", "ca.pem", "server.pem", "server.key"] {
        let p = tls.join(f);
        if let Some((uid, gid)) = s.user {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        }
        if f == "server.key" {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let pwfile = s.dir().join("pw");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    if let Some((uid, gid)) = s.user {
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
    }
    let mut init = s.command(pg_bin("initdb"));
    init.args([
        "-D",
        "data",
        "-U",
        "vmq",
        "--auth=scram-sha-256",
        "--no-sync",
    ])
    .arg(format!("--pwfile={}", pwfile.display()))
    .env("LC_ALL", "C");
    s.run_as(init);
    let port = s.port;
    s.start = Box::new(move |dir| {
        let mut c = Command::new(pg_bin("postgres"));
        c.args([
            "-D",
            "data",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-k",
        ])
        .arg(dir)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
            "-c",
            "ssl=on",
        ])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            dir.join("tls/server.pem").display()
        ))
        .arg("-c")
        .arg(format!(
            "ssl_key_file={}",
            dir.join("tls/server.key").display()
        ));
        c
    });
    s.ready = Box::new(|s| psql_try(s, "postgres", "SELECT 1").is_ok());
    s.start();
    psql_db(&s, "postgres", "CREATE DATABASE vernemq_db");
    psql(&s, "CREATE EXTENSION pgcrypto");
    s
}

/// A client's output (trimmed) if it succeeded, else what it said on stderr.
fn stdout_or_error(o: Output) -> Result<String, String> {
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn psql_try(s: &Server, db: &str, sql: &str) -> Result<String, String> {
    let o = Command::new(pg_bin("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-U",
            "vmq",
            "-d",
            db,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    stdout_or_error(o)
}

fn psql_db(s: &Server, db: &str, sql: &str) -> String {
    psql_try(s, db, sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
}

/// Runs `sql` in `vernemq_db` with psql; its output (unaligned, tuples only).
pub fn psql(s: &Server, sql: &str) -> String {
    psql_db(s, "vernemq_db", sql)
}

/// MariaDB: a data directory made by mariadb-install-db, a `vmq` user (password
/// [`PASSWORD`]) with every right on the database `vernemq_db`.
pub fn mariadb() -> Server {
    let mut s = Server::new("mariadb", "mysql");
    // mariadb-install-db has been seen to fail once, without a reason, while another test
    // ran its own: a second attempt on a fresh directory.
    for attempt in 1..=3 {
        let data = s.dir().join("data");
        let _ = std::fs::remove_dir_all(&data);
        let mut init = s.command(find("mariadb-install-db", &["/usr/bin", "/usr/sbin"]));
        init.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--skip-name-resolve",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]);
        let o = init.output().unwrap();
        if o.status.success() {
            break;
        }
        assert!(
            attempt < 3,
            "mariadb-install-db failed 3 times: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let port = s.port;
    s.start = Box::new(move |dir| {
        let mut c = Command::new(find("mariadbd", &["/usr/sbin", "/usr/bin"]));
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
            ]);
        c
    });
    s.ready = Box::new(|s| mariadb_root_try(s, "SELECT 1").is_ok());
    s.start();
    mariadb_root(
        &s,
        &format!(
            "CREATE DATABASE vernemq_db; CREATE USER 'vmq'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON vernemq_db.* TO 'vmq'@'%'; FLUSH PRIVILEGES;"
        ),
    );
    s
}

fn mariadb_root_try(s: &Server, sql: &str) -> Result<String, String> {
    let o = Command::new(find("mariadb", &["/usr/bin"]))
        .arg("--no-defaults")
        .arg(format!("--socket={}", s.dir().join("sock").display()))
        .args(["-u", "root", "-N", "-B", "-e", sql])
        .output()
        .unwrap();
    stdout_or_error(o)
}

fn mariadb_root(s: &Server, sql: &str) -> String {
    mariadb_root_try(s, sql).unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
}

/// Runs `sql` in `vernemq_db` as root; its output (tab-separated, no headers).
pub fn mariadb_sql(s: &Server, sql: &str) -> String {
    mariadb_root(s, &format!("USE vernemq_db; {sql}"))
}

/// Redis, with `requirepass` [`PASSWORD`]; its data is saved when it stops, so a restart
/// keeps it.
pub fn redis() -> Server {
    let mut s = Server::new("redis", "redis");
    let port = s.port;
    s.start = Box::new(move |dir| {
        let mut c = Command::new(find("redis-server", &["/usr/bin"]));
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "3600 1",
                "--appendonly",
                "no",
                "--requirepass",
                PASSWORD,
            ])
            .arg("--dir")
            .arg(dir);
        c
    });
    s.start();
    s
}

/// Runs a Redis command with redis-cli; its output.
pub fn redis_cli(s: &Server, args: &[&str]) -> String {
    let o = Command::new(find("redis-cli", &["/usr/bin"]))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "--no-auth-warning",
        ])
        .args(["-a", PASSWORD])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "redis-cli {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// memcached.
pub fn memcached() -> Server {
    let mut s = Server::new("memcached", "memcache");
    let port = s.port;
    s.start = Box::new(move |_| {
        let mut c = Command::new(find("memcached", &["/usr/bin"]));
        c.args([
            "-p",
            &port.to_string(),
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-m",
            "16",
        ]);
        c
    });
    s.start();
    s
}
