"""The warm sandbox of several checkouts side by side: per-job cost, cold vs warm, one run.

    python bench/sandbox_checkouts.py main HEAD [--rounds 8] [--warm 10] [--cold 2]

Each checkout (a directory, or a git ref exported with ``git archive``; bench/checkouts.py)
runs its own sandbox code in a child process that keeps one warm pool (one worker) and one
cold pool (a fresh jail per run). Rounds alternate the checkouts, so both see the same load.
Scripts: an empty one (the pool's own cost), a trivial pandas script, the offline model's
reconciliation script (llm/reference_script.py) over a typical scope (three invoices), and
rules.py over 10,000 invoice lines (bench/sandbox_bench.py's data), each output checked equal
between the checkouts. Prints p50 and p95 wall milliseconds per run and the cold/warm ratio.
``--gap-ms`` leaves the worker idle before each run, as the pipeline's other steps do between
two tickets' sandbox runs (the worker prepares the next job's process meanwhile); 0 runs jobs
back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import checkouts  # noqa: E402
from sandbox_bench import TRIVIAL, invoice_files, percentile  # noqa: E402

from billing_recon.domain import rules  # noqa: E402
from billing_recon.llm.reference_script import SCRIPT  # noqa: E402

CHILD = r"""
import json, sys, time
from pathlib import Path
from billing_recon.sandbox.bwrap import Jail
from billing_recon.sandbox.local import WarmPool
jail = Jail.for_this_python()
pools = {"warm": WarmPool(jail, workers=1), "cold": WarmPool(jail, workers=1, jobs_per_worker=1)}
for line in sys.stdin:
    ask = json.loads(line)
    code = Path(ask["code"]).read_text()
    files = {p.name: p.read_bytes() for p in Path(ask["files"]).iterdir()}
    times, out = [], ""
    for _ in range(ask["runs"]):
        time.sleep(ask["gap"])
        start = time.perf_counter()
        result = pools[ask["pool"]].run(code, files)
        times.append(time.perf_counter() - start)
        if not result.ok:
            raise SystemExit(f"run failed: {result.error} {result.stderr[-500:]}")
        out = result.stdout
    print(json.dumps({"times": times, "stdout": out}), flush=True)
for pool in pools.values():
    pool.close()
"""


class _Checkout:
    """A child process running one checkout's pools, answering one request per line."""

    def __init__(self, links: Path) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BILLING_RECON_", "PYTHONPATH"))}
        env["PYTHONPATH"] = str(links)
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, pool: str, code: Path, files: Path, runs: int, gap: float = 0.0
            ) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"pool": pool, "code": str(code), "files": str(files),
                                          "runs": runs, "gap": gap}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("a checkout's child failed (see its stderr above)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def _scripts(scratch: Path) -> list[tuple[str, Path, Path]]:
    """(label, script file, folder of input files) for each measured script."""
    cases = [("empty script", "pass\n", {}),
             ("trivial pandas script", TRIVIAL, {}),
             ("reference script, 3 invoices", SCRIPT, invoice_files(30, 10)),
             ("rules.py, 10,000 lines", Path(rules.__file__).read_text(encoding="utf-8"),
              invoice_files(10_000, 10))]
    out = []
    for i, (label, code, files) in enumerate(cases):
        folder = scratch / f"case{i}"
        folder.mkdir()
        (folder / "script.py").write_text(code, encoding="utf-8")
        (folder / "files").mkdir()
        for name, data in files.items():
            (folder / "files" / name).write_bytes(data)
        out.append((label, folder / "script.py", folder / "files"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="checkouts: directories or git refs")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warm", type=int, default=10, help="warm runs per round and script")
    parser.add_argument("--cold", type=int, default=2, help="cold runs per round and script")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="idle time before each run, not timed (0: back to back)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-checkouts-") as tmp:
        scratch = Path(tmp)
        children = {}
        for i, spec in enumerate(args.specs):
            folder = scratch / f"variant{i}"
            folder.mkdir()
            children[spec] = _Checkout(checkouts.package_links(checkouts.tree_of(spec, folder),
                                                               folder))
        cases = _scripts(scratch)
        times = {(spec, label, pool): [] for spec in args.specs for label, _, _ in cases
                 for pool in ("warm", "cold")}
        try:
            for label, code, files in cases:  # the first warm run starts the worker: not counted
                outputs = {spec: child.ask("warm", code, files, 1)["stdout"]
                           for spec, child in children.items()}
                if len(set(outputs.values())) != 1:
                    raise SystemExit(f"{label}: the checkouts' outputs differ")
            for round_ in range(args.rounds):
                order = args.specs if round_ % 2 == 0 else list(reversed(args.specs))
                for label, code, files in cases:
                    for spec in order:
                        for pool, runs in (("warm", args.warm), ("cold", args.cold)):
                            answer = children[spec].ask(pool, code, files, runs,
                                                        args.gap_ms / 1000)
                            times[(spec, label, pool)] += answer["times"]
        finally:
            for child in children.values():
                child.close()
    print(f"sandbox per run, {args.rounds} interleaved rounds, {args.gap_ms:g} ms idle before "
          f"each run; load average {os.getloadavg()[0]:.1f}")
    print(f"{'script':<30} {'checkout':<10} {'cold p50':>9} {'warm p50':>9} {'warm p95':>9} "
          f"{'cold/warm':>9}")
    for label, _, _ in cases:
        for spec in args.specs:
            cold, warm = times[(spec, label, "cold")], times[(spec, label, "warm")]
            w50 = percentile(warm, 0.5) * 1000
            c50 = percentile(cold, 0.5) * 1000 if cold else float("nan")
            print(f"{label:<30} {spec:<10} {c50:9.1f} {w50:9.1f} "
                  f"{percentile(warm, 0.95) * 1000:9.1f} {c50 / w50:8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
