#!/usr/bin/env python3
"""Turns bench/run.sh's results (JSON lines) into a markdown table of ratios against mosquitto
and an SVG chart; on a full run, writes both into BENCHMARKS.md between its bench markers."""
import json
import platform
import subprocess
import sys
from pathlib import Path

results_path, out_dir, smoke = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
duration = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
rows = [json.loads(line) for line in open(results_path) if line.strip()]
by = {(r["label"], r["broker"]): r for r in rows}
PEERS = ["mosquitto", "ours", "nats", "rumqttd"]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -g | awk '/Mem/ {print $2}'")
mosq = sh("mosquitto -h 2>/dev/null | head -1") or "mosquitto"
nats = sh("nats-server --version 2>/dev/null") or "nats-server"
rumqttd = "rumqttd 0.20.0" if any(r["broker"] == "rumqttd" for r in rows) else "rumqttd did not build"
machine = f"{sh('nproc')} cores, {cpu}, {mem} GiB, Linux {platform.release()}, {sh('rustc --version')}, {mosq}, {nats}, {rumqttd}"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def recv(label, broker):
    r = by.get((label, broker))
    return float(r["received_per_s"]) if r else 0.0


def per_broker(label, fmt):
    """One value per peer, 'n/a' for a peer that did not run the scenario."""
    return " / ".join(fmt(by[(label, b)]) if (label, b) in by else "n/a" for b in PEERS)


def cpu_us(r):
    """CPU time of the broker per message received, in microseconds."""
    got = float(r["received_per_s"]) * duration
    return r["cpu_ms"][0] * 1000.0 / got if got and r.get("cpu_ms") else 0.0


def loss(r):
    return f"{float(r['loss']) * 100:.1f}%"


def cpu_cell(r):
    return f"{cpu_us(r):.2f}"


def p50(r):
    return str(r["p50_us"])


def p99(r):
    return str(r["p99_us"])


labels = []
for r in rows:
    if r["label"] not in labels and r["broker"] == "mosquitto" and "received_per_s" in r:
        labels.append(r["label"])
labels = [l for l in labels if (l, "ours") in by]
main = [l for l in labels if not l.endswith("-persistent")]
lines = [
    f"Machine: {machine}.",
    "",
    "| scenario | mosquitto recv/s | ours recv/s | nats recv/s | rumqttd recv/s | ours / mosquitto | ours / nats | ours / rumqttd | loss mosquitto / ours / nats / rumqttd |",
    "|---|---|---|---|---|---|---|---|---|",
]
for label in labels:
    o = recv(label, "ours")
    peers = " | ".join(f"{recv(label, b):,.0f}" if (label, b) in by else "n/a" for b in ("nats", "rumqttd"))
    ratios = " | ".join(f"**{ratio(o, recv(label, b))}**" if (label, b) in by else "n/a" for b in ("mosquitto", "nats", "rumqttd"))
    lines.append(f"| {label} | {recv(label, 'mosquitto'):,.0f} | {o:,.0f} | {peers} | {ratios} | "
                 f"{per_broker(label, loss)} |")
lines += ["", "CPU time of each broker per message received (all its threads, user + system) and latency "
          "(publish to receipt, as the subscriber sees it):", "",
          "| scenario | CPU µs/msg mosquitto / ours / nats / rumqttd | CPU ours / mosquitto | p50 µs mosquitto / ours / nats / rumqttd | p99 µs mosquitto / ours / nats / rumqttd |",
          "|---|---|---|---|---|"]
for label in main:
    o, m = cpu_us(by[(label, "ours")]), cpu_us(by[(label, "mosquitto")])
    lines.append(f"| {label} | {per_broker(label, cpu_cell)} | **{ratio(o, m)}** | "
                 f"{per_broker(label, p50)} | {per_broker(label, p99)} |")
