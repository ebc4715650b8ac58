//! `vmq-admin`: VerneMQ's command line for a running node, over its management API.
//!
//! `vmq-admin session show --client_id --is_online` becomes
//! `GET /api/v1/session/show?--client_id&--is_online`: words are the path, `key=value` and
//! `--flag[=value]` arguments the query. The node is found through `--url` or the config
//! file's first `listener.http.*`; the API key comes from `--api-key`, or, when the config file
//! is readable, a key valid for one minute is written to the data directory for this call (who
//! can write the data directory is an administrator anyway). `api-key create|show|delete` work
//! on that directory directly, so the first key needs no key.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;
use serde_json::Value;
use vmq_broker::Config;
use vmq_broker::http::ApiKeys;
use vmq_broker::http::api::usage;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Manage a running vmq-broker (VerneMQ's vmq-admin commands)",
    after_help = usage()
)]
struct Args {
    /// Base URL of the node's HTTP listener, e.g. http://127.0.0.1:8888.
    #[arg(long, env = "VMQ_ADMIN_URL")]
    url: Option<String>,
    /// API key (see `vmq-admin api-key create`).
    #[arg(long, env = "VMQ_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The node's config file: where its HTTP listener and data directory are.
    #[arg(long, short, env = "VMQ_CONFIG", default_value = "vernemq.conf")]
    config: PathBuf,
    /// The command and its arguments, e.g. `events enable hook=on_publish`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// Splits command words from arguments: `key=value`, `--flag[=value]` and `-k` are arguments.
fn split(command: &[String]) -> (Vec<&str>, Vec<(String, String)>) {
    let mut words = Vec::new();
    let mut params = Vec::new();
    for c in command {
        if let Some((k, v)) = c.split_once('=') {
            params.push((k.to_owned(), v.to_owned()));
        } else if c.starts_with('-') {
            params.push((c.clone(), String::new()));
        } else {
            words.push(c.as_str());
        }
    }
    (words, params)
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    Config::load(&args.config).with_context(|| {
        format!(
            "cannot read the node's config (pass --config <file>, or --url and --api-key): {}",
            args.config.display()
        )
    })
}

/// `api-key ...` on the data directory itself.
fn api_keys_locally(args: &Args, verb: &str, params: &[(String, String)]) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let keys = ApiKeys::new(&config.persistent_data_dir);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    match verb {
        "create" => {
            let ttl = match get("expires") {
                Some(v) => vmq_broker::config::parse_duration(v).map_err(anyhow::Error::msg)?,
                None => None,
            };
            println!("{}", keys.create(ttl)?);
        }
        "show" => {
            let rows: Vec<Value> = keys
                .list()?
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "id": k.id(),
                        "created": k.created,
                        "expires": k.expires.map_or("never".into(), |e| e.to_string()),
                    })
                })
                .collect();
            print_table(&rows);
        }
        "delete" => {
            let key = get("key").context("usage: api-key delete key=<key or id>")?;
            keys.delete(key)?;
            println!("Done");
        }
        other => bail!("unknown command \"api-key {other}\"\n{}", usage()),
    }
    Ok(())
}

/// Prints rows as VerneMQ does: a boxed table, columns in the order the node sent them.
fn print_table(rows: &[Value]) {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        println!("(no rows)");
        return;
    };
    let columns: Vec<&String> = first.keys().collect();
    let cell = |row: &Value, c: &str| match &row[c] {
        Value::String(s) => s.clone(),
        Value::Null => "undefined".into(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "{line}");
    let header: String = columns
        .iter()
        .zip(&widths)
        .map(|(c, w)| format!("| {c:<w$} "))
        .collect::<String>()
        + "|";
    let _ = writeln!(out, "{header}\n{line}");
    for r in rows {
        let text: String = columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {:<w$} ", cell(r, c)))
            .collect::<String>()
            + "|";
        let _ = writeln!(out, "{text}");
    }
    let _ = writeln!(out, "{line}");
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (words, params) = split(&args.command);
    if let ["api-key", verb] = words.as_slice()
        && args.api_key.is_none()
    {
        api_keys_locally(args, verb, &params)?;
        return Ok(ExitCode::SUCCESS);
    }
    if words.is_empty() {
        eprintln!("no command given\n{}", usage());
        return Ok(ExitCode::from(2));
    }
    let config = if args.url.is_none() || args.api_key.is_none() {
        Some(load_config(args)?)
    } else {
        None
    };
    let url = match (&args.url, &config) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(c)) => {
            let l = c.http_listeners.first().with_context(|| {
                format!(
                    "{} has no listener.http.<name>: pass --url",
                    args.config.display()
                )
            })?;
            let mut addr = l.addr;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
        (None, None) => unreachable!("config loaded when --url is missing"),
    };
    // A one-minute key of our own when none is given, removed afterwards.
    let (key, temporary) = match (&args.api_key, &config) {
        (Some(k), _) => (k.clone(), None),
        (None, Some(c)) => {
            let keys = ApiKeys::new(&c.persistent_data_dir);
            let k = keys
                .create(Some(Duration::from_secs(60)))
                .context("cannot write a temporary API key (pass --api-key)")?;
            (k.clone(), Some((keys, k)))
        }
        (None, None) => unreachable!("config loaded when --api-key is missing"),
    };
    let result = call(&url, &key, &words, &params);
    if let Some((keys, k)) = temporary {
        let _ = keys.delete(&k);
    }
    result
}

fn call(
    url: &str,
    key: &str,
    words: &[&str],
    params: &[(String, String)],
) -> anyhow::Result<ExitCode> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if v.is_empty() && k.starts_with('-') {
            query.append_key_only(k);
        } else {
            query.append_pair(k, v);
        }
    }
    let query = query.finish();
    let mut target = format!("{url}/api/v1/{}", words.join("/"));
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query);
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let streaming = words == ["trace", "client"];
    let response = ureq::get(&target)
        .header("Authorization", format!("Basic {auth}"))
        .config()
        .http_status_as_error(false)
        .timeout_global((!streaming).then_some(Duration::from_secs(30)))
        .build()
        .call()
        .with_context(|| format!("cannot reach the node at {url}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    if streaming && status == 200 {
        // Lines as they come, until the node goes away or we are interrupted.
        let reader = BufReader::new(body.into_reader());
        for line in reader.lines() {
            let line = line?;
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = body.read_to_string().unwrap_or_default();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    match status {
        200 => {
            match json["type"].as_str() {
                Some("table") => print_table(json["table"].as_array().map_or(&[], |v| v)),
                _ => println!("{}", json["text"].as_str().unwrap_or(&json.to_string())),
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let msg = json["text"]
                .as_str()
                .map_or(json.to_string(), str::to_owned);
            eprintln!("{msg}");
            if status == 404 && !msg.contains("Commands") {
                eprintln!("{}", usage());
            }
            Ok(ExitCode::from(if status == 401 { 1 } else { 2 }))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmq-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
