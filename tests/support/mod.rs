//! Helpers of the end-to-end tests: locating the workspace's binaries and the Python toolchain,
//! waiting on processes with timeouts.

pub mod broker;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_util::codec::Encoder;
use vmq_sidecar_sdk::{Event, EventCodec};

/// How long any single step of an end-to-end test may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(30);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The Python interpreter to use (`PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `tests/python/interop.py`.
pub fn interop_script() -> PathBuf {
    workspace().join("tests/python/interop.py")
}

/// Compiles `proto/eventssidecar/v1/*.proto` for Python with grpc_tools.protoc, once per test
/// process, and returns the directory of the generated modules.
pub fn python_generated() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = workspace().join("proto");
        let mut protos: Vec<PathBuf> = std::fs::read_dir(root.join("eventssidecar/v1"))
            .expect("proto dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "proto"))
            .collect();
        protos.sort();
        let out = Command::new(python())
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", root.display()))
            .arg(format!("--python_out={}", dir.path().display()))
            .args(&protos)
            .output()
            .expect("python3 must be installed");
        assert!(
            out.status.success(),
            "grpc_tools.protoc failed (install the Python tools: \
             python3 -m pip install -r tests/python/requirements.txt):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// `target/<profile>`, where cargo puts the workspace's binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn built(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A built example binary of the workspace (`cargo test --workspace` builds them).
pub fn example(name: &str) -> PathBuf {
    built(profile_dir().join("examples").join(name))
}

/// Frames for `events`, as the broker's relay writes them.
pub fn frames(events: &[Event]) -> Vec<u8> {
    let mut codec = EventCodec::new();
    let mut buf = BytesMut::new();
    for e in events {
        codec.encode(e, &mut buf).expect("encodable");
    }
    buf.to_vec()
}

/// Waits for a child to exit, killing it after [`WAIT`].
pub fn wait_with_timeout(mut child: Child) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if start.elapsed() > WAIT => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "process timed out\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Asks a process to stop as an operator would (SIGTERM).
pub fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}
