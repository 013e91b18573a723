"""`python -m asr.itn "二零二六年十二月一日"`: the written form of each argument, one line each (or of each line
of standard input when there are no arguments). `--hotwords 一汽大众,...` keeps those words as they are."""

from __future__ import annotations

import argparse
import sys

from . import InverseNormalizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asr.itn", description=__doc__.split("\n\n")[0])
    parser.add_argument("text", nargs="*", help="spoken-form text (none: read lines from standard input)")
    parser.add_argument("--hotwords", default="", help="comma-separated words ITN never rewrites")
    args = parser.parse_args(argv)
    protected = [w for w in args.hotwords.replace("，", ",").split(",") if w.strip()]
    normalizer = InverseNormalizer()
    lines = args.text or (line.rstrip("\n") for line in sys.stdin)
    for line in lines:
        print(normalizer.written(line, protected), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
