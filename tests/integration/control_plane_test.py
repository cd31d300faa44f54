"""Integration tests of the control plane with real processes on 127.0.0.1: a coordinator, workers
and dsv3ctl. Jobs are placed and their ranks started (each worker runs its rank as a dsv3-train
child process); the coordinator survives kill -9; dead workers are noticed within 3 leases; hostile
input gets clear errors; tokens are enforced; SIGTERM is clean.
Run: DSV3_BIN_DIR=build /usr/bin/python3 -m unittest -v control_plane_test
"""
import json
import os
import signal
import subprocess
import time
import unittest

from harness import Cluster, binary, example_spec, wait_for


def job_status(cluster, job_id):
    return cluster.ctl_json("status", job_id)


def ranks_training(cluster, job_id, count):
    """The job's status once all `count` ranks report training steps (bootstrap is over)."""
    st = job_status(cluster, job_id)
    ranks = st.get("workers", [])
    ok = (st["state"] == "RUNNING" and len(ranks) == count and
          all(r["state"] == "TRAINING" for r in ranks))
    return st if ok else None


def ranks_started(cluster, job_id, count):
    """The job's status once it runs with `count` ranks that all acknowledged and started."""
    st = job_status(cluster, job_id)
    ranks = st.get("workers", [])
    ok = (st["state"] == "RUNNING" and len(ranks) == count and
          all(r["state"] in ("STARTING", "TRAINING") and r["worker_id"] for r in ranks))
    return st if ok else None


