#!/usr/bin/env bash
# The benchmark-size comparison (docs/benchmarks.md): for configs/NAME.yaml, train and
# evaluate over the λ grid
#   NAME        Panacea + linear scalarisation (the config as it is)
#   NAME-tche   Panacea + Tchebycheff (needs one λ per group of pairs: 4 groups of 2 pairs per dimension)
#   soups-NAME       rewarded soups at Panacea's total steps and tokens (budget split across the m LoRAs); from
#                    configs/soups-NAME.yaml where it exists (the baseline's own tuned settings), else NAME's
#   soups-NAME-full  rewarded soups with m× that budget (each LoRA gets Panacea's whole budget)
#   NAME-full   Panacea + linear scalarisation at m× its steps (the budget of soups-NAME-full)
# Seed 0 (the config's). Every step resumes: a finished training is reused, an interrupted one continues
# from its last checkpoint, and evaluated grid points come from the cache — so after an interrupt, run the
# same command again.
#
# Each evaluated run's results (results.json / results.md / front.png, per soups mode; with generation scores also
# answers.md, the answers at the grid's vertices by benchmarks/vertex_answers.py) are published to
# docs/results/NAME/RUN/eval/ and its training record (config.yaml, the per-step log.jsonl, a soups run's
# manifest.json and its members' config and log, the final adapter weights and the last trainer_state.json; no
# optimizer state) to docs/results/NAME/RUN/train/; a run whose folder in runs/ is gone (a fresh machine) is
# restored from there instead of trained again, and `panacea compare` then
# compares every published run of NAME into docs/results/NAME/compare.{md,json,png} (accuracy, the deciding
# objective) and compare-win-probability/ (its smooth companion), and, once soups-NAME-full is published, against it
# too into compare-vs-soups-full/ (NAME-full's own pairing: both at m× the budget). The published files are
# what docs/benchmarks.md and the README report; runs/ (checkpoints, caches) stays out of git. A run published
# earlier (e.g. on another machine) is compared with the new ones without being retrained. A finished training (in
# runs/ or published) is reused only if it was trained with the config the script trains that run with now (checked
# first, by `panacea train --check`); after configs/NAME.yaml changes, move the old run aside, keeping it under
# RUN@LABEL, with benchmarks/retire_run.py NAME RUN LABEL.
#
#   nohup benchmarks/fronts.sh hh-2d > runs/fronts-hh-2d.log 2>&1 &
#   benchmarks/fronts.sh hh-2d soups-hh-2d        # only the named runs (then compare all published ones)
#   EVAL_ARGS="--scorers pairs,generations --max-prompts 100" benchmarks/fronts.sh hh-2d   # extra `panacea eval`
#                                                     # arguments, the same for every run (the grid: the config's
#                                                     # eval_grid); with generations, compare-generations/ too
#   SOUPS_MODES=delta benchmarks/fronts.sh hhc-3d soups-hhc-3d   # evaluate (and publish) only these soups modes
#                                                     # (default "ab delta"; a mode published earlier stays)
#   benchmarks/fronts.sh --train-only hh-2d hh-2d-tche  # train (and publish the training records of) the named
#                                                     # runs, nothing evaluated or compared: a later invocation
#                                                     # without it reuses them and scores them (a run's test numbers
#                                                     # can wait until every config of the comparison is chosen)
#   benchmarks/fronts.sh --save-points hh-2d          # while a job runs: copy the grid points its evaluations have
#                                                     # scored so far to docs/results/NAME/RUN/points/, and a
#                                                     # training's newest checkpoint to RUN/resume/ (commit them)
#
# An evaluation takes hours here (a pairs point ~20 min, a generation point ~22 min on one core) and runs/ does not
# survive a machine change, so the points scored so far can be kept in git: `--save-points` copies every cached
# point of NAME's runs (or of the named ones) to $published/RUN/points/ (the cache's own tree under RUN/eval/; a
# point's file is named by its λ in a folder named by a digest of the scorer's settings and the adapter's weights, so
# a point is only ever read back for the same weights and settings). A later invocation on a fresh machine copies
# them back into the run's cache before it evaluates, and scores only the rest; once a front is published, its saved
# points go (its results.json holds every value; a soups run's shared vertex points once both modes are published).
# A training that may outlast the machine (hh-2d-full's 200 steps take ~4 h here) is kept the same way: `--save-points`
# also copies an unfinished training's newest checkpoint — weights, optimizer state, RNG state, trainer state — with
# its config, data record and log (per member for a soups run) to $published/RUN/resume/, replacing an earlier
# save (each committed save stays in git's history: ~15 MB for hh-2d); a fresh machine's invocation checks it
# against the config, puts it back into $runs_dir and `panacea train --resume` continues from it, to the same weights
# as an uninterrupted run (to rounding on another CPU), and it goes once the training is published.
# Only a run in progress is saved (one whose evaluation has not finished in this runs/ folder). A published front's
# results.json gives back the points it holds whole (the pairs scorer's; the generations' answers are not in it), so
# re-scoring a published run — e.g. its cached answers judged by a changed refusal detector — scores only the rest.
#
# The base model's log-probs on the pairs (benchmarks/reference-logps/: a few KB a set, keyed by the model's
# weights, the pairs and the settings, so a mismatch is recomputed, never reused) are kept in git too: panacea
# reads them from there ($PANACEA_REFERENCE_LOGPS), and the script copies the ones its runs computed into
# panacea's cache back to that folder, so a fresh machine skips that pass (~15 min for hh-2d's 1,600
# training pairs here).
# The generations scorer's reward models and the base model's answers are kept the same way, in
# benchmarks/eval-cache/ (laid out like panacea's cache; $PANACEA_CACHE_SEEDS): ~15 min of base-model passes a
# benchmark on a fresh machine.
# RUNS_DIR (default runs), PUBLISH_DIR (docs/results), REFERENCE_SEED (benchmarks/reference-logps) and
# EVAL_CACHE_SEED (benchmarks/eval-cache) move those folders. PANACEA=echo prints the panacea commands instead of
# running them, but still publishes what $RUNS_DIR already holds: point RUNS_DIR, PUBLISH_DIR, REFERENCE_SEED and
# EVAL_CACHE_SEED at scratch folders for a dry run that writes nothing here (as tests/test_fronts_script.py does).
set -euo pipefail
cd "$(dirname "$0")/.."

