//! The example sidecars as a user runs them: real processes, real TCP, real files.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Instant;

use vmq_sidecar_sdk::testing::every_event;
use vmq_tests::{
    WAIT, example, frames, interop_script, python, python_generated, terminate, wait_with_timeout,
};

/// Starts an example on an ephemeral port and returns it with the address it printed.
fn start(name: &str, args: &[&str]) -> (Child, String, BufReader<ChildStderr>) {
    let mut child = Command::new(example(name))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split([',', '\n']).next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr, stderr)
}

#[test]
fn log_sidecar_writes_json_lines_that_protobuf_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("events.jsonl");
    let (child, addr, mut stderr) = start("log_sidecar", &["--output", output.to_str().unwrap()]);

    let events = every_event();
    let mut wire = frames(&events[..6]);
    wire.extend([0, 0, 0, 2, 0xff, 0xff]); // undecodable: logged, skipped, connection kept
    wire.extend(frames(&events[6..]));
    let mut sock = TcpStream::connect(&addr).unwrap();
    for chunk in wire.chunks(29) {
        sock.write_all(chunk).unwrap();
    }

    // Wait until all 13 lines are on disk (the writer flushes whenever its queue runs dry).
    let start = Instant::now();
    while std::fs::read_to_string(&output).map_or(0, |s| s.lines().count()) < events.len() {
        assert!(start.elapsed() < WAIT, "log_sidecar did not write 13 lines");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(sock);
    terminate(&child);
    let out = wait_with_timeout(child);
    assert!(out.status.success());
    let mut log = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
    assert!(log.contains("undecodable frame skipped"), "{log}");
    assert!(log.contains("13 lines written"), "{log}");

    let text = std::fs::read_to_string(&output).unwrap();
    for (line, event) in text.lines().zip(&events) {
        assert!(
            line.starts_with(&format!("{{\"@type\":\"{}\"", event.type_url())),
            "{line}"
        );
    }
    // Python's json_format (the reference proto3 JSON parser) reads every line back to the
    // exact message.
    let check = Command::new(python())
        .arg(interop_script())
        .arg(python_generated())
        .arg("check-jsonl")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn analytics_sidecar_counts_hooks_topics_and_clients() {
    let (mut child, addr, _stderr) = start("analytics_sidecar", &["--interval", "1"]);
    let events = every_event();
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend(frames(&events));
    }
    let mut sock = TcpStream::connect(&addr).unwrap();
    sock.write_all(&wire).unwrap();
    drop(sock);

    // Read summaries as they are printed until one has seen all 39 events.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut summary = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("no summary with 39 events");
        if line.starts_with("==") {
            if summary.iter().any(|l: &String| l.contains(" 39 events")) {
                break;
            }
            summary.clear();
        }
        summary.push(line);
    }
    terminate(&child);
    assert!(wait_with_timeout(child).status.success());

    let summary = summary.join("\n");
    assert!(summary.contains("0 clients online"), "{summary}");
    let publish = summary
        .lines()
        .find(|l| l.trim_start().starts_with("on_publish "))
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(publish.trim_end().ends_with(" 3"), "{publish}");
    assert!(
        summary.contains("3 msgs           33 bytes  a/b/ü"),
        "{summary}"
    );
}