store_labels = [l for l in labels if (l, "ours-store-off") in by]
if store_labels:
    lines += ["", "Message store (persistent subscribers: each QoS 1 message written to the store and deleted at PUBACK), against ours with the store off:", "",
              "| scenario | store off recv/s | durable recv/s | ratio | durable p99 µs | relaxed recv/s | ratio | relaxed p99 µs |", "|---|---|---|---|---|---|---|---|"]
    for label in store_labels:
        off, dur, rel = by[(label, "ours-store-off")], by[(label, "ours")], by.get((label, "ours-store-relaxed"))
        o, d = float(off["received_per_s"]), float(dur["received_per_s"])
        r = float(rel["received_per_s"]) if rel else 0.0
        lines.append(f"| {label} | {o:,.0f} | {d:,.0f} | **{ratio(d, o)}** | {dur['p99_us']} | {r:,.0f} | **{ratio(r, o)}** | {rel['p99_us'] if rel else 'n/a'} |")
idle_labels = list(dict.fromkeys(r["label"] for r in rows if r["label"].startswith("idle-")))
if idle_labels:
    lines += ["", "Idle connections, each count on a freshly started broker (bytes of RSS per connection):", "",
              "| connections | mosquitto | ours | ours / mosquitto | nats | rumqttd |", "|---|---|---|---|---|---|"]
    for label in idle_labels:
        b = {broker: int(by[(label, broker)]["bytes_per_connection"]) for broker in PEERS if (label, broker) in by}
        cell = lambda k: f"{b[k]:,}" if k in b else "n/a"
        lines.append(f"| {label[5:]} | {cell('mosquitto')} | {cell('ours')} | **{ratio(b.get('ours', 0), b.get('mosquitto', 0))}** | {cell('nats')} | {cell('rumqttd')} |")
ingest = [r for r in rows if r["label"] == "sdk-ingest"]
if ingest:
    i = ingest[0]
    lines += ["", f"SDK server ingest over loopback: **{float(i['events_per_s']):,.0f} events/s** ({i['mib_per_s']} MiB/s) from {i['connections']} producer connections of 64 B OnPublish frames."]
table = "\n".join(lines)

# A bar chart: received/s per unpaced scenario, one bar per broker.
COLOURS = {"mosquitto": "#8a8a8a", "ours": "#2b6cb0", "nats": "#38a169", "rumqttd": "#d69e2e"}
NAMES = {"mosquitto": "mosquitto", "ours": "vmq-broker", "nats": "nats-server", "rumqttd": "rumqttd"}
bars = [(l, [recv(l, b) for b in PEERS]) for l in main]
top = max([max(v) for _, v in bars] + [1])
w, row_h = 760, 58
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{row_h * len(bars) + 50}" font-family="sans-serif" font-size="12">',
       '<text x="10" y="18" font-weight="bold">messages received per second (longer is better)</text>']
for k, b in enumerate(PEERS):
    svg.append(f'<rect x="{360 + k * 100}" y="6" width="12" height="12" fill="{COLOURS[b]}"/><text x="{376 + k * 100}" y="17">{NAMES[b]}</text>')
for i, (label, values) in enumerate(bars):
    y = 34 + i * row_h
    svg.append(f'<text x="10" y="{y + 14}">{label}</text>')
    for j, (v, b) in enumerate(zip(values, PEERS)):
        bw = max(1, int(v / top * (w - 330)))
        svg.append(f'<rect x="200" y="{y + j * 13}" width="{bw}" height="12" fill="{COLOURS[b]}"/>')
        svg.append(f'<text x="{204 + bw}" y="{y + j * 13 + 10}">{v:,.0f}</text>')
svg.append("</svg>")
(out_dir / "throughput.svg").write_text("\n".join(svg))
(out_dir / "report.md").write_text(table + "\n")
print(table)

if not smoke:
    Path("bench/throughput.svg").write_text("\n".join(svg))
    bm = Path("BENCHMARKS.md")
    text = bm.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    block = f"{start}\n{table}\n\n![throughput](bench/throughput.svg)\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    bm.write_text(text)
