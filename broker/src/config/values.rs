//! The value forms of `vernemq.conf`: on/off flags, durations, sizes, numbers and limits. Each
//! parser says what it expected, so the caller can name the line.

use std::time::Duration;

/// Parses `on`/`off` (and `true`/`false`).
pub fn parse_flag(v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("expected on or off, got {v:?}")),
    }
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`, `w`), several may be
/// combined (`1h30m`); `never` is `None`.
pub fn parse_duration(v: &str) -> Result<Option<Duration>, String> {
    if v == "never" {
        return Ok(None);
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "bad duration {v:?} (e.g. 30s, 5m, 1h, 2d, 1w, never)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad number in {v:?}"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit] {
            "ms" => {
                total = total
                    .checked_add(Duration::from_millis(n))
                    .ok_or_else(|| format!("duration {v:?} is too long"))?;
                rest = &rest[unit..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => return Err(format!("unknown duration unit {other:?} in {v:?}")),
        };
        let part = n
            .checked_mul(secs)
            .ok_or_else(|| format!("duration {v:?} is too long"))?;
        total = total
            .checked_add(Duration::from_secs(part))
            .ok_or_else(|| format!("duration {v:?} is too long"))?;
        rest = &rest[unit..];
    }
    Ok(Some(total))
}

/// Parses a size: bytes, or a number with `KB`, `MB`, `GB` (powers of 1024).
pub fn parse_size(v: &str) -> Result<usize, String> {
    let upper = v.to_ascii_uppercase();
    let (num, mult) = if let Some(n) = upper.strip_suffix("KB") {
        (n, 1024)
    } else if let Some(n) = upper.strip_suffix("MB") {
        (n, 1024 * 1024)
    } else if let Some(n) = upper.strip_suffix("GB") {
        (n, 1024 * 1024 * 1024)
    } else if let Some(n) = upper.strip_suffix('B') {
        (n, 1)
    } else {
        (upper.as_str(), 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("bad size {v:?} (e.g. 1024, 64KB, 1MB)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {v:?} too large"))
}

/// A reload interval: seconds as a bare number (VerneMQ's form) or a duration; 0 disables.
/// A reload interval: seconds, or a duration (`never`: zero, never reloaded).
pub fn reload_interval(v: &str) -> Result<Duration, String> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    Ok(parse_duration(v)?.unwrap_or(Duration::ZERO))
}

/// A number.
pub fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("expected a number, got {v:?}"))
}

/// A limit: a number, or `infinity`/`unlimited` (`None`).
pub(super) fn parse_limit(v: &str) -> Result<Option<usize>, String> {
    match v {
        "infinity" | "unlimited" => Ok(None),
        _ => v
            .parse()
            .map(Some)
            .map_err(|_| format!("expected a number or infinity, got {v:?}")),
    }
}
