#!/usr/bin/env python3
"""Summary of a benches/load/run.sh run: report.py RESULTS_TSV [RUN_TXT].

Reads the per-run rows run.sh wrote (one per mode, concurrency, case, server and repetition),
takes the median of each figure over repetitions, and prints in Markdown:

1. per mode and concurrency, every case: nginx / hlsgate / floor requests per second, the ratios,
   p50 and p99 latency, server CPU per request, and warnings (non-2xx in a 200 case, socket
   errors, wrk at its limit, and noise: servers waiting for a CPU or, in split mode, using less
   than their core);
2. the issue's table (split mode, c64 first);
3. the issue's goals against this run.

Re-run it on a saved results.tsv to re-render. Standard library only.
"""

import csv
import statistics
import sys
from collections import defaultdict

CASES = {
    "1k": "1 KiB file, valid token",
    "forged": "forged token → 403",
    "playlist": "30-segment live media playlist (hlsgate rewrites per viewer, nginx sends the file)",
    "256k": "256 KiB file",
    "1m": "1 MiB file",
    "segments": "real demo segments (180p, 51-63 KB)",
    "origin": "origin mode: real segments via HTTP origin (hlsgate cache vs nginx proxy_cache)",
}
NUMERIC = ["requests", "rps", "cpu_us_per_req", "p50_us", "p99_us", "wall_s", "server_cores",
           "wrk_cores", "server_waited", "other_cores", "irq_cores", "non_ok", "socket_errors", "bytes_per_resp"]
# Thresholds for the warnings (fractions of one core, per measured run).
SATURATED = 0.90   # split: a server below this share of its core was not the bottleneck
WRK_LIMIT = 0.95   # split: wrk above this share of its core may be the limit
WAITED = 0.05      # seconds per second the server's threads spent runnable but not running


def load(path):
    runs = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            for k in NUMERIC:
                row[k] = float(row[k])
            runs[(row["mode"], int(row["conns"]), row["case"], row["server"])].append(row)
    merged = {}
    for key, rows in runs.items():
        m = {k: statistics.median(r[k] for r in rows) for k in NUMERIC}
        # Failures are summed, never hidden by a median; the noise warnings use the worst run.
        m["non_ok"] = sum(r["non_ok"] for r in rows)
        m["socket_errors"] = sum(r["socket_errors"] for r in rows)
        m["server_cores_min"] = min(r["server_cores"] for r in rows)
        m["wrk_cores_max"] = max(r["wrk_cores"] for r in rows)
        m["other_cores_max"] = max(r["other_cores"] for r in rows)
        m["server_waited_max"] = max(r["server_waited"] for r in rows)
        m["reps"] = len(rows)
        m["case"] = key[2]
        merged[key] = m
    return merged


def k(n):
    return f"{n / 1000:.1f}k"


def ms(us):
    return f"{us / 1000:.2f}"


