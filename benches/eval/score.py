#!/usr/bin/env python3
"""score.py: the evaluation day's scorer, the END of the measurement.

Replays each export of the day (export.py's pcaps) through `exflow replay` with the flags a user
gives (--inside, --home-country, --watch-country, from labels.json), attributes every alert to a
labelled scenario or benign conversation, and prints per exporter: which scenarios were caught,
false alerts per 10,000 benign conversations, and the rules and benign classes they came from.

    python3 benches/eval/score.py DIR                       # every DIR/*.pcap but day.pcap
    python3 benches/eval/score.py DIR --exports softflowd_ipfix --json result.json
    python3 benches/eval/score.py DIR --alerts-only         # re-score DIR/*.alerts.jsonl
    python3 benches/eval/score.py DIR --lateness            # also: how late each export's records came
    python3 benches/eval/score.py tests/data/eval --alerts-dir /tmp/eval-alerts   # the CI day

Matching (tests/it/eval.rs does the same in Rust; keep them in step):
- An alert's time is [first_seen, event_time]: what it reports on, up to when it was raised (a
  late record raises it late). It is in a scenario's window when it overlaps
  [start - 60 s, end + 3 h].
- An alert belongs to a scenario when its inside address is the scenario's and its outside
  address is one of the scenario's, or (`any_outside`, for per-host rules) its time is in the
  scenario's window.
- A scenario is caught when an alert of one of its `caught_by` rules belongs to it with its
  time in that window; "any" when an alert of any rule does.
- Otherwise the alert belongs to the benign conversation of the same (inside, outside) pair that
  started last before its first_seen (+60 s), or the pair's first; it is a false alert unless its
  rule is in the class's `may` list. An alert that matches nothing is a false alert of class
  "unlabelled".
- False alerts per 10,000 = false alerts / benign conversations * 10,000 (escalations count:
  each is a message an analyst reads).

Records too late: for each export the table also gives the share of its inside<->outside
records that ended more than `flow.max_lateness_s` (3600 s, or the --config file's) before the
newest flow end the export had sent before them, counted here from `exflow decode` as the
README's "Event time" defines it, beside the count `exflow replay` reports as dropped too late
(the two must agree: a mismatch is printed as such). Exports in STRESS are outside the
detection targets and are marked so in the table.
"""
import argparse
import datetime
import glob
import ipaddress
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

WINDOW_BEFORE_S = 60.0
WINDOW_AFTER_S = 3 * 3600.0
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEFAULT_MAX_LATENESS_S = 3600
# Exports that are not what a real exporter sends and stay outside the targets, with why.
STRESS = {
    "pmacct_v9_maxlife1800": "reading a capture, nfprobe never expires an idle flow: only a "
                             "flow's first packet past maxlife exports it, the rest wait for the "
                             "end of the capture, hours late",
}


def addr(text):
    return str(ipaddress.ip_address(text))


def event_seconds(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alert_span(alert):
    return event_seconds(alert["first_seen"]), event_seconds(alert["event_time"])


class Labels:
    def __init__(self, path):
        with open(path) as f:
            self.raw = json.load(f)
        self.scenarios = self.raw["scenarios"]
        for s in self.scenarios:
            s["inside"] = addr(s["inside"])
            s["outside"] = {addr(o) for o in s["outside"]}
        self.pairs = defaultdict(list)      # (inside, outside) -> [(start, class)] in label order
        for inside, outside, _proto, _port, start, _end, cls in self.raw["benign"]:
            self.pairs[(addr(inside), addr(outside))].append((start, cls))
        self.may = {c: set(v["may"]) for c, v in self.raw["benign_classes"].items()}
        self.benign = self.raw["benign_conversations"]

    def in_window(self, s, span):
        first, raised = span
        return first <= s["end"] + WINDOW_AFTER_S and raised >= s["start"] - WINDOW_BEFORE_S

    def attribute(self, alert):
        """("scenario", scenario) | ("benign", class) | ("unlabelled", None)"""
        inside, outside = addr(alert["inside_addr"]), addr(alert["outside_addr"])
        span = alert_span(alert)
        for s in self.scenarios:
            if s["inside"] == inside and (outside in s["outside"] or (s["any_outside"] and self.in_window(s, span))):
                return "scenario", s
        convs = self.pairs.get((inside, outside))
        if not convs:
            return "unlabelled", None
        before = [c for c in convs if c[0] <= span[0] + WINDOW_BEFORE_S]
        return "benign", (max(before, key=lambda c: c[0]) if before else convs[0])[1]


def score(labels, alerts):
    """the result for one export's alerts"""
    caught, anyrule, on_scenario = defaultdict(set), defaultdict(set), defaultdict(Counter)
    false = Counter()
    for a in alerts:
        kind, what = labels.attribute(a)
        if kind == "scenario":
            on_scenario[what["id"]][a["rule"]] += 1
            if labels.in_window(what, alert_span(a)):
                anyrule[what["id"]].add(a["rule"])
                if a["rule"] in what["caught_by"]:
                    caught[what["id"]].add(a["rule"])
        elif kind == "benign":
            if a["rule"] not in labels.may.get(what, ()):
                false[(a["rule"], what)] += 1
        else:
            false[(a["rule"], "unlabelled")] += 1
    n_false = sum(false.values())
    return {
        "alerts": len(alerts),
        "scenarios": {s["id"]: {"caught": sorted(caught[s["id"]]), "any": sorted(anyrule[s["id"]]),
                                "alerts": dict(on_scenario[s["id"]])} for s in labels.scenarios},
        "recall": sum(1 for s in labels.scenarios if caught[s["id"]]) / len(labels.scenarios),
        "false_alerts": n_false,
        "false_per_10k": round(n_false * 10000.0 / labels.benign, 2),
        "false_by_rule_class": {"%s/%s" % k: v for k, v in sorted(false.items(), key=lambda kv: (-kv[1], kv[0]))},
    }


def exflow_binary():
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "exflow")
        if os.path.exists(path):
            return path
    sys.exit("score.py: no target/{release,debug}/exflow: run `cargo build` first, or pass --exflow")


