"""README's demo numbers against what the demo printed (WORKDIR/numbers.json, from stages/demo_summary.py).

Usage: python stages/demo_readme.py --check WORKDIR   one line: they match, or a warning naming each difference (exit 1)
       python stages/demo_readme.py --write WORKDIR   rewrite README's block with the demo's numbers
README holds the numbers in one block between `<!-- demo-numbers:begin -->` and `<!-- demo-numbers:end -->`:
a fenced block of demo_summary.LINES as the demo prints them. `--readme FILE` reads another README.
"""
from __future__ import annotations

import argparse
import json
import re
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from demo_summary import LINES, render  # noqa: E402

BEGIN, END = "<!-- demo-numbers:begin -->", "<!-- demo-numbers:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"
_NUMBER = {"d": r"-?\d+", "f": r"-?\d+(?:\.\d+)?", "g": r"-?\d+(?:\.\d+)?(?:e-?\d+)?"}


class BlockError(ValueError):
    """README's block is missing or does not have the demo's lines."""


def _pattern(template: str) -> re.Pattern[str]:
    parts, seen = [], set()
    for literal, name, spec, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name:  # a name printed twice must read the same both times
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{_NUMBER[spec[-1]]})")
            seen.add(name)
    return re.compile("".join(parts))


def parse_lines(lines: list[str]) -> dict[str, str]:
    """Every number of the demo's lines, as printed, by name."""
    if len(lines) != len(LINES):
        raise BlockError(f"{len(lines)} lines, the demo prints {len(LINES)}")
    found: dict[str, str] = {}
    for i, (line, template) in enumerate(zip(lines, LINES), 1):
        match = _pattern(template).fullmatch(line.strip())
        if match is None:
            raise BlockError(f"line {i} is not the demo's line {i} ({template.split('{')[0].strip()!r}...)")
        found.update(match.groupdict())
    return found


def block_lines(readme: str) -> list[str]:
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise BlockError(f"needs one {BEGIN} ... {END} block")
    body = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip().splitlines()
    if len(body) < 2 or not body[0].startswith("```") or body[-1].strip() != "```":
        raise BlockError("the block is not one fenced code block")
    return body[1:-1]


def differences(readme: str, numbers: dict) -> list[str]:
    """'name: README x, demo y' for each number README shows otherwise than the demo printed it."""
    shown, printed = parse_lines(block_lines(readme)), parse_lines(render(numbers))
    return [f"{k}: README {shown[k]}, demo {printed[k]}" for k in printed if shown[k] != printed[k]]


def write_block(readme: str, numbers: dict) -> str:
    head, rest = readme.split(BEGIN, 1)
    return head + BEGIN + "\n```\n" + "\n".join(render(numbers)) + "\n```\n" + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", metavar="WORKDIR")
    mode.add_argument("--write", metavar="WORKDIR")
    ap.add_argument("--readme", default=str(README))
    args = ap.parse_args(argv)
    work, readme_path = Path(args.check or args.write), Path(args.readme)
    numbers_path = work / "numbers.json"
    try:
        numbers = json.loads(numbers_path.read_text())
        readme = readme_path.read_text()
        if args.write:
            readme_path.write_text(write_block(readme, numbers))
            print(f"{readme_path}: demo numbers written from {numbers_path}")
            return 0
        diffs = differences(readme, numbers)
    except FileNotFoundError as exc:
        print(f"warning: {exc.filename}: no such file (run the demo first)")
        return 1
    except KeyError as exc:
        print(f"warning: {numbers_path}: has no number {exc} (made by an older demo? rerun it)")
        return 1
    except BlockError as exc:
        print(f"warning: {readme_path}: demo numbers block: {exc}")
        return 1
    if diffs:
        print(f"warning: {readme_path}'s demo numbers differ from {numbers_path} ({'; '.join(diffs)}); "
              f"update them with: python stages/demo_readme.py --write {work}")
        return 1
    print(f"{readme_path}: demo numbers match {numbers_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
