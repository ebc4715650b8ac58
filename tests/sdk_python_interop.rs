//! Cross-implementation: Python's official protobuf runtime, compiling the very same `.proto`
//! files, encodes frames of all 13 event types that the SDK server decodes field for field; and
//! frames the SDK encodes are decoded by Python field for field. This is what proves that
//! sidecars in other languages, and real VerneMQ, interoperate with us.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use futures::StreamExt;
use tokio::time::timeout;
use vmq_sidecar_sdk::Server;
use vmq_sidecar_sdk::testing::every_event;
use vmq_tests::{WAIT, frames, interop_script, python, python_generated, wait_with_timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_encoded_frames_decode_field_for_field() {
    let generated = python_generated();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut events = server.into_stream(64);

    let sender = Command::new(python())
        .arg(interop_script())
        .arg(generated)
        .args(["send", "127.0.0.1", &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || wait_with_timeout(sender))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "python sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let want = every_event();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(timeout(WAIT, events.next()).await.unwrap().unwrap());
    }
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{} differs", w.hook());
    }
    let stats = events.stats().snapshot();
    assert_eq!(stats.frames, 13);
    assert_eq!(stats.skipped_frames, 1, "python sent one zero-length frame");
    assert_eq!(stats.decode_errors, 0);
}

#[test]
fn sdk_encoded_frames_decode_field_for_field_in_python() {
    let generated = python_generated();
    let mut receiver = Command::new(python())
        .arg(interop_script())
        .arg(generated)
        .arg("recv")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(receiver.stdout.take().unwrap());
    let mut port = String::new();
    stdout.read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().expect("python prints its port");

    let events = every_event();
    let mut wire = frames(&events[..4]);
    wire.extend([0, 0, 0, 0]); // a zero-length frame, which Python must skip too
    wire.extend(frames(&events[4..]));
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_nodelay(true).unwrap();
    for chunk in wire.chunks(41) {
        sock.write_all(chunk).unwrap();
    }
    drop(sock);

    let out = wait_with_timeout(receiver);
    let mut report = String::new();
    stdout.read_line(&mut report).unwrap();
    assert!(
        out.status.success(),
        "python decoder disagreed:\n{report}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.starts_with("ok: 13 events"), "{report}");
}
