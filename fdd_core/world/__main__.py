"""`python -m fdd_core.world --check | --write`: the committed lab split files."""

from __future__ import annotations

import argparse
import sys

from fdd_core.world.world import DATA_DIR, check, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The lab world's committed split files.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 when files differ")
    action.add_argument("--write", action="store_true", help="regenerate the files")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(DATA_DIR):
            print(f"wrote {path}")
        return 0
    differences = check(DATA_DIR)
    for line in differences:
        print(line, file=sys.stderr)
    if differences:
        print("run `python -m fdd_core.world --write` to regenerate", file=sys.stderr)
        return 1
    print("lab world files match the generator")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
