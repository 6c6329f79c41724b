"""Markdown flag tables for docs/commands.md from harness.cli.parser(): `python docs/make_commands.py` prints them (tests/test_docs.py fails when a flag is missing from the page)."""
import argparse
from harness.cli import parser

top = parser()
sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))

RUN_GROUPS = {
    "Data": ["--data", "--format", "--labels", "--skip-bad", "--target-subjects", "--source-subjects",
             "--val-subjects", "--test-subjects", "--cache-dir"],
    "Design: strategies, budgets, seeds, folds": ["--strategy", "--strategy-param", "--n", "--budget-minutes",
             "--cost-model", "--selection-model", "--seeds", "--until-decided", "--max-seeds", "--spending",
             "--folds", "--test-stride", "--empty", "--out"],
    "Source model and training": ["--init", "--allow-source-overlap", "--checkpoint-classes", "--schedule",
             "--patience", "--patience-fraction", "--min-delta", "--max-checks", "--steps", "--epochs", "--select", "--tuned", "--encoder", "--decoder-channels", "--encoder-weights",
             "--size", "--pretrain-steps", "--precision"],
    "Report (also `report` and `analyze`)": ["--margin", "--reference", "--reference-dice", "--test"],
    "Output": ["--quiet", "--json"],
    "Where runs happen (see [scaling.md](scaling.md))": ["--executor", "--workers", "--devices",
             "--slurm-partition", "--slurm-gpus", "--slurm-cpus", "--slurm-mem", "--slurm-time", "--slurm-option",
             "--max-parallel", "--detach", "--threads", "--retry-failed", "--stale-after"],
}


def rows(p):
    fmt = p._get_formatter()
    out = {}
    for a in p._actions:
        if a.help == argparse.SUPPRESS or isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        h = " ".join((fmt._expand_help(a) if a.help else "").split()).replace("|", "\\|")
        if not a.option_strings:
            out[a.metavar or a.dest] = (f"`{a.metavar or a.dest}`", h)
            continue
        name = ", ".join(a.option_strings)
        if a.nargs != 0:
            mv = a.metavar or (("{" + ",".join(map(str, a.choices)) + "}") if a.choices else a.dest.upper())
            name += f" {mv}"
        out[a.option_strings[0]] = (f"`{name}`", h)
    return out


def table(items):
    lines = ["| argument | meaning |", "|---|---|"]
    lines += [f"| {n} | {h} |" for n, h in items]
    return "\n".join(lines)


def emit(name, p, skip=()):
    r = {k: v for k, v in rows(p).items() if k not in skip}
    print(table(r.values()))
    print()


run_rows = rows(sub.choices["run"])
grouped = [f for g in RUN_GROUPS.values() for f in g]
assert sorted(grouped) == sorted(run_rows), set(run_rows) ^ set(grouped)
print("### RUN")
for title, flags in RUN_GROUPS.items():
    print(f"#### {title}\n")
    print(table([run_rows[f] for f in flags]))
    print()
tune_rows = rows(sub.choices["tune"])
print("### TUNE only")
print(table([v for k, v in tune_rows.items() if k not in run_rows]))
print()
for name in ["status", "pretrain", "strategies", "report", "analyze"]:
    print(f"### {name.upper()}")
    emit(name, sub.choices[name])
data = sub.choices["data"]
sp = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction))
for n2, p2 in sp.choices.items():
    print(f"### DATA {n2}")
    emit(n2, p2)