def replay(exflow, labels, pcap, extra):
    args = [exflow, "replay"]
    for net in labels.raw["inside"]:
        args += ["--inside", net]
    for cc in labels.raw["home_countries"]:
        args += ["--home-country", cc]
    for cc in labels.raw["watch_countries"]:
        args += ["--watch-country", cc]
    args += extra + [pcap]
    out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit("score.py: %s failed: %s" % (" ".join(args), out.stderr.strip()))
    summary = [line for line in out.stderr.splitlines() if line.startswith(("decoded:", "dropped:", "alerts:"))]
    dropped = [line for line in summary if line.startswith("dropped:")]
    late_dropped = int(dropped[0].split()[1]) if dropped else None
    return out.stdout, summary, late_dropped


def max_lateness_s(config):
    """flow.max_lateness_s (or its alias flow.late_records_s) of an exflow config file"""
    if not config:
        return DEFAULT_MAX_LATENESS_S
    import tomllib
    with open(config, "rb") as f:
        flow = tomllib.load(f).get("flow", {})
    return int(flow.get("max_lateness_s", flow.get("late_records_s", DEFAULT_MAX_LATENESS_S)))


def lateness(exflow, pcap, inside, max_late_s):
    """How far each inside<->outside record's flow end lies behind the newest flow end the
    export had sent before it (`exflow decode`, in capture order; the exporter clock of the
    README's "Event time", in milliseconds as exflow keeps it): the quantiles in seconds and how
    many lie more than `max_late_s` behind (what exflow drops as too late)."""
    nets = [ipaddress.ip_network(n) for n in inside]
    is_inside = lambda a: any(a in n for n in nets)  # noqa: E731
    out = subprocess.run([exflow, "decode", pcap], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    newest, late, beyond = 0, [], 0
    for line in out.stdout.splitlines():
        r = json.loads(line)
        if is_inside(ipaddress.ip_address(r["src_addr"])) == is_inside(ipaddress.ip_address(r["dst_addr"])):
            continue  # transit or internal: no exporter clock sees it
        end_ms = r["time_flow_end_ns"] // 1_000_000
        if newest and end_ms + max_late_s * 1000 < newest:
            beyond += 1  # dropped, so it does not move the clock either
            late.append((newest - end_ms) / 1000.0)
            continue
        newest = max(newest, end_ms)
        late.append((newest - end_ms) / 1000.0)
    late.sort()
    result = {"records": len(late), "beyond": beyond, "max_lateness_s": max_late_s}
    if late:
        q = lambda f: late[min(len(late) - 1, int(len(late) * f))]  # noqa: E731
        result.update(p50=q(0.5), p90=q(0.9), p99=q(0.99), max=late[-1])
    return result


def lateness_text(late):
    if not late["records"]:
        return "no records"
    return "records %d late by p50 %.0f s, p90 %.0f s, p99 %.0f s, max %.0f s; %d (%.1f%%) more than %d s" % (
        late["records"], late["p50"], late["p90"], late["p99"], late["max"], late["beyond"],
        100.0 * late["beyond"] / late["records"], late["max_lateness_s"])


def late_cell(result):
    late = result.get("lateness")
    if late is None:
        return "-"
    share = 100.0 * late["beyond"] / late["records"] if late["records"] else 0.0
    dropped = result.get("late_dropped")
    if dropped is None or dropped == late["beyond"]:
        return "%.1f%% (%d)" % (share, late["beyond"])
    return "%.1f%% (%d; exflow dropped %d: MISMATCH)" % (share, late["beyond"], dropped)


def table(labels, results):
    names = list(results)
    heads = [n + " (stress)" if n in STRESS else n for n in names]
    lines = ["| scenario | what | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(names)]
    for s in labels.scenarios:
        cells = []
        for n in names:
            r = results[n]["scenarios"][s["id"]]
            if r["caught"]:
                cells.append("**yes** (%s)" % ", ".join(r["caught"]))
            elif r["any"]:
                cells.append("no; other: %s" % ", ".join(r["any"]))
            else:
                cells.append("no")
        lines.append("| %s | %s | %s |" % (s["id"], s["what"], " | ".join(cells)))
    lines.append("| **caught** | of %d scenarios (by a `caught_by` rule) | %s |" % (
        len(labels.scenarios), " | ".join("%d" % round(results[n]["recall"] * len(labels.scenarios)) for n in names)))
    lines.append("| **false alerts** | per 10,000 of %d benign conversations (count) | %s |" % (
        labels.benign, " | ".join("%.1f (%d)" % (results[n]["false_per_10k"], results[n]["false_alerts"]) for n in names)))
    if any("lateness" in results[n] for n in names):
        late_s = next(results[n]["lateness"]["max_lateness_s"] for n in names if "lateness" in results[n])
        lines.append("| **too late** | records more than flow.max_lateness_s (%d s) late, dropped by exflow "
                     "(count) | %s |" % (late_s, " | ".join(late_cell(results[n]) for n in names)))
    sources = sorted({k for n in names for k in results[n]["false_by_rule_class"]},
                     key=lambda k: (-sum(results[n]["false_by_rule_class"].get(k, 0) for n in names), k))
    for k in sources:
        lines.append("| false: %s | rule/benign class | %s |" % (k, " | ".join(
            str(results[n]["false_by_rule_class"].get(k, 0)) for n in names)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="the directory of labels.json and the exports")
    ap.add_argument("--exports", nargs="*", help="export names (default: every *.pcap but day.pcap)")
    ap.add_argument("--exflow", help="the exflow binary (default target/release, else target/debug)")
    ap.add_argument("--config", help="an exflow config file, passed to replay")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--alerts-only", action="store_true", help="score DIR/NAME.alerts.jsonl, do not replay")
    ap.add_argument("--alerts-dir", help="where NAME.alerts.jsonl are written and read (default: DIR)")
    ap.add_argument("--lateness", action="store_true", help="also print how late each export's records came")
    args = ap.parse_args()
    labels = Labels(os.path.join(args.dir, "labels.json"))
    names = args.exports or sorted((os.path.basename(p)[:-5] for p in glob.glob(os.path.join(args.dir, "*.pcap"))
                                    if os.path.basename(p) != "day.pcap"), key=lambda n: (n in STRESS, n))
    if args.alerts_dir:
        os.makedirs(args.alerts_dir, exist_ok=True)
    exflow = args.exflow or (None if args.alerts_only and not args.lateness else exflow_binary())
    extra = ["--config", args.config] if args.config else []
    max_late_s = max_lateness_s(args.config)
    results = {}
    for name in names:
        alerts_path = os.path.join(args.alerts_dir or args.dir, name + ".alerts.jsonl")
        late_dropped = None
        if args.alerts_only:
            with open(alerts_path) as f:
                text = f.read()
        else:
            text, summary, late_dropped = replay(exflow, labels, os.path.join(args.dir, name + ".pcap"), extra)
            with open(alerts_path, "w") as f:
                f.write(text)
            print("%s: %s" % (name, "; ".join(summary)), file=sys.stderr)
        alerts = [json.loads(line) for line in text.splitlines() if line.strip()]
        results[name] = score(labels, alerts)
        if exflow:
            late = lateness(exflow, os.path.join(args.dir, name + ".pcap"), labels.raw["inside"], max_late_s)
            results[name]["lateness"] = late
            if late_dropped is not None:
                results[name]["late_dropped"] = late_dropped
            if args.lateness:
                print("%s: %s" % (name, lateness_text(late)), file=sys.stderr)
    print("%d inside hosts, %d benign conversations, %d scenarios (%s, scale %s)\n" % (
        labels.raw["inside_hosts"], labels.benign, len(labels.scenarios), labels.raw["what"], labels.raw["scale"]))
    print(table(labels, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
