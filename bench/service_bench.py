#!/usr/bin/python3
"""Benchmark of the service's reaction times and heartbeat cost (issue 6), on real daemons started
on 127.0.0.1 by tests/integration/harness.py:

  1. worker death -> job RUNNING again: 3 workers, a 2-rank pipeline job of service_test's tiny
     model (checkpoint every 10 steps); once it trained past a committed checkpoint, rank 1's
     worker gets kill -9. Measured from the kill: the worker declared dead, the job RECOVERING,
     RUNNING again on a new epoch (re-planned), every new rank acknowledged (its dsv3-train process
     started), and the first step of the new epoch. Once per --leases value (the daemons' default
     3000 ms and the tests' 300 ms).
  2. worker attach -> first step in the job: a job on 2 workers (pipeline 2 x expert-parallel 2,
     max_workers 4) gets 2 more; measured: attach -> grow_pending, attach -> grew (which waits
     for the next checkpoint), checkpoint commit -> grew, grew -> first step of the grown epoch,
     attach -> first step. The checkpoint interval in seconds is printed beside them.
  3. coordinator CPU per heartbeat: a coordinator with no worker for --cpu_seconds (the baseline),
     then with K idle workers for as long; CPU from /proc/<pid>/stat (utime + stime) and, finer,
     the sum of /proc/<pid>/task/*/schedstat. Workers heartbeat every lease/3 (worker/worker.cc),
     so K x T / (lease/3) heartbeats reach it; the TCP data segments the coordinator received
     (ss -ti, data_segs_in) are counted as a check of that figure.

Sources of the times, named in the output: "event" = the job's own events (time_unix_ms, stamped by
the coordinator when it changes the state); "watch" = the first `dsv3ctl watch JOB --json` update
showing the state, stamped by this script on receipt (the coordinator pushes every status change;
resolution: the stream's latency, a few ms); "workers" = `dsv3ctl workers --json` (attached_unix_ms,
last_heartbeat_unix_ms); "kill" = this script's clock just before kill(2). All on one host clock.

  /usr/bin/python3 bench/service_bench.py [--reps 3] [--leases 3000,300] [--workers 16,64]
      [--cpu_lease_ms 300] [--cpu_seconds 20] [--cpu_windows 3] [--sections recovery,grow,cpu]
      [--json OUT]

Prints a markdown table per section at the end. Not a test: it checks only that each run did what
it measures (the job recovered / grew and trained on), not the losses (service_test does that).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

# Set in main() once DSV3_BIN_DIR is known (harness reads it when imported).
Cluster = JobWatch = wait_for = binary = tiny_spec = rank0_metrics = None


def now_ms():
    return time.time() * 1000.0


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def log(*args):
    print(*args, flush=True)


class Watch:
    """harness.JobWatch, with each update reduced to what the phases need, stamped in ms."""

    def __init__(self, cluster, job_id):
        self.stream = JobWatch(cluster, job_id)

    @property
    def samples(self):
        return [(t * 1000.0, {
            "state": st.get("state"), "epoch": int(st.get("epoch", "0") or 0),
            "step": int(st.get("step", "0") or 0),
            "ckpt": int(st.get("last_checkpoint_step", "-1") or -1),
            "ranks": [r.get("state", "") for r in st.get("workers", [])],
            "names": [r.get("worker_name", "") for r in st.get("workers", [])]})
            for t, st in list(self.stream.updates)]

    def first_after(self, pred, after):
        for t, s in self.samples:
            if t >= after and pred(s):
                return t, s
        return None, None

    def last_before(self, t_ms):
        best = None
        for t, s in self.samples:
            if t <= t_ms:
                best = s
        return best

    def close(self):
        self.stream.close()


def events_of(cluster, job_id):
    evs = cluster.ctl_json("status", job_id, "--events=10000")["events"]
    for e in evs:
        e["t"] = int(e["time_unix_ms"])
        e["epoch"] = int(e.get("epoch", "0") or 0)
    return evs


def first_event(evs, after, kinds, epoch=None, contains=None):
    for e in evs:
        if e["t"] >= after and e["kind"] in kinds and (epoch is None or e["epoch"] == epoch) \
                and (contains is None or contains in e["message"]):
            return e
    return None


def d(a, b):
    """b - a in ms, or None when either is missing."""
    return None if a is None or b is None else b - a


# --- 1. worker death -> RUNNING again -----------------------------------------------------------

RECOVERY_PHASES = [
    # key, label, source
    ("kill_lasthb", "last heartbeat received before the kill -> kill", "workers"),
    ("dead", "kill -> worker declared dead (`worker_lost`)", "event"),
    ("survivor_failed", "kill -> the survivor's rank fails by itself (`rank_failed`)", "event"),
    ("recovering", "kill -> job RECOVERING", "event"),
    ("recovering_watch", "kill -> job RECOVERING", "watch"),
    ("running", "kill -> job RUNNING again: first re-plan (`replanned`)", "event"),
    ("running_watch", "kill -> job RUNNING on a new epoch", "watch"),
    ("running_final", "kill -> the re-plan that trained (its epoch took the first step)",
     "event"),
    ("ack_first", "that re-plan -> first rank acknowledged (process started)", "event"),
    ("ack_last", "that re-plan -> last rank acknowledged (a survivor's old rank stops first)",
     "event"),
    ("ack_to_step", "last acknowledged -> first step reported (start, rendezvous, checkpoint "
     "load, 1 step)", "event"),
    ("first_step_seconds", "  of which the first step's own compute time", "metrics"),
    ("step", "**kill -> first step of the new epoch** (`training`)", "event"),
    ("step_watch", "kill -> job step past the resume step on the new epoch", "watch"),
    ("all_training", "kill -> every rank TRAINING", "watch"),
]


def recovery_trial(lease_ms, steps, every):
    with Cluster(lease_ms=lease_ms) as c:
        spec = tiny_spec(c.dir, "recover", steps,
                         {"pipeline_parallel": 2, "micro_batches": 4, "schedule": "dualpipe",
                          "min_workers": 2, "max_workers": 2}, every_steps=every)
        c.start_coordinator()
        for w in ("w1", "w2", "w3"):
            c.start_worker(w)
        wait_for(lambda: len(c.workers_by_name()) == 3, 20, "three workers")
        rc, out, err = c.submit(spec)
        if rc != 0:
            raise RuntimeError(f"submit failed: {err}")
        job = out.strip()
        watch = Watch(c, job)
        try:
            # As service_test: a committed checkpoint (step 2 x every) and training past it.
            st = wait_for(lambda: (lambda s: s if int(s.get("last_checkpoint_step", "0") or 0)
                                   >= 2 * every and int(s.get("step", "0") or 0)
                                   >= 2 * every + every // 2 else None)(
                c.ctl_json("status", job)), 180, "a committed checkpoint", interval=0.05)
            old_epoch = int(st["epoch"])
            victim = next(r["worker_name"] for r in st["workers"] if r["rank"] == "1")
            proc = c.workers[victim]
            t_kill = now_ms()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            at_kill = watch.last_before(t_kill) or {}

            def trained_again():
                evs = events_of(c, job)
                if any(e["kind"] in ("failed", "cancelled", "succeeded") for e in evs):
                    raise RuntimeError(f"job ended: {[e['message'] for e in evs][-3:]}")
                return first_event(evs, t_kill, ("training",)) and evs
            evs = wait_for(trained_again, 3 * lease_ms / 1000 + 180, "the first step after "
                           "the kill", interval=0.1)
            step_ev = first_event(evs, t_kill, ("training",))
            new_epoch = step_ev["epoch"]
            # Let the watch stream see every rank TRAINING (rank 1's first step report).
            wait_for(lambda: watch.first_after(lambda s: s["epoch"] == new_epoch and s["ranks"] and all(
                r == "TRAINING" for r in s["ranks"]), t_kill)[0], 30, "every rank TRAINING",
                interval=0.05)
            workers = c.workers_by_name()
            t = {}
            t["kill_lasthb"] = t_kill - int(workers[victim]["last_heartbeat_unix_ms"])
            dead = first_event(evs, t_kill, ("worker_lost",), contains=victim)
            t["dead"] = d(t_kill, dead and dead["t"])
            failed = first_event(evs, t_kill, ("rank_failed",), epoch=old_epoch)
            t["survivor_failed"] = d(t_kill, failed and failed["t"])
            rec = first_event(evs, t_kill, ("worker_lost", "rank_failed"))
            t["recovering"] = d(t_kill, rec and rec["t"])
            t["recovering_watch"] = d(t_kill, watch.first_after(
                lambda s: s["state"] == "RECOVERING", t_kill)[0])
            replans = [e for e in evs if e["t"] >= t_kill and e["kind"] == "replanned"]
            first_replan = replans[0] if replans else None
            final_replan = next((e for e in replans if e["epoch"] == new_epoch), None)
            t["running"] = d(t_kill, first_replan and first_replan["t"])
            t["running_watch"] = d(t_kill, watch.first_after(
                lambda s: s["state"] == "RUNNING" and s["epoch"] > old_epoch, t_kill)[0])
            acks = [e["t"] for e in evs if e["kind"] == "acknowledged" and e["epoch"] == new_epoch]
            base = final_replan and final_replan["t"]
            t["running_final"] = d(t_kill, base)
            t["ack_first"] = d(base, min(acks) if acks else None)
            t["ack_last"] = d(base, max(acks) if acks else None)
            t["ack_to_step"] = d(max(acks) if acks else None, step_ev["t"])
            t["step"] = d(t_kill, step_ev["t"])
            t["all_training"] = d(t_kill, watch.first_after(
                lambda s: s["epoch"] == new_epoch and s["ranks"] and all(
                    r == "TRAINING" for r in s["ranks"]), t_kill)[0])
            resume = next((s["step"] for _, s in watch.samples if s["epoch"] == new_epoch), None)
            t["step_watch"] = d(t_kill, watch.first_after(
                lambda s: s["epoch"] == new_epoch and resume is not None and s["step"] > resume,
                t_kill)[0])
            try:
                final = c.ctl_json("status", job)
                m = rank0_metrics(c, final, new_epoch)
                t["first_step_seconds"] = m[min(m)]["seconds"] * 1000 if m else None
                resumed_at = min(m) - 1 if m else None
            except (AssertionError, KeyError, ValueError):
                t["first_step_seconds"], resumed_at = None, None
            placements = {}
            for _, smp in watch.samples:
                if smp["epoch"] > old_epoch and smp["names"]:
                    placements.setdefault(smp["epoch"], smp["names"])
            info = {"lease_ms": lease_ms, "victim": victim, "old_epoch": old_epoch,
                    "placements": placements,
                    "new_epoch": new_epoch, "replans": len(replans),
                    "recovery_event": rec and rec["kind"],
                    "survivor_failed_in": None if failed is None else (
                        "a collective, then the 2 s post-mortem window"
                        if "post-mortem" in failed["message"] else "a pipeline send/recv"
                        if "send_recv" in failed["message"] else "?"),
                    "step_at_kill": at_kill.get("step"), "ckpt_at_kill": at_kill.get("ckpt"),
                    "resumed_at": resumed_at,
                    "events": [(e["t"] - t_kill, e["epoch"], e["kind"], e["message"][:400])
                               for e in evs if e["t"] >= t_kill - 50 and e["kind"] != "checkpoint"]}
            c.ctl("cancel", job)
            return t, info
        finally:
            watch.close()


# --- 2. worker attach -> first step --------------------------------------------------------------

GROW_PHASES = [
    ("spawn_attach", "worker process started -> attached (the later of the two)", "workers"),
    ("pending", "attach -> `grow_pending`", "event"),
    ("ckpt_wait", "attach -> the checkpoint the job grows at", "event"),
    ("ckpt_grew", "checkpoint committed -> `grew` (re-planned on 4 workers)", "event"),
    ("grew", "attach -> `grew`", "event"),
    ("ack_last", "`grew` -> last rank acknowledged (old ranks stop first: SIGTERM, finish the "
     "step, checkpoint)", "event"),
    ("grew_step", "`grew` -> first step of the grown epoch", "event"),
    ("step", "**attach -> first step in the job** (`training`)", "event"),
    ("all_training", "attach -> every rank TRAINING", "watch"),
    ("ckpt_interval", "checkpoint interval before the attach (every_steps x step time)", "event"),
    ("step_time", "step time on 2 ranks before the attach", "event"),
]


def grow_trial(lease_ms, steps, every):
    with Cluster(lease_ms=lease_ms) as c:
        spec = tiny_spec(c.dir, "grow", steps,
                         {"pipeline_parallel": 2, "expert_parallel": 2, "micro_batches": 4,
                          "schedule": "dualpipe", "min_workers": 2, "max_workers": 4},
                         every_steps=every)
        c.start_coordinator()
        for w in ("w1", "w2"):
            c.start_worker(w)
        wait_for(lambda: len(c.workers_by_name()) == 2, 20, "two workers")
        rc, out, err = c.submit(spec)
        if rc != 0:
            raise RuntimeError(f"submit failed: {err}")
        job = out.strip()
        watch = Watch(c, job)
        try:
            # Attach half-way between two checkpoints, after two have been committed (so the
            # interval is measured on the 2-rank layout): the expected wait is half an interval.
            target = 2 * every + every // 2
            wait_for(lambda: (lambda s: s["state"] == "RUNNING" and s["step"] >= target)(
                watch.samples[-1][1]) if watch.samples else False, 300, f"step {target}",
                interval=0.01)
            t_spawn = now_ms()
            for w in ("w3", "w4"):
                c.start_worker(w)

            def grew_and_trained():
                evs = events_of(c, job)
                if any(e["kind"] in ("failed", "cancelled", "succeeded") for e in evs):
                    raise RuntimeError(f"job ended: {[e['message'] for e in evs][-3:]}")
                g = first_event(evs, t_spawn, ("grew",))
                return g and first_event(evs, t_spawn, ("training",), epoch=g["epoch"]) and evs
            evs = wait_for(grew_and_trained, 300, "the grown epoch's first step", interval=0.1)
            grew = first_event(evs, t_spawn, ("grew",))
            epoch = grew["epoch"]
            wait_for(lambda: watch.first_after(lambda s: s["epoch"] == epoch and len(s["ranks"]) == 4
                                         and all(r == "TRAINING" for r in s["ranks"]),
                                         t_spawn)[0], 30, "every rank TRAINING", interval=0.05)
            workers = c.workers_by_name()
            t_attach = max(int(workers[w]["attached_unix_ms"]) for w in ("w3", "w4"))
            ckpts = [e for e in evs if e["kind"] == "checkpoint" and e["epoch"] == epoch - 1
                     and e["t"] < t_spawn]
            gaps = [b["t"] - a["t"] for a, b in zip(ckpts, ckpts[1:])]
            ckpt_step = int(grew["message"].split("at the checkpoint at step ")[1].split(" ")[0]
                            .rstrip(";"))
            grow_ckpt = next((e for e in evs if e["kind"] == "checkpoint"
                              and e["message"].startswith(f"step {ckpt_step} committed")), None)
            pending = first_event(evs, t_spawn, ("grow_pending",))
            step_ev = first_event(evs, t_spawn, ("training",), epoch=epoch)
            acks = [e["t"] for e in evs if e["kind"] == "acknowledged" and e["epoch"] == epoch]
            t = {
                "spawn_attach": t_attach - t_spawn,
                "pending": d(t_attach, pending and pending["t"]),
                "ckpt_wait": d(t_attach, grow_ckpt and grow_ckpt["t"]),
                "ckpt_grew": d(grow_ckpt and grow_ckpt["t"], grew["t"]),
                "grew": grew["t"] - t_attach,
                "ack_last": d(grew["t"], max(acks) if acks else None),
                "grew_step": step_ev["t"] - grew["t"],
                "step": step_ev["t"] - t_attach,
                "all_training": d(t_attach, watch.first_after(
                    lambda s: s["epoch"] == epoch and len(s["ranks"]) == 4 and all(
                        r == "TRAINING" for r in s["ranks"]), t_spawn)[0]),
                "ckpt_interval": statistics.median(gaps) if gaps else None,
                "step_time": statistics.median(gaps) / every if gaps else None,
            }
            info = {"lease_ms": lease_ms, "every_steps": every, "grew_at_step": ckpt_step,
                    "epoch": epoch,
                    "events": [(e["t"] - t_attach, e["epoch"], e["kind"], e["message"][:400])
                               for e in evs if e["t"] >= t_spawn - 50 and e["kind"] != "checkpoint"]}
            c.ctl("cancel", job)
            return t, info
        finally:
            watch.close()


# --- 3. coordinator CPU per heartbeat ------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def schedstat_cpu_s(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def data_segs_in(port):
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    total = 0
    for tok in out.split():
        if tok.startswith("data_segs_in:"):
            total += int(tok.split(":")[1])
    return total


def measure_cpu(pid, seconds, port, worker_pids=()):
    s0, p0, w0, n0, t0 = stat_cpu_s(pid), schedstat_cpu_s(pid), \
        sum(stat_cpu_s(p) for p in worker_pids), data_segs_in(port), time.monotonic()
    time.sleep(seconds)
    s1, p1, w1, n1, t1 = stat_cpu_s(pid), schedstat_cpu_s(pid), \
        sum(stat_cpu_s(p) for p in worker_pids), data_segs_in(port), time.monotonic()
    return {"wall": t1 - t0, "stat": s1 - s0, "sched": p1 - p0, "wcpu": w1 - w0,
            "segs": n1 - n0}


def cpu_trial(lease_ms, worker_counts, seconds, windows):
    rows = []
    with Cluster(lease_ms=lease_ms) as c:
        c.start_coordinator()
        pid = c.coordinator.pid
        time.sleep(1)
        base = measure_cpu(pid, seconds, c.port)
        rows.append({"lease_ms": lease_ms, "workers": 0, **base, "heartbeats": 0,
                     "load": load()})
        log(f"  lease {lease_ms} ms, 0 workers: coordinator {base['sched'] * 1e3:.1f} ms CPU "
            f"in {base['wall']:.1f} s (load {load()})")
        started = 0
        for k in sorted(worker_counts):
            for i in range(started, k):
                c.start_worker(f"i{i:03d}")
            started = k
            wait_for(lambda: sum(w["state"] == "idle" for w in c.workers_by_name().values()) == k,
                     60, f"{k} idle workers", interval=0.2)
            time.sleep(max(1.0, 3 * lease_ms / 1000))
            wpids = [p.pid for p in c.workers.values()]
            for _ in range(windows):
                m = measure_cpu(pid, seconds, c.port, wpids)
                hb = k * m["wall"] / (lease_ms / 3 / 1000)
                rows.append({"lease_ms": lease_ms, "workers": k, **m, "heartbeats": hb,
                             "load": load()})
                log(f"  lease {lease_ms} ms, {k} workers: coordinator {m['sched'] * 1e3:.1f} ms "
                    f"CPU in {m['wall']:.1f} s, ~{hb:.0f} heartbeats, {m['segs']} data segments "
                    f"in (load {load()})")
            alive = sum(w["state"] == "idle" for w in c.workers_by_name().values())
            if alive != k:
                raise RuntimeError(f"{k - alive} of {k} workers were lost during the measurement")
    base = rows[0]
    for r in rows:
        r["base_rate"] = base["sched"] / base["wall"]
        extra = r["sched"] - r["base_rate"] * r["wall"]
        extra_stat = r["stat"] - base["stat"] / base["wall"] * r["wall"]
        r["us_per_hb"] = extra / r["heartbeats"] * 1e6 if r["heartbeats"] else None
        r["us_per_hb_stat"] = extra_stat / r["heartbeats"] * 1e6 if r["heartbeats"] else None
        r["us_per_seg"] = extra / r["segs"] * 1e6 if r["workers"] and r["segs"] else None
    return rows


# --- report ---------------------------------------------------------------------------------------

def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if abs(v) >= 1000 else f"{v:.0f} ms"


def phase_table(title, phases, runs_by_col, cols):
    lines = [title, "", "| phase | source | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for key, label, source in phases:
        cells = []
        for col in cols:
            vals = [r[key] for r in runs_by_col[col] if r.get(key) is not None]
            if not vals:
                cells.append("-")
            else:
                n = f" (n={len(vals)})" if len(vals) < len(runs_by_col[col]) else ""
                cells.append(f"{fmt_ms(statistics.median(vals))} / {fmt_ms(max(vals))}{n}")
        lines.append(f"| {label} | {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    global Cluster, JobWatch, wait_for, binary, tiny_spec, rank0_metrics
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--bin_dir", default=os.environ.get("DSV3_BIN_DIR",
                                                        os.path.join(ROOT, "build")),
                    help="build tree with coordinator/, worker/, cli/ (default: build)")
    ap.add_argument("--sections", default="recovery,grow,cpu",
                    help="which parts to run (comma-separated: recovery, grow, cpu)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of parts 1 and 2")
    ap.add_argument("--leases", default="3000,300",
                    help="coordinator --lease_ms values for part 1 (default: the daemons' "
                         "3000 and the tests' 300)")
    ap.add_argument("--steps", type=int, default=1500,
                    help="train.steps of the jobs (enough to run ~30-60 s; they are cancelled "
                         "once measured)")
    ap.add_argument("--every_steps", type=int, default=10,
                    help="checkpoint.every_steps of part 1's job")
    ap.add_argument("--grow_every_steps", default="10",
                    help="checkpoint.every_steps of part 2's job; several (e.g. 10,100) show how "
                         "the wait for the checkpoint scales")
    ap.add_argument("--grow_lease_ms", type=int, default=3000, help="lease for part 2")
    ap.add_argument("--workers", default="16",
                    help="numbers of idle heartbeating workers for part 3 (e.g. 16,64)")
    ap.add_argument("--cpu_lease_ms", default="300",
                    help="lease(s) for part 3; workers heartbeat every lease/3")
    ap.add_argument("--cpu_seconds", type=float, default=20, help="measuring window of part 3")
    ap.add_argument("--cpu_windows", type=int, default=3,
                    help="measuring windows per number of workers in part 3")
    ap.add_argument("--json", help="also write the raw measurements here")
    args = ap.parse_args()

    os.environ["DSV3_BIN_DIR"] = os.path.abspath(args.bin_dir)
    import harness
    import service_test
    Cluster, wait_for, binary = harness.Cluster, harness.wait_for, harness.binary
    JobWatch = harness.JobWatch
    tiny_spec, rank0_metrics = service_test.tiny_spec, service_test.rank0_metrics
    for name in ("dsv3-coordinator", "dsv3-worker", "dsv3ctl", "dsv3-train"):
        binary(name)  # fails early when the build is incomplete

    sections = set(args.sections.split(","))
    raw = {"load_start": load(), "nproc": os.cpu_count()}
    log(f"service_bench: {os.cpu_count()} CPUs, load {load()}, binaries in {args.bin_dir}")
    out = []

    if "recovery" in sections:
        leases = [int(x) for x in args.leases.split(",")]
        runs, infos = {}, {}
        for lease in leases:
            col = f"lease {lease} ms"
            runs[col], infos[col] = [], []
            for rep in range(args.reps):
                t, info = recovery_trial(lease, args.steps, args.every_steps)
                runs[col].append(t)
                infos[col].append(info)
                log(f"recovery, lease {lease} ms, run {rep + 1}: kill -> dead {fmt_ms(t['dead'])}, "
                    f"RECOVERING {fmt_ms(t['recovering'])} ({info['recovery_event']}), RUNNING "
                    f"{fmt_ms(t['running'])} ({info['replans']} re-plan(s), the last at "
                    f"{fmt_ms(t['running_final'])}), first step "
                    f"{fmt_ms(t['step'])}; killed at step {info['step_at_kill']}, resumed at "
                    f"{info['resumed_at']} (load {load()})")
                if info["survivor_failed_in"]:
                    log(f"    the survivor's rank failed in {info['survivor_failed_in']}")
                log("    placements after the kill (rank order): " + "; ".join(
                    f"epoch {e}: {', '.join(n)}" for e, n in sorted(info["placements"].items())))
                for ev in info["events"]:
                    log(f"    {ev[0]:+8.0f} ms  epoch {ev[1]}  {ev[2]}: {ev[3]}")
        cols = list(runs)
        for col in cols:
            kinds = [i["recovery_event"] for i in infos[col]]
            log(f"{col}: recovery started by {kinds.count('rank_failed')} x rank_failed (the "
                f"survivor's rank failed first), {kinds.count('worker_lost')} x worker_lost "
                f"(the lease expired first)")
        budget = "3 x lease (declared dead after 3 silent leases): " + ", ".join(
            f"{3 * lease / 1000:g} s" for lease in leases)
        table = phase_table(
            f"Worker kill -9 -> job training again: median / max of {args.reps} runs; 2-rank "
            f"pipeline, checkpoint every {args.every_steps} steps, 3 workers. Detection budget "
            f"{budget}.", RECOVERY_PHASES, runs, cols)
        ratio = ["", "| figure | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        ratio.append("| kill -> first step, median / detection budget (3 x lease) | " + " | ".join(
            f"{statistics.median(r['step'] for r in runs[c]) / (3 * lease):.2f}"
            for c, lease in zip(cols, leases)) + " |")
        for name, budget_s in (("torchrun keep-alive 5 s x 3", 15), ("Ray health check, best",
                                                                     20),
                               ("Ray health check, worst", 55), ("NCCL watchdog", 600)):
            ratio.append(f"| kill -> first step, median / {name} ({budget_s} s, detection only) | "
                         + " | ".join(f"{statistics.median(r['step'] for r in runs[c]) / 1000 / budget_s:.3f}"
                                      for c in cols) + " |")
        starts = ["", "Recovery started by: " + "; ".join(
            f"{c}: {sum(i['recovery_event'] == 'rank_failed' for i in infos[c])} x `rank_failed`,"
            f" {sum(i['recovery_event'] == 'worker_lost' for i in infos[c])} x `worker_lost`"
            for c in cols) + ". (n=k): only k runs had that phase."]
        out.append(table + "\n" + "\n".join(starts + ratio))
        raw["recovery"] = {"runs": runs, "info": infos}

    if "grow" in sections:
        runs, infos = {}, {}
        for every in [int(x) for x in args.grow_every_steps.split(",")]:
            col = f"every {every} steps"
            runs[col], infos[col] = [], []
            for rep in range(args.reps):
                t, info = grow_trial(args.grow_lease_ms, args.steps, every)
                runs[col].append(t)
                infos[col].append(info)
                log(f"grow, checkpoint every {every} steps, run {rep + 1}: attach -> grow_pending "
                    f"{fmt_ms(t['pending'])}, grew {fmt_ms(t['grew'])}, first step "
                    f"{fmt_ms(t['step'])}; checkpoint interval {fmt_ms(t['ckpt_interval'])} "
                    f"(load {load()})")
                for ev in info["events"]:
                    log(f"    {ev[0]:+8.0f} ms  epoch {ev[1]}  {ev[2]}: {ev[3]}")
        out.append(phase_table(
            f"Worker attach -> first step in a running job: median / max of {args.reps} runs; "
            f"pipeline 2 x expert-parallel 2, 2 workers + 2 attached (grows 2 -> 4 ranks), "
            f"lease {args.grow_lease_ms} ms. Times from the attach of the later of the two "
            f"workers.", GROW_PHASES, runs, list(runs)))
        raw["grow"] = {"runs": runs, "info": infos}

    if "cpu" in sections:
        rows = []
        for lease in [int(x) for x in args.cpu_lease_ms.split(",")]:
            rows += cpu_trial(lease, [int(x) for x in args.workers.split(",")], args.cpu_seconds,
                              args.cpu_windows)
        lines = [f"Coordinator CPU with idle heartbeating workers: median (min-max) of "
                 f"{args.cpu_windows} windows of {args.cpu_seconds:g} s per row. CPU from "
                 "/proc/<pid>/task/*/schedstat (/proc/<pid>/stat, 10 ms ticks, agrees within "
                 "a few %); baseline = the same coordinator with no worker, measured first; "
                 "heartbeats = workers x time / (lease/3).", "",
                 "| lease (heartbeat every) | workers | heartbeats/s | coordinator CPU % | "
                 "baseline CPU % | ratio | CPU µs per heartbeat | TCP data segments in/s | "
                 "CPU µs per data segment | workers' CPU % (all) | load |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]

        def mr(vals, f):
            vals = sorted(v for v in vals if v is not None)
            if not vals:
                return "-"
            if len(vals) == 1:
                return format(vals[0], f)
            return (f"{format(statistics.median(vals), f)} ({format(vals[0], f)}-"
                    f"{format(vals[-1], f)})")
        groups = {}
        for r in rows:
            groups.setdefault((r["lease_ms"], r["workers"]), []).append(r)
        for (lease, k), rs in groups.items():
            bpct = 100 * rs[0]["base_rate"]
            pcts = [100 * r["sched"] / r["wall"] for r in rs]
            lines.append(
                f"| {lease} ms ({lease / 3:.0f} ms) | {k} | "
                f"{statistics.median(r['heartbeats'] / r['wall'] for r in rs):.0f} | "
                f"{mr(pcts, '.2f')} | {bpct:.2f} | "
                f"{statistics.median(pcts) / bpct if bpct else float('nan'):.0f}x | "
                f"{mr([r['us_per_hb'] for r in rs], '.0f')} | "
                f"{statistics.median(r['segs'] / r['wall'] for r in rs):.0f} | "
                f"{mr([r['us_per_seg'] for r in rs], '.0f')} | "
                f"{statistics.median(100 * r['wcpu'] / r['wall'] for r in rs):.1f} | "
                f"{rs[-1]['load']} |")
        out.append("\n".join(lines))
        raw["cpu"] = rows

    raw["load_end"] = load()
    log(f"\nload at the end: {load()}\n")
    print("\n\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)


if __name__ == "__main__":
    main()
