#!/usr/bin/env bash
# The simulation figures the README quotes, from one release build, in one run:
#   1. the default run (`simulate`: seed 42, 100 instances, 7 days, default faults);
#   2. the headline sweep: SEEDS seeds x 20 instances x 1 day, default faults, timed;
#   3. the heavy-fault sweep: HEAVY_SEEDS seeds of the tests' heavy-fault world (crates/sim/tests/
#      sim.rs `small`: 30 instances, 2 days, heavy Auto Scaling, IMDS, agent, runner, spot and GitHub
#      faults); `simulate` has no preset for it, so the flags are spelled out below. Run as is, with
#      `--imds-lag 10`, and with `--unacquired requeue:60`;
#   4. the IMDS-lag sweep (0 to 30 s) on the default world;
#   5. issue 12: demand scaling against the idle alarms, both with the agent's default listener.
# Every table has one row per strategy: runner-lifecycle (the agent's default: JIT), -persistent,
# -once, -demand (JIT under demand scaling), source-pr and naive, all on the same worlds.
# Usage: bench/sim_figures.sh [SEEDS [HEAVY_SEEDS]]   (defaults 10000 and 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin runner-lifecycle
bin="${CARGO_TARGET_DIR:-target}/release/runner-lifecycle"
seeds="${1:-10000}"
heavy_seeds="${2:-1000}"
heavy=(--instances 30 --days 2 --throttle-rate 0.05 --error-rate 0.02 --imds-outages-per-day 2
  --agent-crashes-per-day 2 --runner-crashes-per-day 0.5 --spot-interruptions-per-day 0.5
  --throttle-episodes-per-day 2 --stop-path-failure-rate 0.01 --github-error-rate 0.02
  --github-rate-limit-episodes-per-day 2)

summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
cols = ("strategy", "killed/10k", "idle race", "next-job race", "idle s/scale-in", "end->serving p50/p95 s",
        "ASG/job", "GitHub/job", "JIT unused", "after pick", "scale-ins", "violations")
print("  %-28s%11s%10s%14s%16s%24s%9s%11s%11s%11s%11s%11s" % cols)
for s in r["strategies"]:
    print("  %-28s%11.1f%10d%14d%16.1f%24s%9.2f%11.2f%11d%11d%11d%11d" % (s["name"],
          s["jobs_killed_by_stop_per_10k_scale_ins"], s["jobs_killed_idle_listener_race"],
          s["jobs_killed_next_job_race"], s["idle_wait_s_per_scale_in"],
          "%.1f / %.1f" % (s["job_end_to_serving_p50_s"], s["job_end_to_serving_p95_s"]),
          s["asg_calls_per_job"], s["github_calls_per_job"], s["jit_configs_unused"],
          s["jobs_dispatched_after_pick"], s["scale_ins"], s["violations"]))
'
}

scaling() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
cols = ("strategy", "scaling", "queue wait p50/p95 s", "instance-h", "idle instance-h", "killed", "scale-ins")
print("  %-28s%13s%22s%12s%17s%8s%11s" % cols)
for s in r["strategies"]:
    print("  %-28s%13s%22s%12.0f%17.0f%8d%11d" % (s["name"], s["scaling"],
          "%.1f / %.1f" % (s["queue_wait_p50_s"], s["queue_wait_p95_s"]), s["instance_hours"],
          s["idle_instance_hours"], s["jobs_killed_by_stop"], s["scale_ins"]))
'
}

timed() {
  local start end
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  python3 -c "print(f'  wall: {$end - $start:.1f} s on $(nproc) cores')"
}

echo "== 1. default run: simulate"
"$bin" simulate --json | tee /tmp/sim_figures_default.json | summary

echo "== 2. sweep: simulate --seeds $seeds --instances 20 --days 1"
timed bash -c "'$bin' simulate --seeds '$seeds' --instances 20 --days 1 --json > /tmp/sim_figures_sweep.json"
summary < /tmp/sim_figures_sweep.json

echo "== 3. heavy-fault sweep: simulate --seeds $heavy_seeds ${heavy[*]}"
timed bash -c "'$bin' simulate --seeds '$heavy_seeds' ${heavy[*]} --json > /tmp/sim_figures_heavy.json"
summary < /tmp/sim_figures_heavy.json
echo " the same with --imds-lag 10"
"$bin" simulate --seeds "$heavy_seeds" "${heavy[@]}" --imds-lag 10 --json | summary
echo " the same with --unacquired requeue:60 (GitHub offers a job a stopped listener never acquired again)"
"$bin" simulate --seeds "$heavy_seeds" "${heavy[@]}" --unacquired requeue:60 --json | summary

echo "== 4. IMDS lag sweep on the default world"
for lag in 0 2 5 10 20 30; do
  echo " --imds-lag $lag"
  "$bin" simulate --imds-lag "$lag" --json | summary
done

echo "== 5. issue 12: demand scaling against the idle alarms (default run, then the sweep)"
scaling < /tmp/sim_figures_default.json
scaling < /tmp/sim_figures_sweep.json
