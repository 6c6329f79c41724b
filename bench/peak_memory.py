"""Peak memory of a command and its worker processes, counted fairly: the proportional set size (PSS), so
pages the workers share (the memory-mapped dataset, libraries) are split between them, not counted K times.

    python bench/peak_memory.py python -m harness run --strategy ed_es --n 2,5,10

prints the peak of the whole process tree and the largest single process (Linux only: reads /proc).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _pss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main(command: list[str]) -> int:
    process = subprocess.Popen(command)
    peak_total, peak_one, peak_workers = 0.0, 0.0, 0
    while process.poll() is None:
        sizes = [_pss_mib(pid) for pid in _tree(process.pid)]
        peak_total = max(peak_total, sum(sizes))
        peak_one = max(peak_one, max(sizes, default=0.0))
        peak_workers = max(peak_workers, len(sizes))
        time.sleep(0.5)
    print(f"peak memory (PSS): {peak_total:.0f} MiB in all, {peak_one:.0f} MiB the largest process; "
          f"{peak_workers} processes at most", file=sys.stderr)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
