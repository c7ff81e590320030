"""`simulators` command line.

    simulators demo      the scripted story, with a readable summary (what `make demo` runs)
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulators", description="pointgate simulators")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the scripted demo story")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from simulators import demo

        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