class ControlPlaneTest(unittest.TestCase):

    def test_a_job_is_placed_on_two_workers_and_acknowledged(self):
        with Cluster() as c:
            c.start_coordinator()
            c.start_worker("w1")
            c.start_worker("w2")
            wait_for(lambda: len([w for w in c.workers_by_name().values()
                                  if w["state"] == "idle"]) == 2, 20, "two idle workers")
            rc, out, err = c.submit(example_spec(os.path.join(c.dir, "data")))
            self.assertEqual(rc, 0, err)
            job_id = out.strip()
            self.assertEqual(out, job_id + "\n", "submit must print the job id alone")
            st = wait_for(lambda: ranks_started(c, job_id, 2), 20,
                          "both ranks acknowledged")
            self.assertEqual(st["epoch"], "1")
            self.assertIn("2 workers", st["message"])
            for r in st["workers"]:
                self.assertIn("dsv3-train (pid", r["detail"])
            stages = sorted(int(r["pipeline_stage"]) for r in st["workers"])
            self.assertEqual(stages, [0, 1])
            self.assertEqual({r["worker_name"] for r in st["workers"]}, {"w1", "w2"})
            kinds = [e["kind"] for e in st["events"]]
            self.assertEqual(kinds[:2], ["submitted", "placed"])
            self.assertEqual(kinds.count("acknowledged"), 2)
            workers = c.workers_by_name()
            self.assertEqual({workers["w1"]["state"], workers["w2"]["state"]}, {"busy"})
            # The human views work too.
            rc, out, err = c.ctl("status", job_id)
            self.assertEqual(rc, 0, err)
            self.assertRegex(out, "STARTING|TRAINING")
            rc, out, err = c.ctl("jobs")
            self.assertEqual(rc, 0, err)
            self.assertIn(job_id, out)

    def test_the_coordinator_survives_kill_9_and_workers_reattach_by_themselves(self):
        with Cluster() as c:
            c.start_coordinator()
            c.start_worker("w1")
            c.start_worker("w2")
            wait_for(lambda: len(c.workers_by_name()) == 2, 20, "two workers")
            rc, out, err = c.submit(example_spec(os.path.join(c.dir, "data")))
            self.assertEqual(rc, 0, err)
            job_id = out.strip()
            # Running ranks keep training while the coordinator is down; ranks still bootstrapping
            # need its store, so wait until they train.
            before = wait_for(lambda: ranks_training(c, job_id, 2), 60, "training")
            port = c.port
            c.kill(c.coordinator, signal.SIGKILL)
            time.sleep(0.5)  # the workers notice and start retrying
            c.start_coordinator(port=port)
            restored = job_status(c, job_id)
            self.assertEqual(restored["state"], "RUNNING")
            self.assertEqual(restored["epoch"], before["epoch"])
            after = wait_for(lambda: ranks_started(c, job_id, 2), 20,
                             "the job running again with both ranks re-bound")
            self.assertEqual(after["epoch"], before["epoch"], "no re-plan: the same epoch goes on")
            self.assertEqual(after["name"], "brown-tiny")
            self.assertEqual(after["spec"]["train"]["steps"], before["spec"]["train"]["steps"])
            kinds = [e["kind"] for e in c.ctl_json("status", job_id)["events"]]
            for k in ("submitted", "placed", "acknowledged", "coordinator_restarted",
                      "worker_reattached"):
                self.assertIn(k, kinds)
            workers = c.workers_by_name()
            self.assertEqual(workers["w1"]["state"], "busy")
            self.assertEqual(workers["w2"]["state"], "busy")
            self.assertGreaterEqual(float(after["accounting"]["device_hours"]),
                                    float(before["accounting"]["device_hours"]))

    def test_a_killed_worker_is_marked_dead_within_three_leases(self):
        lease = 0.3
        with Cluster(lease_ms=int(lease * 1000)) as c:
            c.start_coordinator()
            c.start_worker("w1")
            c.start_worker("w2")
            rc, out, err = c.submit(example_spec(os.path.join(c.dir, "data")))
            job_id = out.strip()
            wait_for(lambda: ranks_started(c, job_id, 2), 20, "placement")
            killed_at = time.monotonic()
            c.kill(c.workers["w2"], signal.SIGKILL)
            wait_for(lambda: c.workers_by_name()["w2"]["state"] == "dead", 10, "w2 dead",
                     interval=0.02)
            elapsed = time.monotonic() - killed_at
            # 3 leases, plus one scheduler tick (0.1 s) and the polling call's own latency.
            self.assertLess(elapsed, 3 * lease + 0.35, f"w2 marked dead after {elapsed:.2f} s")
            st = wait_for(lambda: (lambda s: s if s["state"] == "RECOVERING" else None)(
                job_status(c, job_id)), 5, "the job recovering")
            self.assertIn("w2", st["message"])
            lost = [r for r in st["workers"] if r["worker_name"] == "w2"]
            self.assertEqual(lost[0]["state"], "LOST")
            # A replacement worker lets the job re-plan at a new epoch.
            c.start_worker("w3")
            st = wait_for(lambda: ranks_started(c, job_id, 2), 20, "re-plan")
            self.assertEqual(st["epoch"], "2")
            self.assertEqual({r["worker_name"] for r in st["workers"]}, {"w1", "w3"})

    def test_malformed_and_hostile_requests_get_clear_errors_and_the_coordinator_keeps_serving(self):
        with Cluster() as c:
            c.start_coordinator()
            data = os.path.join(c.dir, "data")
            bad = os.path.join(c.dir, "bad.json")
            cases = [
                ("{ not json", "JSON"),
                (json.dumps(example_spec(data, **{"train.steps": "ten"})), "train.steps"),
                (json.dumps(example_spec(data, **{"model.hiden_size": 256})), "hiden_size"),
                (json.dumps(example_spec(data, name="x" * (2 << 20))), ""),
                (json.dumps(example_spec(data, **{"parallel.expert_parallel": 3})),
                 "expert_parallel"),
                ("[]", ""),
                ("", ""),
            ]
            for text, needle in cases:
                with open(bad, "w") as f:
                    f.write(text)
                rc, out, err = c.ctl("submit", bad)
                self.assertEqual(rc, 2, f"{text[:60]!r}: rc={rc} err={err}")
                self.assertEqual(out, "")
                self.assertTrue(err.startswith("dsv3ctl: "), err)
                self.assertEqual(err.count("\n"), 1, f"one line expected: {err[:300]!r}")
                self.assertLess(len(err), 2000, "errors must not echo huge input")
                self.assertIn(needle, err)
            rc, out, err = c.ctl("status", "no-such-job")
            self.assertEqual(rc, 1)
            self.assertIn("no-such-job", err)
            garbage = subprocess.run([binary("grpc_garbage_client"), c.address,
                                      "--calls_per_method=15", "--seed=7"],
                                     capture_output=True, text=True, timeout=120)
            self.assertEqual(garbage.returncode, 0, garbage.stdout + garbage.stderr)
            self.assertIsNone(c.coordinator.poll(), "the coordinator must still run")
            rc, out, err = c.submit(example_spec(data))
            self.assertEqual(rc, 0, err)

    def test_a_token_is_required_when_configured(self):
        with Cluster(token="s3cret") as c:
            c.start_coordinator()
            wrong = os.path.join(c.dir, "wrong-token")
            with open(wrong, "w") as f:
                f.write("nope\n")
            rc, out, err = c.ctl("jobs", token_file=wrong)
            self.assertEqual(rc, 1)
            self.assertIn("token", err.lower())
            rc, out, err = c.ctl("jobs")
            self.assertEqual(rc, 0, err)
            c.start_worker("w1", token_file=wrong)
            c.start_worker("w2")
            wait_for(lambda: "w2" in c.workers_by_name(), 20, "w2 with the token attached")
            self.assertEqual(c.workers["w1"].wait(timeout=10), 1,
                             "a worker with a wrong token must exit with an error")
            self.assertNotIn("w1", c.workers_by_name())

    def test_sigterm_stops_the_daemons_cleanly(self):
        with Cluster() as c:
            c.start_coordinator()
            w = c.start_worker("w1")
            wait_for(lambda: c.workers_by_name().get("w1", {}).get("state") == "idle", 20, "w1")
            w.send_signal(signal.SIGTERM)
            self.assertEqual(w.wait(timeout=10), 0)
            wait_for(lambda: c.workers_by_name()["w1"]["state"] == "dead", 5,
                     "w1 detached at once (no lease wait)")
            c.coordinator.send_signal(signal.SIGTERM)
            self.assertEqual(c.coordinator.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main()
