#!/usr/bin/env python3
"""Turns bench/run.sh's results (JSON lines) into a markdown table of ratios against mosquitto
and an SVG chart; on a full run, writes both into BENCHMARKS.md between its bench markers."""
import json
import platform
import subprocess
import sys
from pathlib import Path

results_path, out_dir, smoke = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
rows = [json.loads(line) for line in open(results_path) if line.strip()]
by = {(r["label"], r["broker"]): r for r in rows}


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -g | awk '/Mem/ {print $2}'")
mosq = sh("mosquitto -h 2>/dev/null | head -1") or "mosquitto"
nats = sh("nats-server --version 2>/dev/null") or "nats-server"
machine = f"{sh('nproc')} cores, {cpu}, {mem} GiB, Linux {platform.release()}, {sh('rustc --version')}, {mosq}, {nats}"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


lines = [
    f"Machine: {machine}.",
    "",
    "| scenario | mosquitto recv/s | ours recv/s | ours / mosquitto | nats recv/s | ours / nats | p99 µs mosquitto / ours / nats | loss mosquitto / ours / nats |",
    "|---|---|---|---|---|---|---|---|",
]
labels = []
for r in rows:
    if r["label"] not in labels and r["broker"] == "mosquitto" and "received_per_s" in r:
        labels.append(r["label"])
for label in labels:
    m, o, n = by[(label, "mosquitto")], by.get((label, "ours")), by.get((label, "nats"))
    if not o:
        continue
    n_recv = f"{float(n['received_per_s']):,.0f}" if n else "n/a"
    n_ratio = f"**{ratio(float(o['received_per_s']), float(n['received_per_s']))}**" if n else "n/a"
    lines.append(
        f"| {label} | {float(m['received_per_s']):,.0f} | {float(o['received_per_s']):,.0f} | "
        f"**{ratio(float(o['received_per_s']), float(m['received_per_s']))}** | {n_recv} | {n_ratio} | "
        f"{m['p99_us']} / {o['p99_us']} / {n['p99_us'] if n else 'n/a'} | "
        f"{float(m['loss']) * 100:.1f}% / {float(o['loss']) * 100:.1f}% / {(float(n['loss']) * 100 if n else 0):.1f}% |"
    )
store_labels = [l for l in labels if (l, "ours-store-off") in by and (l, "ours") in by]
if store_labels:
    lines += ["", "Message store (persistent subscribers: each QoS 1 message written to the store and deleted at PUBACK), against ours with the store off:", "",
              "| scenario | store off recv/s | durable recv/s | ratio | durable p99 µs | relaxed recv/s | ratio | relaxed p99 µs |", "|---|---|---|---|---|---|---|---|"]
    for label in store_labels:
        off, dur, rel = by[(label, "ours-store-off")], by[(label, "ours")], by.get((label, "ours-store-relaxed"))
        o, d = float(off["received_per_s"]), float(dur["received_per_s"])
        r = float(rel["received_per_s"]) if rel else 0.0
        lines.append(f"| {label} | {o:,.0f} | {d:,.0f} | **{ratio(d, o)}** | {dur['p99_us']} | {r:,.0f} | **{ratio(r, o)}** | {rel['p99_us'] if rel else 'n/a'} |")
idle = {r["broker"]: r for r in rows if r["label"].startswith("idle")}
if "mosquitto" in idle and "ours" in idle:
    m, o = int(idle["mosquitto"]["bytes_per_connection"]), int(idle["ours"]["bytes_per_connection"])
    nats_idle = f", nats {int(idle['nats']['bytes_per_connection']):,} bytes each" if "nats" in idle else ""
    lines += ["", f"Idle connections ({idle['ours']['connections']}): mosquitto {m:,} bytes each, ours {o:,} bytes each (ours / mosquitto **{ratio(o, m)}**){nats_idle}, from the brokers' RSS."]
ingest = [r for r in rows if r["label"] == "sdk-ingest"]
if ingest:
    i = ingest[0]
    lines += ["", f"SDK server ingest over loopback: **{float(i['events_per_s']):,.0f} events/s** ({i['mib_per_s']} MiB/s) from {i['connections']} producer connections of 64 B OnPublish frames."]
table = "\n".join(lines)

# A bar chart: received/s per scenario, mosquitto, ours and nats side by side.
def recv(label, broker):
    r = by.get((label, broker))
    return float(r["received_per_s"]) if r else 0.0


bars = [(l, recv(l, "mosquitto"), recv(l, "ours"), recv(l, "nats")) for l in labels if (l, "ours") in by]
top = max([max(m, o, n) for _, m, o, n in bars] + [1])
w, row_h = 760, 46
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{row_h * len(bars) + 50}" font-family="sans-serif" font-size="12">',
       '<text x="10" y="18" font-weight="bold">messages received per second (longer is better)</text>',
       '<rect x="400" y="6" width="12" height="12" fill="#8a8a8a"/><text x="416" y="17">mosquitto</text>',
       '<rect x="500" y="6" width="12" height="12" fill="#2b6cb0"/><text x="516" y="17">vmq-broker</text>',
       '<rect x="610" y="6" width="12" height="12" fill="#38a169"/><text x="626" y="17">nats-server</text>']
for i, (label, m, o, n) in enumerate(bars):
    y = 34 + i * row_h
    svg.append(f'<text x="10" y="{y + 14}">{label}</text>')
    for j, (v, colour) in enumerate(((m, "#8a8a8a"), (o, "#2b6cb0"), (n, "#38a169"))):
        bw = max(1, int(v / top * (w - 330)))
        svg.append(f'<rect x="170" y="{y + j * 13}" width="{bw}" height="12" fill="{colour}"/>')
        svg.append(f'<text x="{174 + bw}" y="{y + j * 13 + 10}">{v:,.0f}</text>')
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
