"""The bare passthrough proxy (now :mod:`routeguard.bench.passthrough`), run as a script:

.venv/bin/python benches/passthrough.py --port 4100 --upstream http://127.0.0.1:4001
"""

from routeguard.bench.passthrough import main

if __name__ == "__main__":
    main()
