"""Fuzz harnesses for pointgate's parsers, one module per parser (`make fuzz`).

Each module has a `check(...)` that states the parser's contract over structured input (what
the docstring says it raises, and nothing else), a `one_input(data)` that builds that input from
atheris's bytes, and a `main()` that runs atheris. tests/unit/test_fuzz_parsers.py runs every
`check` with Hypothesis in `make test`; `make fuzz` runs every harness under atheris for
FUZZ_SECONDS each, with its corpus kept in var/fuzz/<name>/.
"""
