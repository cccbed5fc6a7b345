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
print(f"  {\"strategy\":<24}{\"killed/10k scale-ins\":>22}{\"idle s/scale-in\":>17}{\"after pick\":>12}{\"scale-ins\":>11}{\"violations\":>12}")
for s in r["strategies"]:
    print(f"  {s[\"name\"]:<24}{s[\"jobs_killed_by_stop_per_10k_scale_ins\"]:>22.1f}{s[\"idle_wait_s_per_scale_in\"]:>17.1f}{s[\"jobs_dispatched_after_pick\"]:>12}{s[\"scale_ins\"]:>11}{s[\"violations\"]:>12}")
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
