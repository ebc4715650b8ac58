//! What the bench reads from the processes it measures: CPU time and resident memory from
//! `/proc`, and counters from a broker's Prometheus `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// CPU time (user + system, all threads) a process has used, in ms, from `/proc/<pid>/stat`
/// (clock ticks of 10 ms, Linux's USER_HZ).
pub fn cpu_ms(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid}"))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short stat")?
            .parse()
            .context("bad stat")
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) * 10)
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// The sum of every sample of the metric `name` (all label sets) at `http://<addr>/metrics`.
pub fn metric_sum(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot reach the metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let mut sum = 0.0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{labels} value` or `name value`, not a longer name with this prefix.
        let value = match rest.as_bytes().first() {
            Some(b'{') => rest.rsplit_once(' ').map(|(_, v)| v),
            Some(b' ') => Some(rest.trim()),
            _ => None,
        };
        if let Some(v) = value {
            sum += v
                .parse::<f64>()
                .with_context(|| format!("bad sample: {line}"))?;
        }
    }
    Ok(sum)
}
