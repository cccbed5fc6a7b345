#!/usr/bin/env bash
# The simulation figures the README quotes, from one release build, in one run, sweeps only (a
# single run's per-10,000 figures rest on a handful of jobs):
#   1. the headline sweep: SEEDS seeds x 20 instances x 1 day, default faults, timed;
#   2. the heavy-fault sweep: HEAVY_SEEDS seeds of the tests' heavy-fault world (crates/sim/tests/
#      sim.rs `small`: 30 instances, 2 days, heavy Auto Scaling, IMDS, agent, runner, spot and GitHub
#      faults); `simulate` has no preset for it, so the flags are spelled out below. Run at the
#      defaults (W0 and W1 re-queued after 60 s, W2 lost, deletes refused while a job is assigned),
#      with `--imds-lag 10`, fully pessimistic (`--unacquired lost --release-while-assigned
#      accepted`: every window lost, deletes accepted), and with W2 re-queued after the lease;
#   3. the IMDS-lag sweep (0 to 30 s), SEEDS/10 seeds x 20 instances x 1 day each;
#   4. demand scaling: the idle alarms against demand scaling (the sweep's), and demand scaling
#      lowering the desired capacity against picking its victims (`--demand-scale-in victims`),
#      HEAVY_SEEDS seeds x 20 instances x 1 day at --imds-lag 0 and 2.
# Every table has one row per strategy: runner-lifecycle (the agent's default: JIT), -unguarded (the
# same without the handover guard), -persistent, -once, -demand (JIT under demand scaling),
# source-pr and naive, all on the same worlds. Rates carry a 95% Poisson (Garwood) interval on the
# count of jobs killed, computed here from the counts, so that older binaries' JSON reads too.
# Usage: bench/sim_figures.sh [SEEDS [HEAVY_SEEDS]]   (defaults 10000 and 1000)
#        SIM_BIN=path/to/runner-lifecycle bench/sim_figures.sh ...   (an older build: no build step;
#        rows whose flags it does not know say so)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SIM_BIN:-}" ]; then
  cargo build --quiet --release --bin runner-lifecycle
fi
bin="${SIM_BIN:-${CARGO_TARGET_DIR:-target}/release/runner-lifecycle}"
seeds="${1:-10000}"
heavy_seeds="${2:-1000}"
lag_seeds=$(( seeds / 10 > 0 ? seeds / 10 : 1 ))
heavy=(--instances 30 --days 2 --throttle-rate 0.05 --error-rate 0.02 --imds-outages-per-day 2
  --agent-crashes-per-day 2 --runner-crashes-per-day 0.5 --spot-interruptions-per-day 0.5
  --throttle-episodes-per-day 2 --stop-path-failure-rate 0.01 --github-error-rate 0.02
  --github-rate-limit-episodes-per-day 2)
out="${SIM_FIGURES_OUT:-/tmp/sim_figures}"
mkdir -p "$out"

summary() {
  python3 -c '
import json, math, sys

def cdf(k, m):
    if m <= 0: return 1.0
    t = -m; tot = t; lm = math.log(m)
    for i in range(1, k + 1):
        t += lm - math.log(i)
        a, b = max(tot, t), min(tot, t)
        tot = a + math.log1p(math.exp(b - a))
    return min(1.0, math.exp(tot))

def bisect(lo, hi, below):
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if below(mid) else (lo, mid)
    return (lo + hi) / 2

def ci(k):
    # Exact (Garwood) 95% interval on a Poisson count; Wilson-Hilferty past 1,000.
    z = 1.959963984540054
    if k > 1000:
        wh = lambda n, z: n * (1 - 1 / (9 * n) + z / (3 * math.sqrt(n))) ** 3
        return wh(k, -z), wh(k + 1, z)
    hi = bisect(k, k + 10 * math.sqrt(k) + 10, lambda m: cdf(k, m) > 0.025)
    lo = 0.0 if k == 0 else bisect(0, k, lambda m: cdf(k - 1, m) > 0.975)
    return lo, hi

r = json.load(sys.stdin)
cols = ("strategy", "killed", "per 10k scale-ins [95% CI]", "per 1M jobs [95% CI]", "W0/W1/W2/W3",
        "idle/next race", "idle s/scale-in", "end->serving p50/p95", "ASG/job", "GitHub/job", "after pick",
        "scale-ins", "jobs", "requeued", "violations")
print("  %-28s%8s%30s%32s%16s%15s%16s%21s%9s%11s%11s%11s%11s%10s%11s" % cols)
for s in r["strategies"]:
    k, si, jobs = s["jobs_killed_by_stop"], s["scale_ins"], s["jobs_total"]
    lo, hi = ci(k)
    per_si = lambda x: x * 1e4 / si if si else 0.0
    per_job = lambda x: x * 1e6 / jobs if jobs else 0.0
    w = s.get("jobs_killed_in_window")
    w = "/".join(str(x) for x in w) if w else "-"
    print("  %-28s%8d%30s%32s%16s%15s%16.1f%21s%9.2f%11.2f%11d%11d%11d%10d%11d" % (s["name"], k,
          "%.2f [%.2f, %.2f]" % (per_si(k), per_si(lo), per_si(hi)),
          "%.2f [%.2f, %.2f]" % (per_job(k), per_job(lo), per_job(hi)), w,
          "%d/%d" % (s["jobs_killed_idle_listener_race"], s["jobs_killed_next_job_race"]),
          s["idle_wait_s_per_scale_in"],
          "%.1f / %.1f" % (s["job_end_to_serving_p50_s"], s["job_end_to_serving_p95_s"]),
          s["asg_calls_per_job"], s["github_calls_per_job"], s["jobs_dispatched_after_pick"], si, jobs,
          s["jobs_requeued"], s["violations"]))
'
}

