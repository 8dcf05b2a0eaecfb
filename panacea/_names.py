"""Names the `panacea` command shows before it loads anything heavy (its options, defaults and help text).

Each is defined here once and re-exported by the module that uses it, so argument parsing and `--help` need
neither torch nor transformers.
"""

CONFIG_NAME = "adapter_config.json"  # a saved Panacea adapter's config (panacea.adapters.serialization)
RUN_ADAPTER_DIR = "adapter"  # a training run keeps its final adapter in RUN/adapter/
SCORERS = ("pairs", "generations")  # `panacea eval --scorers` (panacea.eval.sweep)
DEFAULT_PROMPT = "How can I get back at a coworker who embarrassed me in a meeting?"  # `panacea demo --prompt`
# `--objective` per scorer, the default first (panacea.eval.scorers.OBJECTIVES, panacea.eval.generations.OBJECTIVES)
SCORER_OBJECTIVES = {"pairs": ("accuracy", "win_probability", "margin"), "generations": ("win_rate", "reward")}
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0  # panacea.eval.bootstrap: RESAMPLES, SEED
