"""Shared by the bench scripts' report steps: the result lines `record` wrote (one JSON object
per run, tagged with a label and a broker), medians, ratios, and the table written into
BENCHMARKS.md between a script's markers.

    python3 - "$RESULTS" "$SMOKE" "$DURATION" "$OUT" "$REPEATS" <<'PY'
    import sys; sys.path.insert(0, "bench")
    from results import Results
    r = Results(sys.argv)
"""
import json
import statistics
from pathlib import Path


class Results:
    def __init__(self, argv):
        self.rows = [json.loads(l) for l in open(argv[1]) if l.strip()]
        self.smoke = argv[2] == "1"
        self.duration = float(argv[3])
        self.out = Path(argv[4])
        self.repeats = argv[5]
        self.labels = list(dict.fromkeys(r["label"] for r in self.rows))

    def runs(self, label, broker):
        """The runs of one scenario on one broker."""
        return [r for r in self.rows if r["label"] == label and r["broker"] == broker]

    def publish(self, name, script, marker, title, table):
        """Prints the table, keeps it in target/, and (not in a smoke run) writes it into
        BENCHMARKS.md between `<!-- marker:begin -->` and `<!-- marker:end -->` (a new section
        titled `title` at the end the first time)."""
        print(table)
        (self.out / f"{name}.md").write_text(table + "\n")
        if self.smoke:
            return
        bm = Path("BENCHMARKS.md")
        text = bm.read_text()
        begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
        section = (f"{begin}\nMedians of {self.repeats} repeats, {self.duration:.0f} s each, "
                   f"64 B payloads (`{script}`):\n\n{table}\n{end}")
        if begin in text:
            text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
        else:
            text += f"\n## {title}\n\n{section}\n"
        bm.write_text(text)


def med(values):
    return statistics.median(values) if values else 0.0


def q(a, b):
    return a / b if b else 0.0
