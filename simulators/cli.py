"""`simulators` command line.

    simulators demo                       the scripted story, with a readable summary (what `make demo` runs)
    simulators terminal --store ID ...    an interactive store terminal: scan or type codes, refund, batch close
    simulators load [--seconds N] ...     open-loop load with faults, end-of-run checks and a latency report
    simulators soak [--rounds N] ...      the load while Redis, gateway workers and the network fail; the books proved after
    simulators cluster-failover ...       the load on a Redis Cluster through two workers, a primary killed, WAIT on and off
    simulators partner [--fault slow] ... play Taishin, a partner network, as a separate service
    simulators bank [--port 8091] ...     play the wallet's bank, which pays cash-outs (fault modes over POST /_control)
    simulators serve [--port 8080]        the gateway, its Redis and simulators kept running, with the pages' links (`make serve`)
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="simulators", description="pointgate simulators")
    parser.add_argument("command", choices=["demo", "terminal", "load", "soak", "cluster-failover", "partner", "bank", "serve"])
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    rest = argv[1:]
    if args.command == "demo":
        from simulators import demo

        return demo.main()
    if args.command == "terminal":
        from simulators import terminal

        return terminal.main(rest)
    if args.command == "partner":
        from simulators import partner

        return partner.main(rest)
    if args.command == "bank":
        from simulators import bank

        return bank.main(rest)
    if args.command == "serve":
        from simulators import serve

        return serve.main(rest)
    if args.command == "soak":
        from simulators import soak

        return soak.main(rest)
    if args.command == "cluster-failover":
        from simulators import cluster_failover

        return cluster_failover.main(rest)
    from simulators import load

    return load.main(rest)


if __name__ == "__main__":
    sys.exit(main())
