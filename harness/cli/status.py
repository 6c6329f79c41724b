"""`harness status STUDY`: which runs are done, running (where, since when), failed (why) or pending."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.store import RunStore

EXAMPLE = """example:
  python -m harness status studies/default"""
HELP = "show a study's runs: done, running (where, since when), failed (reason), pending"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", help="a study folder (the --out of `harness run`)")
    p.add_argument("--stale-after", type=float, default=600.0, metavar="SECONDS",
                   help="a claim without a heartbeat for this long counts as abandoned (default 600)")
    p.add_argument("--json", action="store_true",
                   help="print the runs as JSON on stdout (finished fine-tunes with steps, epochs, stop reason and "
                        "converged)")


def runs(store: RunStore) -> list[dict]:
    """One row per run of the study: its state and, for running or failed runs, where, since when and why."""
    from harness.analysis import training_summary

    rows = []
    for name in store.read_study()["runs"]:
        state = store.state(name)
        row = {"run": name, "state": state.state, "detail": ""}
        claim = store.read_claim(name)
        if state.state == "done":
            try:
                train = json.loads((store.folder(name) / "status.json").read_text()).get("train")
            except (OSError, ValueError):
                train = None
            if train:  # fine-tuned runs: steps run, why they stopped, whether they converged
                summary = training_summary(train)
                row.update({k: summary[k] for k in ("steps", "epochs", "stop_reason", "converged")})
        if state.state in ("done", "failed"):
            if state.state == "failed":
                row["detail"] = state.reason.strip().splitlines()[-1] if state.reason.strip() else "unknown"
        elif claim is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(claim.get("started", 0)))
            where = f"{claim.get('owner', '?')} (host {claim.get('host', '?')}, pid {claim.get('pid', '?')})"
            if claim["stale"]:
                row.update(state="abandoned", detail=f"{where} since {since}: {claim['why']}; the next run takes it over")
            else:
                row.update(state="running", detail=f"{where} since {since}, heartbeat {claim['heartbeat']:.0f} s ago")
        elif state.state == "corrupt":
            row["detail"] = state.reason
        rows.append(row)
    return rows


def execute(args: argparse.Namespace, console: Console) -> int:
    store = RunStore(Path(args.study), args.stale_after)
    rows = runs(store)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    counts = {state: sum(r["state"] == state for r in rows)
              for state in ("done", "running", "failed", "pending", "abandoned", "corrupt")}
    summary = Table("state", "runs", title=f"study {escape(str(store.root))}")
    for state, count in counts.items():
        if count or state in ("done", "pending"):
            summary.add_row(state, str(count))
    Console().print(summary)
    unfinished = [r for r in rows if r.get("converged") is False]
    if unfinished:
        Console().print(f"{len(unfinished)} finished runs did not converge (at the cap while still improving, "
                        "diverged, or a fixed schedule that ended first): "
                        + ", ".join(escape(r["run"]) for r in unfinished[:5]) + (", ..." if len(unfinished) > 5 else ""))
    details = [r for r in rows if r["state"] not in ("done", "pending")]
    if details:
        table = Table("run", "state", "where / why")
        for r in details:
            table.add_row(escape(r["run"]), r["state"], escape(r["detail"]))
        Console().print(table)
    return 0
