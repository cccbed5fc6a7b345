#!/usr/bin/env bash
# The simulation figures the README quotes, from one release build, in one run:
#   1. the default run (`simulate`: seed 42, 100 instances, 7 days, default faults);
#   2. the headline sweep: 10,000 seeds x 20 instances x 1 day, default faults, timed;
#   3. the IMDS-lag sweep (0 to 30 s) on the default world: jobs dispatched after the pick, jobs
#      killed by the stop per 10,000 scale-ins and idle seconds in Terminating:Wait per scale-in.
# Usage: bench/sim_figures.sh [SEEDS]   (SEEDS for step 2, default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin runner-lifecycle
bin=target/release/runner-lifecycle
seeds="${1:-10000}"

summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
cols = ("strategy", "killed/10k scale-ins", "idle s/scale-in", "after pick", "scale-ins", "violations")
print("  %-24s%22s%17s%12s%11s%12s" % cols)
for s in r["strategies"]:
    print("  %-24s%22.1f%17.1f%12d%11d%12d" % (s["name"], s["jobs_killed_by_stop_per_10k_scale_ins"],
          s["idle_wait_s_per_scale_in"], s["jobs_dispatched_after_pick"], s["scale_ins"], s["violations"]))
'
}

echo "== 1. default run: simulate"
"$bin" simulate --json | summary

echo "== 2. sweep: simulate --seeds $seeds --instances 20 --days 1"
start=$(date +%s.%N)
"$bin" simulate --seeds "$seeds" --instances 20 --days 1 --json | summary
end=$(date +%s.%N)
python3 -c "print(f'  wall: {$end - $start:.1f} s on $(nproc) cores')"

echo "== 3. IMDS lag sweep on the default world"
for lag in 0 2 5 10 20 30; do
  echo " --imds-lag $lag"
  "$bin" simulate --imds-lag "$lag" --json | summary
done
