"""pytest in benches/: load pytest-benchmark, which the project's pytest config turns off
(``-p no:benchmark``) so that ``make test`` never runs a benchmark.

    .venv/bin/pytest benches/test_micro.py --benchmark-only

Only an explicit path under benches/ reaches this file: ``testpaths`` is ``tests``.
"""

import sys

# Already imported means already registered (``-p benchmark`` on the command line): pluggy
# refuses the same module twice.
pytest_plugins = [] if "pytest_benchmark.plugin" in sys.modules else ["pytest_benchmark.plugin"]