scaling() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
cols = ("strategy", "scaling", "queue wait p50/p95 s", "instance-h", "idle instance-h", "killed", "scale-ins",
        "victims picked/refused/terminated")
print("  %-28s%13s%22s%12s%17s%8s%11s%36s" % cols)
for s in r["strategies"]:
    v = "%s/%s/%s" % (s.get("victims_picked", "-"), s.get("victims_refused", "-"), s.get("victims_terminated", "-"))
    print("  %-28s%13s%22s%12.0f%17.0f%8d%11d%36s" % (s["name"], s["scaling"],
          "%.1f / %.1f" % (s["queue_wait_p50_s"], s["queue_wait_p95_s"]), s["instance_hours"],
          s["idle_instance_hours"], s["jobs_killed_by_stop"], s["scale_ins"], v))
'
}

timed() {
  local start end
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  python3 -c "print(f'  wall: {$end - $start:.1f} s on $(nproc) cores')"
}

# Run simulate with the given flags and print the summary; a binary that lacks a flag says so.
row() {
  local file="$1"; shift
  if "$bin" simulate "$@" --json > "$file" 2> "$file.err"; then
    summary < "$file"
  elif grep -q "unexpected argument\|invalid value" "$file.err"; then
    echo "  (this binary does not know these flags: $*)"
  else
    summary < "$file"
    sed 's/^/  /' "$file.err" | tail -3
  fi
}

echo "== 1. sweep: simulate --seeds $seeds --instances 20 --days 1"
timed row "$out/sweep.json" --seeds "$seeds" --instances 20 --days 1

echo "== 2. heavy-fault sweep: simulate --seeds $heavy_seeds ${heavy[*]}"
timed row "$out/heavy.json" --seeds "$heavy_seeds" "${heavy[@]}"
echo " the same with --imds-lag 10"
row "$out/heavy_lag10.json" --seeds "$heavy_seeds" "${heavy[@]}" --imds-lag 10
echo " fully pessimistic: every window lost, deletes accepted while assigned (--unacquired lost --release-while-assigned accepted)"
row "$out/heavy_pessimistic.json" --seeds "$heavy_seeds" "${heavy[@]}" --unacquired lost --release-while-assigned accepted
echo " every window lost, deletes refused (--unacquired lost)"
row "$out/heavy_lost.json" --seeds "$heavy_seeds" "${heavy[@]}" --unacquired lost
echo " W2 re-queued when its lease lapses (--handover-w2 requeue:600)"
row "$out/heavy_lease.json" --seeds "$heavy_seeds" "${heavy[@]}" --handover-w2 requeue:600

echo "== 3. IMDS lag sweep: simulate --seeds $lag_seeds --instances 20 --days 1 --imds-lag L"
for lag in 0 2 5 10 20 30; do
  echo " --imds-lag $lag"
  row "$out/lag$lag.json" --seeds "$lag_seeds" --instances 20 --days 1 --imds-lag "$lag"
done

echo "== 4. demand scaling"
echo " idle alarms against demand scaling (the sweep of section 1)"
scaling < "$out/sweep.json"
for lag in 0 2; do
  for mode in desired victims; do
    echo " --seeds $heavy_seeds --instances 20 --days 1 --imds-lag $lag --strategy runner-lifecycle-demand --demand-scale-in $mode"
    if "$bin" simulate --seeds "$heavy_seeds" --instances 20 --days 1 --imds-lag "$lag" \
        --strategy runner-lifecycle-demand --demand-scale-in "$mode" --json > "$out/demand_${mode}_$lag.json" 2>/dev/null; then
      summary < "$out/demand_${mode}_$lag.json"
      scaling < "$out/demand_${mode}_$lag.json"
    elif [ "$mode" = desired ]; then
      "$bin" simulate --seeds "$heavy_seeds" --instances 20 --days 1 --imds-lag "$lag" \
        --strategy runner-lifecycle-demand --json > "$out/demand_${mode}_$lag.json" || true
      summary < "$out/demand_${mode}_$lag.json"
      scaling < "$out/demand_${mode}_$lag.json"
    else
      echo "  (this binary has no --demand-scale-in)"
    fi
  done
done