def warnings(mode, by_server):
    out = []
    for server, m in by_server.items():
        if m["non_ok"]:
            out.append(f"**BROKEN: {server} answered {m['non_ok']:.0f} "
                       f"{'non-403' if m['case'] == 'forged' else 'non-2xx'}**")
        if m["socket_errors"]:
            out.append(f"{server}: {m['socket_errors']:.0f} socket errors")
        if mode == "split" and m["wrk_cores_max"] > WRK_LIMIT:
            out.append(f"wrk at {m['wrk_cores_max']:.2f} of its core against {server}: wrk may be the limit")
    # Noise: how long the servers' threads waited for a CPU, and (split) how much of their core
    # they got; one line for the case.
    waited = [m["server_waited_max"] for m in by_server.values()]
    got = [m["server_cores_min"] for m in by_server.values()]
    if max(waited) > WAITED or (mode == "split" and min(got) < SATURATED):
        text = f"noisy: the servers waited {min(waited):.2f}-{max(waited):.2f} s/s for a CPU"
        if mode == "split":
            text += f" and used {min(got):.2f}-{max(got):.2f} of their core"
        out.append(text)
    return "; ".join(out)


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def detail_tables(data):
    groups = sorted({(mode, conns) for mode, conns, _, _ in data},
                    key=lambda g: (g[0] != "split", g[1]))
    for mode, conns in groups:
        print(f"\n### {mode}, c{conns}\n")
        print("| case | nginx rps | hlsgate rps | floor rps | hlsgate/nginx | hlsgate/floor "
              "| p50 ms nginx / hlsgate | p99 ms nginx / hlsgate "
              "| CPU µs/req nginx / hlsgate (/ floor) | CPU hlsgate/nginx | warnings |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for case in CASES:
            by_server = {s: data[(mode, conns, case, s)] for s in ("nginx", "hlsgate", "floor")
                         if (mode, conns, case, s) in data}
            if not by_server:
                continue
            n, h, f = (by_server.get(s) for s in ("nginx", "hlsgate", "floor"))
            rps = [k(x["rps"]) if x else "" for x in (n, h, f)]
            cpu = " / ".join(f"{x['cpu_us_per_req']:.1f}" for x in (n, h, f) if x)
            lat50 = f"{ms(n['p50_us'])} / {ms(h['p50_us'])}" if n and h else ""
            lat99 = f"{ms(n['p99_us'])} / {ms(h['p99_us'])}" if n and h else ""
            print(f"| {case} | {rps[0]} | {rps[1]} | {rps[2]} "
                  f"| {ratio(h and h['rps'], n and n['rps'])} "
                  f"| {ratio(h and h['rps'], f and f['rps']) if f else ''} "
                  f"| {lat50} | {lat99} | {cpu} | {ratio(h and h['cpu_us_per_req'], n and n['cpu_us_per_req'])} "
                  f"| {warnings(mode, by_server)} |")


def issue_table(data, mode, conns):
    rows = [(case, data.get((mode, conns, case, "nginx")), data.get((mode, conns, case, "hlsgate")))
            for case in CASES]
    rows = [r for r in rows if r[1] and r[2]]
    if not rows:
        return
    print(f"\n### The issue's table: {mode} mode, c{conns}\n")
    print(f"| case ({mode}, c{conns}, 10 000 distinct signed URLs) | nginx | hlsgate | ratio (rps) "
          "| server CPU per request (hlsgate vs nginx) |")
    print("|---|---|---|---|---|")
    for case, n, h in rows:
        print(f"| {CASES[case]} | {k(n['rps'])} rps | {k(h['rps'])} | **{h['rps'] / n['rps']:.2f}×** "
              f"| {h['cpu_us_per_req']:.1f} µs vs {n['cpu_us_per_req']:.1f} |")
    for case in ("1k", "forged"):
        f = data.get((mode, conns, case, "floor"))
        h = data.get((mode, conns, case, "hlsgate"))
        n = data.get((mode, conns, case, "nginx"))
        if f and h and n:
            print(f"| floor (minimal hyper), {CASES[case]} | | {k(f['rps'])} (floor) "
                  f"| floor/nginx {f['rps'] / n['rps']:.2f}×, hlsgate/floor {h['rps'] / f['rps']:.2f}× "
                  f"| floor {f['cpu_us_per_req']:.1f} µs |")


def goals(data):
    def get(case, conns, server, mode="split"):
        return data.get((mode, conns, case, server))

    lines = []

    def goal(text, case, least, conns=64, versus="nginx"):
        h, o = get(case, conns, "hlsgate"), get(case, conns, versus)
        if not (h and o):
            return
        v = h["rps"] / o["rps"]
        by_cpu = o["cpu_us_per_req"] / h["cpu_us_per_req"]
        lines.append(f"- {'met' if v >= least else '**not met**'}: {text}: {v:.2f}× by requests/s "
                     f"({by_cpu:.2f}× by CPU per request: {versus} {o['cpu_us_per_req']:.1f} µs, "
                     f"hlsgate {h['cpu_us_per_req']:.1f} µs)")

    goal("forged ≥ 1.0× nginx (split c64)", "forged", 1.0)
    goal("1 KiB ≥ 1.3× nginx (split c64)", "1k", 1.3)
    goal("stretch: 1 KiB ≥ 0.8× the floor (split c64)", "1k", 0.8, versus="floor")
    goal("playlist ≥ 0.7× nginx (split c64)", "playlist", 0.7)
    for case in ("256k", "1m", "segments"):
        for conns in (64, 256):
            goal(f"{case} ≥ 1.0× nginx (split c{conns})", case, 1.0, conns)
        n, h = get(case, 256, "nginx"), get(case, 256, "hlsgate")
        if n and h:
            ok = h["p99_us"] <= n["p99_us"]
            lines.append(f"- {'met' if ok else '**not met**'}: {case} p99 no worse than nginx's "
                         f"(split c256): {ms(h['p99_us'])} ms vs {ms(n['p99_us'])} ms")
    if lines:
        print("\n### Goals (issue 10) in this run\n")
        print("Judged by requests/s, as the issue states them. The CPU ratio in brackets is "
              "nginx's (or the floor's) CPU per request / hlsgate's: in split mode, when the servers "
              "use their whole core, the two agree; on a busy machine the CPU ratio is the steadier "
              "figure; where they differ widely, the servers were not CPU-bound.\n")
        print("\n".join(lines))


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    data = load(sys.argv[1])
    print("## Load run")
    if len(sys.argv) == 3:
        print("\n```\n" + open(sys.argv[2]).read().rstrip() + "\n```")
    reps = {m["reps"] for m in data.values()}
    print(f"\nMedian of {'/'.join(str(n) for n in sorted(reps))} run(s) per row. rps: requests per "
          "second; CPU µs/req: server user+system CPU (all threads and worker processes) / requests; "
          "ratios > 1 favour hlsgate.")
    detail_tables(data)
    modes = sorted({(mode, conns) for mode, conns, _, _ in data}, key=lambda g: (g[0] != "split", g[1]))
    for mode, conns in modes:
        issue_table(data, mode, conns)
    goals(data)


if __name__ == "__main__":
    main()
