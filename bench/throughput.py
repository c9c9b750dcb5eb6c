#!/usr/bin/env python3
"""Throughput and peak memory of `pivotwatch ingest` and `pivotwatch detect` on one core.

Usage: throughput.py BIN SIMDIR OUTJSON [--reps 5] [--cpu 0]

SIMDIR holds the output of `pivotwatch simulate` (inventory.csv, conn.log,
simulation.json).  Each command runs under `taskset -c CPU /usr/bin/time -v`;
wall time is taken around the process with a monotonic clock, peak RSS from
/usr/bin/time's "Maximum resident set size".  Medians over the repetitions are
reported.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

TARGET_FLOWS_PER_S = 1_000_000
TARGET_RSS_MB = 300


def run_timed(cmd, stdout_path):
    """Run cmd under /usr/bin/time -v; return (wall_s, max_rss_kb, exit code, stderr text)."""
    full = ["/usr/bin/time", "-v"] + cmd
    with open(stdout_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(full, stdout=out, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    err = proc.stderr.decode("utf-8", "replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    rss_kb = int(m.group(1)) if m else None
    return wall, rss_kb, proc.returncode, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("simdir")
    ap.add_argument("outjson")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cpu", default="0")
    a = ap.parse_args()

    sim = json.load(open(os.path.join(a.simdir, "simulation.json")))
    conn = os.path.join(a.simdir, "conn.log")
    inv = os.path.join(a.simdir, "inventory.csv")
    pin = ["taskset", "-c", a.cpu]
    scratch = os.path.dirname(os.path.abspath(a.outjson))

    # Warm the page cache once so every repetition reads from memory.
    with open(conn, "rb") as f:
        while f.read(1 << 24):
            pass

    ingest, detect = [], []
    failures = []
    for rep in range(a.reps):
        wall, rss, rc, err = run_timed(pin + [a.bin, "ingest", conn, "--json"],
                                       os.path.join(scratch, "ingest.json"))
        if rc != 0:
            failures.append({"command": "ingest", "rep": rep, "exit": rc, "stderr": err[:8000]})
        else:
            summary = json.load(open(os.path.join(scratch, "ingest.json")))
            ingest.append({"wall": wall, "rss_kb": rss, "flows": summary["flows"]})

        wall, rss, rc, err = run_timed(
            pin + [a.bin, "detect", "--inventory", inv, "--flows", conn,
                   "--baseline-until", sim["baseline_until"], "--timings", "--json"],
            os.devnull)
        if rc != 0:
            failures.append({"command": "detect", "rep": rep, "exit": rc, "stderr": err[:8000]})
            continue
        timings = None
        for line in err.splitlines():
            line = line.strip()
            if line.startswith("{") and '"timings"' in line:
                timings = json.loads(line)
        detect.append({"wall": wall, "rss_kb": rss, "flows": timings["flows"],
                       "read_and_featurise_secs": timings["timings"]["read_and_featurise_secs"],
                       "profile_and_score_secs": timings["timings"]["profile_and_score_secs"]})
        print(f"  rep {rep + 1}/{a.reps}: detect {wall:.3f} s", file=sys.stderr)

    med = statistics.median
    res = {"simulation": sim, "reps": a.reps, "cpu": a.cpu,
           "ingest_runs": ingest, "detect_runs": detect, "failures": failures}
    if ingest:
        res["parse_flows_per_s"] = med(r["flows"] / r["wall"] for r in ingest)
        res["parse_wall_s"] = med(r["wall"] for r in ingest)
        res["parse_peak_rss_mb"] = med(r["rss_kb"] / 1024 for r in ingest)
    if detect:
        res["flows"] = detect[0]["flows"]
        res["read_featurise_flows_per_s"] = med(r["flows"] / r["read_and_featurise_secs"] for r in detect)
        res["read_featurise_s"] = med(r["read_and_featurise_secs"] for r in detect)
        res["profile_score_s"] = med(r["profile_and_score_secs"] for r in detect)
        res["end_to_end_flows_per_s"] = med(r["flows"] / r["wall"] for r in detect)
        res["end_to_end_wall_s"] = med(r["wall"] for r in detect)
        res["detect_peak_rss_mb"] = med(r["rss_kb"] / 1024 for r in detect)
    json.dump(res, open(a.outjson, "w"), indent=2)

    def yes(ok):
        return "met" if ok else "not met"

    flows = res.get("flows", ingest[0]["flows"] if ingest else sim["flows"])
    print(f"\n### Throughput ({flows:,} flows, {sim['devices']} devices x {sim['days']} days, "
          f"seed {sim['seed']}; pinned to CPU {a.cpu}; median of {a.reps})\n")
    print("| measure | median | target | status |")
    print("|---|---:|---|---|")
    if ingest:
        print(f"| parse (`ingest --json`) | {res['parse_flows_per_s']:,.0f} flows/s "
              f"({res['parse_wall_s']:.3f} s, {res['parse_peak_rss_mb']:.1f} MiB) | | |")
    if detect:
        print(f"| read + featurise (`detect --timings`) | {res['read_featurise_flows_per_s']:,.0f} flows/s "
              f"({res['read_featurise_s']:.3f} s) | | |")
        print(f"| profile + score (`detect --timings`) | {res['profile_score_s']:.3f} s | | |")
        print(f"| end to end (`detect` process wall time) | {res['end_to_end_flows_per_s']:,.0f} flows/s "
              f"({res['end_to_end_wall_s']:.3f} s) | >= 1,000,000 flows/s on one core | "
              f"{yes(res['end_to_end_flows_per_s'] >= TARGET_FLOWS_PER_S)} |")
        print(f"| peak RSS of `detect` | {res['detect_peak_rss_mb']:.1f} MiB | < 300 MB for 2M flows | "
              f"{yes(res['detect_peak_rss_mb'] < TARGET_RSS_MB)} |")
    else:
        print("| end to end (`detect`) | failed | >= 1,000,000 flows/s on one core | not measured |")
        print("| peak RSS of `detect` | failed | < 300 MB for 2M flows | not measured |")
    if failures:
        print(f"\n{len(failures)} run(s) failed; first failure: `{failures[0]['command']}` "
              f"exit {failures[0]['exit']}:\n")
        lines = [l.rstrip() for l in failures[0]["stderr"].splitlines() if l.strip()]
        keep = [l for i, l in enumerate(lines)
                if "panicked at" in l or (i > 0 and "panicked at" in lines[i - 1])
                or "/work/" in l or l.lstrip().startswith("error")]
        print("```\n" + "\n".join((keep or lines)[:8]) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
