#!/usr/bin/env bash
# The benchmark-size comparison (README "Results at benchmark size"): for configs/NAME.yaml, train and
# evaluate over the λ grid
#   NAME        Panacea + linear scalarisation (the config as it is)
#   NAME-tche   Panacea + Tchebycheff (needs one λ per group of pairs: 4 groups of 2 pairs per dimension)
#   soups-NAME       rewarded soups at Panacea's total steps and tokens (budget split across the m LoRAs)
#   soups-NAME-full  rewarded soups with m× that budget (each LoRA gets Panacea's whole budget)
# then `panacea compare` all four into runs/compare-NAME. Seed 0 (the config's). Every step resumes: a
# finished training is reused, an interrupted one continues from its last checkpoint, and evaluated grid
# points come from the cache — so after an interrupt, run the same command again.
#
#   nohup benchmarks/fronts.sh hh-2d > runs/fronts-hh-2d.log 2>&1 &
#   benchmarks/fronts.sh hh-2d soups-hh-2d        # only the named runs (then compare what is evaluated)
#   EVAL_ARGS="--grid 6" benchmarks/fronts.sh hhc-3d   # extra `panacea eval` arguments, the same for every run
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:?usage: benchmarks/fronts.sh NAME [RUN ...]   (NAME: hh-2d or hhc-3d, a config in configs/)}
shift
config=configs/$name.yaml
panacea=${PANACEA:-.venv/bin/panacea}
[[ -f $config ]] || { echo "fronts.sh: no config $config" >&2; exit 2; }

declare -A settings=(
  [$name]=""
  [$name-tche]="--set scalarization=tche --set preference_sampling=groups --set preference_groups=4 --set micro_batch_size=2"
  [soups-$name]="--set method=soups --set soups_budget=split"
  [soups-$name-full]="--set method=soups --set soups_budget=full"
)
order=("$name" "$name-tche" "soups-$name" "soups-$name-full")
runs=("$@")
((${#runs[@]})) || runs=("${order[@]}")

for run in "${runs[@]}"; do
  [[ -v settings[$run] ]] || { echo "fronts.sh: unknown run $run (one of ${order[*]})" >&2; exit 2; }
  echo "=== $run: train $(date -u +%H:%M:%S)"
  # shellcheck disable=SC2086  # the settings are words on purpose
  "$panacea" train "$config" ${settings[$run]} --set output_dir=runs/$run --resume
  echo "=== $run: eval $(date -u +%H:%M:%S)"
  # shellcheck disable=SC2086
  "$panacea" eval "runs/$run" ${EVAL_ARGS:-}
done

evaluated=()
for run in "${order[@]}"; do
  [[ -f runs/$run/eval/results.json || -d runs/$run/eval/ab ]] && evaluated+=("runs/$run")
done
echo "=== compare ${evaluated[*]} $(date -u +%H:%M:%S)"
"$panacea" compare "${evaluated[@]}" --out "runs/compare-$name"
