"""bench/soak.sh's reader of what a soak left behind (not CI).

    python bench/soak.py check DIR PER_TOPIC TOPIC...
        Every message the producer sent, {"topic": T, "id": N} with N in
        0..PER_TOPIC, looked for in every file under DIR (the csv plugin's
        rows, the file destination's lines: the JSON is quoted differently in
        each, so only the words are matched). Prints lost and duplicated
        messages per topic; exits 1 if any is lost.
    python bench/soak.py growth SAMPLES.csv
        RSS, open files, threads and compile cache: the median of the five
        minutes after the warm-up against the median of the last five.
        Medians, because single samples swing with what is in flight at
        that instant (a hostile tenant's 256 MiB memory bomb is in RSS for a
        second of every restart): a leak moves the median, a spike does
        not. Exits 1 past 5% growth.
    python bench/soak.py plot SAMPLES.csv OUT.png TITLE
        RSS, open files, threads, compile cache, CPU and records against
        time, one panel each, with the warm-up the growth is measured from
        shaded (matplotlib; bench/soak.sh installs it).
"""

import csv
import re
import sys
from collections import Counter
from pathlib import Path

# `"topic":"soak-3","id":17` as csv (`""topic"":""soak-3""`) or as JSON in a
# JSON string (`\"topic\":\"soak-3\"`): words only.
MESSAGE = re.compile(rb'topic\W+(soak-[\w-]+)\W+id\W+(\d+)')


def check(directory, per_topic, topics):
    seen = Counter()
    for path in Path(directory).rglob("*"):
        if path.is_file():
            for topic, number in MESSAGE.findall(path.read_bytes()):
                seen[(topic.decode(), int(number))] += 1
    lost_total = 0
    for topic in topics:
        lost = [n for n in range(per_topic) if seen[(topic, n)] == 0]
        twice = sum(c - 1 for (t, _), c in seen.items() if t == topic and c > 1)
        lost_total += len(lost)
        if lost or twice:
            print(f"{topic}: {len(lost)} lost (first {lost[:5]}), {twice} written twice")
    written = sum(seen.values())
    print(f"{len(topics)} topics x {per_topic} messages: {lost_total} lost, "
          f"{written - len(seen)} written twice, {written} rows")
    return 1 if lost_total else 0


def samples_of(path):
    with open(path) as f:
        return [{k: float(v or 0) for k, v in row.items()} for row in csv.DictReader(f)]


def warm_up_s(rows):
    """5 minutes, or a twelfth of a run shorter than an hour."""
    return 300 if rows[-1]["elapsed_s"] >= 3600 else rows[-1]["elapsed_s"] / 12


def growth(samples):
    rows = samples_of(samples)
    warm, last = warm_up_s(rows), rows[-1]["elapsed_s"]
    window = min(300, (last - warm) / 3)
    early = [r for r in rows if warm <= r["elapsed_s"] < warm + window]
    late = [r for r in rows if r["elapsed_s"] > last - window]
    if not early or not late:
        print("too short to compare")
        return 1
    worst = 0
    parts = []
    for column, label in [("rss_kib", "RSS KiB"), ("open_files", "open files"),
                          ("threads", "threads"), ("cache_kib", "compile cache KiB")]:
        a, b = median([r[column] for r in early]), median([r[column] for r in late])
        change = (b - a) * 100 / a if a else 0
        worst = max(worst, change)
        parts.append(f"{label} {a:.0f} -> {b:.0f} ({change:+.1f}%)")
    cpu = rows[-1]["cpu_s"] - rows[0]["cpu_s"]
    print(f"medians of {warm:.0f}-{warm + window:.0f} s against {last - window:.0f}-{last:.0f} s: "
          + ", ".join(parts) + f"; CPU {cpu:.0f} s in {last:.0f} s")
    return 1 if worst > 5 else 0


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def plot(samples, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = samples_of(samples)
    minutes = [r["elapsed_s"] / 60 for r in rows]
    warm = warm_up_s(rows) / 60
    panels = [
        ("RSS (MiB)", [r["rss_kib"] / 1024 for r in rows]),
        ("open files", [r["open_files"] for r in rows]),
        ("threads", [r["threads"] for r in rows]),
        ("compile cache (MiB)", [r["cache_kib"] / 1024 for r in rows]),
        ("CPU (% of one core)", cpu_percent(rows)),
        ("records (thousands)", None),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(11, 9), sharex=True)
    for ax, (label, values) in zip(axes.flat, panels):
        if values is None:
            ax.plot(minutes, [r["produced"] / 1000 for r in rows], label="produced")
            ax.plot(minutes, [r["written"] / 1000 for r in rows], label="written", linestyle="--")
            ax.legend()
        else:
            ax.plot(minutes, values)
            ax.set_ylim(bottom=0, top=max(values) * 1.25 or 1)
        ax.axvspan(0, warm, color="0.9")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def cpu_percent(rows):
    out = [0.0]
    for a, b in zip(rows, rows[1:]):
        span = b["elapsed_s"] - a["elapsed_s"]
        out.append(100 * (b["cpu_s"] - a["cpu_s"]) / span if span else 0)
    return out


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    if what == "check":
        sys.exit(check(args[0], int(args[1]), args[2:]))
    if what == "growth":
        sys.exit(growth(args[0]))
    plot(*args)