save_only=0 train_only=0
case ${1:-} in
  --save-points) save_only=1; shift ;;
  --train-only) train_only=1; shift ;;
esac
name=${1:?usage: benchmarks/fronts.sh [--save-points | --train-only] NAME [RUN ...]   (NAME: hh-2d or hhc-3d, a config in configs/)}
shift
config=configs/$name.yaml
panacea=${PANACEA:-.venv/bin/panacea}
runs_dir=${RUNS_DIR:-runs}
published=${PUBLISH_DIR:-docs/results}/$name
[[ -f $config ]] || { echo "fronts.sh: no config $config" >&2; exit 2; }

# Panacea at m× its steps (m dimensions): the budget soups-NAME-full spends, so "each objective gets 1/m of the
# gradient" is measured, not guessed
full_steps=$("${PYTHON:-.venv/bin/python}" -c 'import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
print(len(config["dimensions"]) * config["max_steps"])' "$config")
declare -A settings=(
  [$name]=""
  [$name-tche]="--set scalarization=tche --set preference_sampling=groups --set preference_groups=4 --set micro_batch_size=2"
  [soups-$name]="--set method=soups --set soups_budget=split"
  [soups-$name-full]="--set method=soups --set soups_budget=full"
  [$name-full]="--set max_steps=$full_steps"
)
order=("$name" "$name-tche" "soups-$name" "soups-$name-full" "$name-full")  # the comparison's row order
runs=("$@")
# With no run named, the two every target of issue 28 reads (Panacea + LS and soups at the same budget) train and
# are scored first, then the descriptive ones: a job cut short leaves the verdicts, not the extras, undone.
((${#runs[@]})) || runs=("$name" "soups-$name" "$name-tche" "soups-$name-full" "$name-full")
read -ra soups_modes <<< "${SOUPS_MODES:-ab delta}"  # the modes a soups run is evaluated in, in order
for mode in "${soups_modes[@]}"; do
  [[ $mode == ab || $mode == delta ]] || { echo "fronts.sh: unknown soups mode $mode in SOUPS_MODES (ab or delta)" >&2; exit 2; }
done
for run in "${runs[@]}"; do
  [[ -v settings[$run] ]] || { echo "fronts.sh: unknown run $run (one of ${order[*]})" >&2; exit 2; }
done

config_for() {  # the config RUN trains from: a soups run reads configs/soups-NAME.yaml where there is one (the
  if [[ $1 == soups-* && -f configs/soups-$name.yaml ]]; then echo "configs/soups-$name.yaml"; else echo "$config"; fi
}  # baseline's own, tuned settings), every other run configs/NAME.yaml; then ${settings[RUN]} on top

copy() {  # copy FILE to TARGET through a temporary file: TARGET is whole or absent, never half-written
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.tmp" && mv "$2.tmp" "$2"
}

copy_new() {  # copy each FILE that DIR does not hold yet into DIR
  local dir=$1 file
  shift
  for file in "$@"; do
    if [[ -f $file && ! -e $dir/${file##*/} ]]; then copy "$file" "$dir/${file##*/}"; fi
  done
}

seed=${REFERENCE_SEED:-benchmarks/reference-logps}
[[ $seed == /* ]] || seed=$PWD/$seed  # absolute: panacea reads it from $PANACEA_REFERENCE_LOGPS
cache_root=${PANACEA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/panacea}  # panacea.base_model.cache_dir
cache=$cache_root/reference-logps
mkdir -p "$cache"
export PANACEA_REFERENCE_LOGPS=$seed${PANACEA_REFERENCE_LOGPS:+:$PANACEA_REFERENCE_LOGPS}  # read where the cache misses
# Likewise the generations scorer's reward models (a linear head, ~20 KB; fitting one runs the base model over 1,000
# responses, ~6-8 min here), the base model's answers (a generation pass over the prompts) and their rewards (a base
# pass over the answers) in a folder laid out like the cache ($PANACEA_CACHE_SEEDS:
# panacea.base_model.cache_seed_dirs), kept the same way.
eval_seed=${EVAL_CACHE_SEED:-benchmarks/eval-cache}
[[ $eval_seed == /* ]] || eval_seed=$PWD/$eval_seed
export PANACEA_CACHE_SEEDS=$eval_seed${PANACEA_CACHE_SEEDS:+:$PANACEA_CACHE_SEEDS}
# Which reference files a run computed: those not in the cache when the run first started, by name (a reference file
# is named by a digest of what it holds and never rewritten; not `find -newer`, which misses a file written within
# the file system's timestamp resolution of the start). The names are kept in $runs_dir/.reference-snapshots/RUN
# until the run is evaluated, so a run interrupted after its reference pass and resumed later (another session)
# still keeps what it computed then.
snapshots=$runs_dir/.reference-snapshots
cache_names() {  # the reference files in the cache, a name a line; then its whole reward models, base answers and
  local file  # their rewards, by their path in the cache (panacea.base_model.seeded_entries, as the validation study)
  for file in "$cache"/*.safetensors; do
    if [[ -f $file ]]; then echo "${file##*/}"; fi
  done
  "${PYTHON:-.venv/bin/python}" -c 'import sys
from pathlib import Path
from panacea.base_model import seeded_entries
for name in sorted(seeded_entries(Path(sys.argv[1]))):
    print(name)' "$cache_root"
}
SNAPSHOT_FORMAT="# cache entries v2"  # v2 lists reward models and base answers (and, since 2026-12-07, their
# rewards: a record of before lists none, so the run keeps every one the cache holds, harmless as each is keyed by
# content) too; a v1 record only reference files
snapshot() {  # record the cache's entries at RUN's first start; a resumed run keeps its first record
  local file=$snapshots/$1
  if [[ -f $file ]]; then return; fi
  mkdir -p "$snapshots"
  { echo "$SNAPSHOT_FORMAT"; cache_names; } > "$file.tmp"
  mv "$file.tmp" "$file"
}
keep_entry() {  # copy the cache entry NAME (a file, or a reward model's folder) into $eval_seed: whole or not at all,
  local name=$1 target=$eval_seed/$1 staging  # and never into or over one another process put there meanwhile
  if [[ -e $target ]]; then return 0; fi
  mkdir -p "$(dirname "$target")"
  staging=$(mktemp -d "$(dirname "$target")/.keep.XXXXXX")
  if cp -r "$cache_root/$name" "$staging/entry" && mv -T "$staging/entry" "$target" 2>/dev/null; then :; fi
  rm -rf "$staging"
}
keep_references() {  # the reference log-probs computed since RUN first started, into $seed; its reward models,
  local name computed=() first  # base answers and their rewards into $eval_seed
  local -A before=()
  IFS= read -r first < "$snapshots/$1" || true
  while IFS= read -r name; do before[$name]=1; done < "$snapshots/$1"
  while IFS= read -r name; do
    if [[ -n ${before[$name]:-} ]]; then continue; fi
    if [[ $name != */* ]]; then
      computed+=("$cache/$name")
    elif [[ $first == "$SNAPSHOT_FORMAT" ]]; then  # a v1 record cannot tell which of these the run computed
      keep_entry "$name"
    fi
  done < <(cache_names)
  copy_new "$seed" "${computed[@]}"
}

# A run records its data files by absolute path (`panacea eval RUN` works from anywhere); a copy of it kept in git
# names those inside this repository relative to its root, where this script runs, so any clone restores it.
relative_data_paths() {  # rewrite so the config.yaml of the run folder DIR and of its soups members
  local file text
  for file in "$1/config.yaml" "$1"/soups/*/config.yaml; do
    if [[ -f $file ]]; then
      text=$(<"$file")
      printf '%s\n' "${text//"$PWD/"/}" > "$file.tmp" && mv "$file.tmp" "$file"  # a literal match: $PWD may hold # or .
    fi
  done
}

publish_training() {  # copy a run's training record and final adapter weights (not its checkpoints' optimizer
  local run=$1 file  # state) to $published/RUN/train/: the config, what it trained on (data.json: counts and
  # digests), the per-step log, a soups manifest, members' configs, data and logs, the final adapter(s) (4.75 MB for
  # hh-2d's Panacea) and the last checkpoint's trainer_state.json (steps, tokens, seconds): a fresh machine re-scores a
  # published run from these without training it again (restore)
  for file in "$runs_dir/$run"/{config.yaml,data.json,log.jsonl,manifest.json} \
              "$runs_dir/$run"/soups/*/{config.yaml,data.json,log.jsonl} \
              "$runs_dir/$run"/adapter/* "$runs_dir/$run"/soups/*/adapter/*; do
    if [[ -f $file ]]; then copy "$file" "$published/$run/train/${file#"$runs_dir/$run"/}"; fi
  done
  relative_data_paths "$published/$run/train"
  local last
  last=$(find "$runs_dir/$run/checkpoints" -maxdepth 2 -name trainer_state.json 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n $last ]]; then copy "$last" "$published/$run/train/${last#"$runs_dir/$run"/}"; fi
}

has_weights() {  # whether the run folder DIR holds a complete training: its final adapter, or a soups run's complete
  local dir=$1  # manifest and the adapter of every member it lists (records published before weights were lack them)
  [[ -f $dir/adapter/adapter_model.safetensors ]] && return 0
  grep -qs '"complete": true' "$dir/manifest.json" || return 1
  "${PYTHON:-.venv/bin/python}" - "$dir" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
members = json.loads((run / "manifest.json").read_text()).get("runs", {})
weights = [run / member["adapter"] / "adapter_model.safetensors" for member in members.values()]
sys.exit(0 if weights and all(file.is_file() for file in weights) else 1)
EOF
}

finished() {  # whether RUN's training is complete in $runs_dir
  has_weights "$runs_dir/$1"
}

restore() {  # a run published with its weights (publish_training) back into $runs_dir when it is not there; else
  local run=$1 record=$published/$1/train saved=$published/$1/resume  # an unfinished one saved by save_training
  if finished "$run"; then return; fi
  if ! has_weights "$record"; then
    if [[ -d $saved && ! -e $runs_dir/$run ]]; then  # `panacea train --resume` continues from its checkpoint
      echo "=== $run: continues from the checkpoint saved in $saved ($(cd "$saved" && find . -path '*/checkpoints/step-*' -prune -printf '%P ' | sed 's/ $//'))"
      place_run "$saved" "$run"
    fi
    return 0
  fi
  [[ ! -e $runs_dir/$run ]] || { echo "fronts.sh: $runs_dir/$run holds an unfinished run; not restoring over it" >&2; return 0; }
  echo "=== $run: restored from $record (its published weights; not trained again)"
  place_run "$record" "$run"
}

place_run() {  # copy the folder FROM to $runs_dir/RUN through a temporary sibling: whole or absent
  mkdir -p "$runs_dir" && rm -rf "$runs_dir/$2.tmp"  # (a copy a killed invocation left)
  cp -r "$1" "$runs_dir/$2.tmp" && mv "$runs_dir/$2.tmp" "$runs_dir/$2"
}

CHECKPOINT_FILES=(trainer_state.json adapter/adapter_model.safetensors optimizer.safetensors optimizer.json
  scheduler.json rng.safetensors)  # what panacea.training.checkpoint.load_checkpoint reads
save_training() {  # while RUN trains: its newest checkpoint (weights, optimizer state, RNG, trainer state) with its
  local run=$1 dir=$runs_dir/$1 target=$published/$1/resume staging folder file newest listed kept=0  # config,
  # data record and log, and for a soups run its manifest and each member's (a finished member's adapter) into
  # $published/RUN/resume/ (~15 MB for hh-2d: commit it), replacing what an earlier save put there; a fresh machine
  # continues from it (restore) rather than from step 0, and it goes once the training is published
  [[ -d $dir ]] || return 0
  if finished "$run"; then return 0; fi
  staging=$(mktemp -d "${TMPDIR:-/tmp}/fronts-resume.XXXXXX")
  for folder in "$dir" "$dir"/soups/*; do  # the run's own files first: a soups manifest before its members
    [[ -d $folder ]] || continue
    local into=$staging/${folder#"$dir"} member=${folder##*/}
    for file in "$folder"/{config.yaml,data.json,log.jsonl,manifest.json} "$folder"/adapter/*; do
      if [[ -f $file ]]; then copy "$file" "$into/${file#"$folder"/}"; fi
    done
    if [[ $folder == "$dir" && -f $into/manifest.json ]]; then  # the members the copied manifest lists as trained
      listed=$("${PYTHON:-.venv/bin/python}" -c 'import json, sys
print(" ".join(json.load(open(sys.argv[1])).get("runs", {})))' "$into/manifest.json")
    fi
    # a finished member the saved manifest lists is skipped when the run resumes; one it does not list yet (it
    # finished after the manifest was copied) resumes from its last checkpoint, so that is kept too
    if [[ $folder != "$dir" && -f $folder/adapter/adapter_model.safetensors && " ${listed:-} " == *" $member "* ]]; then
      kept=1 && continue
    fi
    newest=$(find "$folder/checkpoints" -mindepth 1 -maxdepth 1 -type d -name 'step-*' 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $newest ]] || continue
    # a checkpoint is renamed into place whole, but the trainer prunes the older one once a newer is written, maybe
    # while it is copied: a copy lacking a file load_checkpoint reads is not saved (an earlier save stays)
    mkdir -p "$into/checkpoints" && cp -r "$newest" "$into/checkpoints/" 2>/dev/null || true
    for file in "${CHECKPOINT_FILES[@]}"; do
      if [[ ! -f $into/checkpoints/${newest##*/}/$file ]]; then
        echo "fronts.sh: $newest was pruned while it was copied; $run's training not saved this time" >&2
        rm -rf "$staging" && return 0
      fi
    done
    kept=1
  done
  if ((kept)); then
    relative_data_paths "$staging"
    mkdir -p "$published/$run"
    if rm -rf "$target.tmp" && cp -r "$staging" "$target.tmp" && rm -rf "$target" && mv "$target.tmp" "$target"; then
      echo "=== $run: its training so far saved in $target"
    else
      echo "fronts.sh: could not write $target; $run's training not saved this time" >&2
    fi
  fi
  rm -rf "$staging"
}

copy_points() {  # copy each grid point (a cache folder's .json file) under FROM to the same path under TO where TO
  local from=$1 to=$2 file copied=0  # lacks it; print how many were copied
  while IFS= read -r file; do
    if [[ ! -e $to/$file ]]; then copy "$from/$file" "$to/$file"; copied=$((copied + 1)); fi
  done < <(cd "$from" && find . -path '*cache/*' -name '*.json' -type f | sed 's|^\./||' | sort)
  echo "$copied"
}

save_points() {  # every grid point RUN's evaluations have cached so far, into $published/RUN/points/ (new ones only);
  local run=$1 file dir point  # only while RUN is in progress (its snapshot goes once it is evaluated): a published
  [[ -d $runs_dir/$run/eval && -f $snapshots/$run ]] || return 0  # run's points are not brought back
  copy_points "$runs_dir/$run/eval" "$published/$run/points" > /dev/null
  # not those a published front holds whole (restore_points put them back from its results.json): point by point
  local points
  for file in "$published/$run"/eval/results.json "$published/$run"/eval/*/results.json; do
    if [[ ! -f $file ]] || ! current "$file"; then continue; fi
    dir=${file%/results.json} && dir=${dir#"$published/$run/eval"}
    if ! points=$("${PYTHON:-.venv/bin/python}" -c 'import sys
from panacea._io import read_json
from panacea.eval.sweep import whole_points
print("\n".join(str(path) for path, _, _ in whole_points(read_json(sys.argv[1]))))' "$file"); then
      echo "fronts.sh: could not list the points $file holds; saved them all" >&2
      continue
    fi
    while IFS= read -r point; do
      if [[ -n $point ]]; then rm -f "$published/$run/points$dir/$point"; fi
    done <<< "$points"
  done
  if [[ -d $published/$run/points ]]; then find "$published/$run/points" -depth -type d -empty -delete; fi
}

restore_points() {  # the points saved by save_points (an earlier machine) into RUN's cache, where it lacks them; and
  local run=$1 points=$published/$1/points file target count  # those RUN's published fronts hold whole (the pairs
  if [[ -d $points ]]; then  # scorer's: panacea.eval.sweep.restore_points), so re-scoring a published run (e.g. its
    echo "=== $run: $(copy_points "$points" "$runs_dir/$run/eval") grid point(s) restored from $points"  # answers
  fi  # judged by a changed detector) scores only what its results.json cannot give
  for file in "$published/$run"/eval/results.json "$published/$run"/eval/*/results.json; do
    if [[ ! -f $file ]] || ! current "$file"; then continue; fi
    target=$runs_dir/$run/eval${file#"$published/$run/eval"} && target=${target%/results.json}
    if count=$("${PYTHON:-.venv/bin/python}" -c 'import sys
from panacea.eval.sweep import restore_points
print(restore_points(sys.argv[1], sys.argv[2]))' "$file" "$target"); then
      echo "=== $run: $count grid point(s) restored from $file"
    else
      echo "fronts.sh: no points restored from $file" >&2
    fi
  done
}

drop_points() {  # the saved points of the fronts RUN [in soups MODE] just published: the cache folders its results.json
  local run=$1 dir=${2:+$2/} points=$published/$1/points folder mode all=1  # names (its scorers' points only)
  # The generations' answers go too, though results.json does not hold them: a point is ~8,000 lines, answers to
  # harmful requests among them, kept in the tree only until its numbers are published; a fresh machine generates
  # them again (~20 min a point) only if the front must be scored again (e.g. a detector changed since).
  local results=$runs_dir/$1/eval/${dir}results.json
  [[ -d $points && -f $results ]] || return 0
  while IFS= read -r folder; do
    rm -rf "${points:?}/${dir}cache/$folder"
  done < <("${PYTHON:-.venv/bin/python}" -c 'import json, sys
for scorer in json.load(open(sys.argv[1])).get("scorers", {}).values():
    if scorer.get("cache"):
        print(scorer["cache"].rstrip("/").rsplit("/", 1)[-1])' "$results")
  if [[ $run == soups-* ]]; then  # the vertex points both modes share go once every mode is published on these measures
    for mode in ab delta; do current "$published/$run/eval/$mode/results.json" || all=0; done
    if ((all)); then rm -rf "${points:?}/cache"; fi
  fi
  find "$points" -depth -type d -empty -delete
}

current() {  # whether FILE is a results document `panacea compare` reads: per-item values (scored since 2026-12-04)
  grep -qs '"items"' "$1"
}

publish() {  # copy the evaluation documents (not the cache) of RUN [in soups MODE] to $published/RUN/eval[/MODE]/:
  local run=$1 dir=eval${2:+/$2} file  # only the evaluation just done, never another mode's older one
  for file in "$runs_dir/$run/$dir"/{results.json,results.md,front.png}; do
    if [[ -f $file ]]; then copy "$file" "$published/$run/$dir/${file##*/}"; fi
  done
  # a front scored on the old measures (margins, no intervals) in another mode of RUN goes: it is replaced, not kept
  # beside the new (git keeps it), and compare could not read it
  for file in "$published/$run"/eval/*/results.json; do
    if [[ -f $file && $file != "$published/$run/$dir/results.json" ]] && ! current "$file"; then
      rm -r "${file%/results.json}"
    fi
  done
  # with generation scores, the answers at the vertices too (they live only in runs/' cache): answers.md
  if grep -qs '"generations"' "$runs_dir/$run/$dir/results.json"; then
    "${PYTHON:-.venv/bin/python}" benchmarks/vertex_answers.py "$runs_dir/$run" ${2:+--mode $2} \
      --out "$published/$run/$dir/answers.md" || echo "fronts.sh: no answers.md for $run${2:+ ($2)}" >&2
  fi
}

if ((save_only)); then
  for run in "${runs[@]}"; do
    save_points "$run"
    save_training "$run"
  done
  exit 0
fi

# A finished training is reused (below: "trained already", or restored from its published record) only if it was
# trained with the config this script trains that run with now: after configs/NAME.yaml changes (new defaults, new
# held-out sets or sizes) the old weights would otherwise be scored as the new config's, on the sets the old config
# names. `panacea train --check` compares them (the config's fields; the training data by content where the run
# recorded it, in data.json, since 2026-12-06, else by path only); every run is checked before anything runs, and
# nothing is changed. A run not trained yet is checked the same way where it will train (an unfinished run in
# $runs_dir against its saved config, an absent one as a new run: its config valid, its data readable), so a setting
# the trainer refuses for one run (e.g. an aggregator under Tchebycheff) stops the job now, not after the runs
# before it have trained; and a soups run's own config (configs/soups-NAME.yaml) must train what configs/NAME.yaml
# trains, at its budget (β aside), as `make demo` requires of soups-demo.yaml.
if [[ -f configs/soups-$name.yaml ]]; then
  "${PYTHON:-.venv/bin/python}" -c 'import sys
from pathlib import Path
from panacea.demo import refuse_another_budget
from panacea.training import TrainConfig
try:
    own, path = Path(sys.argv[1]), Path(sys.argv[2])
    refuse_another_budget(own, TrainConfig.from_yaml(own), path, TrainConfig.from_yaml(path))
except ValueError as error:
    sys.exit(f"fronts.sh: {error}")' "configs/soups-$name.yaml" "$config"
else
  for run in "${runs[@]}"; do
    if [[ $run == soups-* ]]; then
      echo "fronts.sh: note: no configs/soups-$name.yaml: the soups runs train from $config, with Panacea's" \
        "learning rate, β and schedule rather than settings of their own" >&2
      break
    fi
  done
fi
places=  # where this invocation's runs and published records lie, for the retire_run command it names
if [[ -n ${RUNS_DIR:-} ]]; then places+="RUNS_DIR=$(printf %q "$runs_dir") "; fi
if [[ -n ${PUBLISH_DIR:-} ]]; then places+="PUBLISH_DIR=$(printf %q "${PUBLISH_DIR}") "; fi
for run in "${runs[@]}"; do
  trained=
  if finished "$run"; then trained=$runs_dir/$run
  elif [[ ! -e $runs_dir/$run ]] && has_weights "$published/$run/train"; then trained=$published/$run/train
  elif [[ ! -e $runs_dir/$run && -d $published/$run/resume ]]; then trained=$published/$run/resume  # restored below
  fi
  if [[ -z $trained ]]; then  # trains later in $runs_dir/$run: its config now
    # shellcheck disable=SC2086
    if ! "$panacea" train "$(config_for "$run")" ${settings[$run]} --set "output_dir=$runs_dir/$run" --resume \
      --check; then
      echo "fronts.sh: $run would not train from $(config_for "$run")${settings[$run]:+ + ${settings[$run]}}" \
        "(above); nothing was trained" >&2
      exit 2
    fi
    continue
  fi
  # shellcheck disable=SC2086
  if ! "$panacea" train "$(config_for "$run")" ${settings[$run]} --set "output_dir=$trained" --resume --check; then
    if [[ $trained == "$published/$run/resume" ]]; then
      echo "fronts.sh: the unfinished training saved in $trained (--save-points) was started with another config" \
        "or data (above); delete that folder to train $run afresh" >&2
      exit 2
    fi
    echo "fronts.sh: the check of $trained against $(config_for "$run")${settings[$run]:+ + ${settings[$run]}} failed" \
      "(above). If it names fields that differ, the run was trained with another config and its weights are not" \
      "this one's: move the old run aside first, keeping it (its runs/ folder, published record and refusal" \
      "labels): ${places}python benchmarks/retire_run.py $name $run LABEL" >&2
    exit 2
  fi
done

for run in "${runs[@]}"; do
  echo "=== $run: train $(date -u +%H:%M:%S)"
  snapshot "$run"
  restore "$run"
  if finished "$run"; then
    echo "=== $run: trained already"
  else
    # shellcheck disable=SC2086  # the settings are words on purpose
    "$panacea" train "$(config_for "$run")" ${settings[$run]} --set "output_dir=$runs_dir/$run" --resume
  fi
  keep_references "$run"
  publish_training "$run"  # at once: an evaluation cut short still leaves the training's record
  rm -rf "${published:?}/$run/resume"  # trained: a checkpoint saved on the way is not needed again
  if ((train_only)); then continue; fi  # its snapshot stays: the evaluation that follows keeps what it computes too
  restore_points "$run"
  modes=("")  # a soups run: one evaluation per interpolation mode, each published as soon as it is done
  if [[ $run == soups-* ]]; then modes=("${soups_modes[@]}"); fi
  for mode in "${modes[@]}"; do
    echo "=== $run: eval ${mode:+$mode }$(date -u +%H:%M:%S)"
    # shellcheck disable=SC2086
    "$panacea" eval "$runs_dir/$run" ${mode:+--soups-mode $mode} ${EVAL_ARGS:-}
    keep_references "$run"
    publish "$run" "$mode"
    drop_points "$run" "$mode"  # its results.json holds every value of those points
  done
  rm -f "$snapshots/$run"  # evaluated: a later evaluation of this run starts a new record
done

if ((train_only)); then exit 0; fi
evaluated=() documents=0 fronts=()  # the runs compared, and their fronts' results files
for run in "${order[@]}"; do
  found=() stale=0
  for file in "$published/$run"/eval/results.json "$published/$run"/eval/*/results.json; do
    if [[ -f $file ]]; then found+=("$file"); current "$file" || stale=1; fi
  done
  if ((stale)); then
    echo "fronts.sh: not compared: $run (scored on the old measures; re-score it: benchmarks/fronts.sh $name $run)" >&2
  elif ((${#found[@]})); then
    evaluated+=("$published/$run") documents=$((documents + ${#found[@]})) fronts+=("${found[@]}")
  fi
done
# a soups run holds one front per interpolation mode; compare needs two fronts
((documents >= 2)) || { echo "fronts.sh: $documents front(s) published in $published: nothing to compare yet" >&2; exit 0; }
baseline=()  # every row's paired difference to rewarded soups at the same budget, with a verdict
if [[ -d $published/soups-$name ]]; then baseline=(--baseline "soups-$name"); fi
scorers=()  # the scorers every compared front was scored with (RL runs: generations only, no pairs)
for scorer in pairs generations; do
  status=0  # 0: every front has it, 10: some front lacks it; anything else: a results file that cannot be read
  "${PYTHON:-.venv/bin/python}" -c 'import json, sys
files = sys.argv[2:]
lacking = [file for file in files if sys.argv[1] not in json.load(open(file)).get("scorers", {})]
if lacking and len(lacking) < len(files):
    print("fronts.sh: not compared on", sys.argv[1] + ": not scored with it:", ", ".join(lacking), file=sys.stderr)
sys.exit(10 if lacking else 0)' "$scorer" "${fronts[@]}" || status=$?
  case $status in
    0) scorers+=("$scorer") ;;
    10) ;;
    *) echo "fronts.sh: cannot read the published results of ${evaluated[*]} (above)" >&2; exit 2 ;;
  esac
done
compare_all() {  # OUT SUB [BASELINE ...]: every front on each objective scored, into OUT (accuracy),
  # OUT/${SUB}win-probability and OUT/${SUB}generations
  local out=$1 sub=$2; shift 2
  if [[ " ${scorers[*]} " == *" pairs "* ]]; then
    "$panacea" compare "${evaluated[@]}" --out "$out" "$@"
    # the smooth bounded companion (docs/algorithms.md §6); defined by each run's β, so runs trained with different
    # β (each method its own tuned one) are not compared on it: compare refuses them (having compared them on
    # accuracy above, a refusal over the pairs settings is β's), which is said, an earlier comparison there removed,
    # and the rest goes on; any other failure stops the script
    local status=0 refused
    refused=$(mktemp)
    "$panacea" compare "${evaluated[@]}" --objective win_probability --out "$out/${sub}win-probability" "$@" \
      2> "$refused" || status=$?
    cat "$refused" >&2
    if ((status == 2)) && grep -q "scored with different 'pairs' settings" "$refused"; then
      rm -rf "${out:?}/${sub}win-probability"
      echo "fronts.sh: not compared on win probability: the runs were trained with different β (above); the" \
        "accuracy and generation comparisons go on" >&2
    elif ((status)); then
      rm -f "$refused"
      exit "$status"
    fi
    rm -f "$refused"
  fi
  if [[ ${EVAL_ARGS:-} == *generations* && " ${scorers[*]} " == *" generations "* ]]; then  # the generation front
    "$panacea" compare "${evaluated[@]}" --scorer generations --out "$out/${sub}generations" "$@"
  fi
}
echo "=== compare ${evaluated[*]} $(date -u +%H:%M:%S)"
((${#scorers[@]})) || echo "fronts.sh: no scorer common to every published front: nothing compared" >&2
compare_all "$published" compare- "${baseline[@]}"
# the m× budget's own pairing (issue 28, item 5: NAME-full against soups at m×), into compare-vs-soups-full/
if [[ " ${evaluated[*]} " == *" $published/soups-$name-full "* ]]; then
  compare_all "$published/compare-vs-soups-full" "" --baseline "soups-$name-full"
fi
