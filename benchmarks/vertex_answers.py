"""What a user sees at each end: a run's answers at every vertex of its grid, to the same few held-out prompts.

`panacea eval --scorers generations` keeps every answer in the run's point cache (RUN/eval/cache/…, in runs/, which
does not survive a machine change) and only the scores in results.json. This script writes the answers at the
grid's vertices to markdown, so the docs can quote them; benchmarks/fronts.sh publishes its output beside each
evaluated run's results.

Which prompts (a fixed rule, so nobody picks the flattering ones): of each named prompt set, the first `--count`
prompts in the order the scorer answered them (the set's file order, after its `--max-prompts` cut). Only benign
sets by default: helpful requests and XSTest's safe questions; the harmful sets' answers stay out of the docs (their
refusal rates are in the results tables).

    python benchmarks/vertex_answers.py runs/hh-2d                       # prints markdown
    python benchmarks/vertex_answers.py runs/soups-hh-2d --mode ab --out answers.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from panacea.eval.generations import PROMPT_SPLITS, load_prompts
from panacea.eval.report import format_preference

from panacea._io import read_json, write_text
from panacea.preferences import is_vertex

BENIGN_SETS = ("helpful_test", "xstest_safe")
MAX_CHARACTERS = 600  # an answer longer than this is cut, with a mark


def vertex_answers(run: Path, *, mode: str | None = None, sets=BENIGN_SETS, count: int = 2, split: str = "test") -> str:
    """Markdown: per prompt set, its first `count` prompts and the answer at every vertex of the run's grid."""
    folder = run / ("eval" if split == "test" else f"eval-{split}")
    results = read_json(folder / (mode or "") / "results.json")
    generations = results["scorers"].get("generations")
    if generations is None:
        raise SystemExit(f"{folder}: no generations scores (run `panacea eval {run} --scorers generations`).")
    cache, dimensions, grid = Path(generations["cache"]), results["dimensions"], results["grid"]
    vertices = [point for point in grid if is_vertex(point)]
    answers = {}
    for vertex in vertices:
        file = cache / ("-".join(f"{weight:.4f}" for weight in vertex) + ".json")
        if not file.is_file():
            raise SystemExit(f"{file}: not cached (the answers live in the evaluating machine's runs/ only).")
        answers[tuple(vertex)] = read_json(file)["responses"]
    known = {prompt_set.name: prompt_set for prompt_set in PROMPT_SPLITS[split].sets}
    lines = [f"# {results['label']}: answers at the vertices ({', '.join(dimensions)})", ""]
    decoding = generations["settings"]["decoding"]
    tokens = f"{decoding.get('max_new_tokens', '?')} new tokens at most"
    by_set = decoding.get("max_new_tokens_by_set", {})
    tokens += "".join(
        f", {cap} for {', '.join(sorted(n for n in by_set if by_set[n] == cap))}"
        for cap in sorted(set(by_set.values()))
    )
    lines.append(
        f"Greedy, as scored ({tokens}); the first "
        f"{count} prompts of each set in the scorer's order; answers over {MAX_CHARACTERS} characters are cut (…)."
    )
    for name in sets:
        if name not in known or name not in next(iter(answers.values())):
            continue
        prompts = {record["id"]: record["prompt"] for record in load_prompts(known[name])}
        for item in next(iter(answers.values()))[name][:count]:
            lines += ["", f"## {name} `{item['id']}`", "", f"> {_quote(prompts[item['id']])}"]
            for vertex, responses in answers.items():
                text = next(response["text"] for response in responses[name] if response["id"] == item["id"])
                lines += ["", f"**λ = {format_preference(vertex)}**: {_quote(_cut(text))}"]
    return "\n".join(lines) + "\n"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARACTERS else text[:MAX_CHARACTERS].rstrip() + " …"


def _quote(text: str) -> str:
    return text.replace("\n", " ⏎ ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="An evaluated run folder (runs/NAME).")
    parser.add_argument("--mode", choices=["ab", "delta"], help="A rewarded-soups run's mode (its eval/MODE/).")
    parser.add_argument("--sets", default=",".join(BENIGN_SETS), help="Prompt sets, comma-separated.")
    parser.add_argument("--count", type=int, default=2, help="Prompts per set.")
    parser.add_argument("--split", default="test", choices=sorted(PROMPT_SPLITS), help="The evaluated split.")
    parser.add_argument("--out", type=Path, help="Write the markdown here (default: print it).")
    args = parser.parse_args(argv)
    text = vertex_answers(args.run, mode=args.mode, sets=args.sets.split(","), count=args.count, split=args.split)
    if args.out is None:
        print(text, end="")
    else:
        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
