"""Annotation app under load, on SQLite and on PostgreSQL: submit latency, lost and duplicated judgements.

    nice -n 19 .venv/bin/python bench/annotation_load.py [--raters 50] [--closed_loop 20] [--seconds 120]
        [--login_burst 40] [--backends sqlite,postgresql] [--json FILE]

Per backend, the app runs as its own process (``python -m annotation_ui --db ...``, tests/reliability's AppProcess)
and the load generator as another (this script with --generate), so the two never share a CPU's GIL. Phases, in
order, each for --seconds:

* ``think``: --raters simulated raters (one gradio_client login each) read every task for uniform(1, 5) s before
  submitting it;
* ``closed_loop``: --closed_loop raters submit back to back (no think time);
* ``login_burst``: one logged-in rater keeps judging while --login_burst wrong logins (POST /login, other users'
  names) arrive at once.

SQLite is a file in --out; PostgreSQL a throwaway server started for the run (initdb + pg_ctl, tests' PostgresServer)
with its durable defaults (fsync and synchronous commit on). Per phase: acknowledged submissions, per second, p50/p95/
max /submit latency as a rater sees it, errors; per backend: judgements lost (acknowledged, not stored) and duplicated
(stored twice) counted against what the raters were acknowledged. Prints them with the CPU's flags and writes them to
--json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from annotation.conftest import Database, PostgresServer, postgres_missing  # noqa: E402
from reliability.annotation_support import AppProcess, Rater, build_store, percentile  # noqa: E402

from bench.online_rl import cpu_description, recorded_settings  # noqa: E402

THINK_S = (1.0, 5.0)


# --------------------------------------------------------------------------------------------- load generator
def run_phase(raters: list[Rater], seconds: float, think_s: tuple[float, float]) -> dict:
    """The raters judge for ``seconds``; returns their figures (the Sent records stay in each rater)."""
    before = {r.name: len(r.sent) for r in raters}
    stop = threading.Event()
    start = time.monotonic()
    threads = [threading.Thread(target=r.work, args=(stop, start + seconds, think_s), daemon=True) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 150)
    return phase_figures([s for r in raters for s in r.sent[before[r.name]:]], time.monotonic() - start, raters)


def phase_figures(sent: list, elapsed: float, raters: list[Rater]) -> dict:
    latencies = [s.latency_s for s in sent if s.latency_s is not None]
    figures = {"raters": len(raters), "seconds": round(elapsed, 1), "acknowledged": len(latencies),
               "per_s": round(len(latencies) / elapsed, 2), "errors": sum(len(r.errors) for r in raters)}  # fmt: skip
    if latencies:
        figures |= {f"submit_{q}_s": round(percentile(latencies, n), 3) for q, n in (("p50", 50), ("p95", 95))}
        figures["submit_max_s"] = round(max(latencies), 3)
    return figures


def login_burst(url: str, victim: Rater, names: list[str], seconds: float) -> dict:
    """``victim`` judges while one wrong login per name arrives at once (after a second of judging)."""
    import httpx

    def wrong(name: str) -> int:
        return httpx.post(url + "login", data={"username": name, "password": "wrong"}, timeout=120).status_code

    result: dict = {}

    def burst() -> None:
        time.sleep(1)
        start = time.monotonic()
        with ThreadPoolExecutor(len(names)) as pool:
            result["statuses"] = dict(Counter(map(str, pool.map(wrong, names))))
        result["burst_s"] = round(time.monotonic() - start, 2)

    attacker = threading.Thread(target=burst)
    attacker.start()
    figures = run_phase([victim], seconds, (0, 0))
    attacker.join()
    return figures | {"wrong_logins": len(names), **result}


def generate(url: str, names: list[str], args: argparse.Namespace) -> dict:
    """The three phases against the app at ``url``; returns figures and every acknowledged submission."""
    with ThreadPoolExecutor(8) as pool:
        raters = list(pool.map(lambda name: Rater(url, name, seed="bench"), names))
    phases = {
        "think": run_phase(raters[: args.raters], args.seconds, THINK_S),
        "closed_loop": run_phase(raters[: args.closed_loop], args.seconds, (0, 0)),
        "login_burst": login_burst(url, raters[0], names[1 : args.login_burst + 1], args.seconds),
    }
    acknowledged = [[s.submission_id, s.judgement_id] for r in raters for s in r.acknowledged()]
    errors = [e for r in raters for e in r.errors][:10]
    for rater in raters:
        rater.close()
    return {"phases": phases, "acknowledged": acknowledged, "first_errors": errors}


# --------------------------------------------------------------------------------------------- driver
def lost_and_duplicated(db: str, acknowledged: list[list]) -> dict:
    """Acknowledged judgements missing from the database, and submissions or (task, rater) pairs stored twice."""
    database = Database(db)
    try:
        rows = database.rows("select id, submission_id, task_id, user_id from judgements")
    finally:
        database.close()
    stored = {submission: judgement for judgement, submission, _, _ in rows}
    twice = sum(n - 1 for n in Counter(r[1] for r in rows).values())
    twice += sum(n - 1 for n in Counter((r[2], r[3]) for r in rows).values())
    lost = sum(stored.get(submission) != judgement for submission, judgement in acknowledged)
    return {"acknowledged": len(acknowledged), "stored": len(rows), "lost": lost, "duplicated": twice}


def bench_backend(db: str, args: argparse.Namespace, out: Path) -> dict:
    names = [f"r{i:02d}" for i in range(max(args.raters, args.closed_loop, args.login_burst + 1))]
    build_store(db, names, prompts=args.prompts)
    app = AppProcess(db, out / "app.log").start()
    try:
        spec = out / "generate.json"
        spec.write_text(json.dumps({"url": app.url, "names": names}))
        cmd = [sys.executable, __file__, "--generate", str(spec), *forwarded(args)]
        with open(out / "generate.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=3 * args.seconds + 900)
        generated = json.loads((out / "generated.json").read_text())
    finally:
        app.stop()
    return {"phases": generated["phases"], "first_errors": generated["first_errors"],
            **lost_and_duplicated(db, generated["acknowledged"])}  # fmt: skip


def forwarded(args: argparse.Namespace) -> list[str]:
    keys = ("raters", "closed_loop", "login_burst", "seconds")
    return [x for k in keys for x in (f"--{k}", str(getattr(args, k)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=50, help="raters of the think-time phase")
    parser.add_argument("--closed_loop", type=int, default=20, help="raters of the closed-loop phase")
    parser.add_argument("--login_burst", type=int, default=40, help="wrong logins sent at once")
    parser.add_argument("--seconds", type=float, default=120, help="length of each phase")
    parser.add_argument("--prompts", type=int, default=300, help="prompts (2 tasks each, every rater judges all)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-annotation-load"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "annotation_load.json"))
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        spec = json.loads(Path(args.generate).read_text())
        result = generate(spec["url"], spec["names"], args)
        (Path(args.generate).parent / "generated.json").write_text(json.dumps(result))
        return 0
    results = {}
    for backend in args.backends.split(","):
        out = Path(args.out) / backend
        out.mkdir(parents=True, exist_ok=True)
        if backend == "sqlite":
            (out / "annotations.db").unlink(missing_ok=True)
            results[backend] = bench_backend(str(out / "annotations.db"), args, out)
        elif postgres_missing():
            print(f"postgresql: skipped: {postgres_missing()}")
            continue
        else:
            server = PostgresServer(durable=True).start()
            try:
                results[backend] = bench_backend(server.url(server.create_database()), args, out)
            finally:
                server.stop()
        report_backend(backend, results[backend])
    report = {"cpu": cpu_description(), "settings": {**recorded_settings(args), "think_s": THINK_S}, "results": results}
    report["settings"].pop("generate")
    print(f"cpu: {report['cpu']['model']} ({report['cpu']['cores']} cores; {' '.join(report['cpu']['flags']) or 'no avx512/amx'})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"written: {args.json}")
    return 0


def report_backend(backend: str, result: dict) -> None:
    for phase, f in result["phases"].items():
        latency = f"p50 {f.get('submit_p50_s')} s, p95 {f.get('submit_p95_s')} s, max {f.get('submit_max_s')} s"
        extra = f", wrong logins {f['statuses']} in {f['burst_s']} s" if phase == "login_burst" else ""
        print(f"{backend} {phase}: {f['raters']} raters, {f['acknowledged']} submits ({f['per_s']}/s), {latency}, "
              f"errors {f['errors']}{extra}", flush=True)  # fmt: skip
    print(f"{backend}: acknowledged {result['acknowledged']}, stored {result['stored']}, lost {result['lost']}, "
          f"duplicated {result['duplicated']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
