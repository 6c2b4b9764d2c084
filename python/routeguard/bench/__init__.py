"""The bundled benchmark suite (``routeguard bench``) and evaluation harnesses.

``routeguard bench [--quick] [--suite gateway,embed,...] [--json F] [--markdown F] [--update
PAGE]`` runs the suites (:mod:`routeguard.bench.cli`), each comparing routeguard with a peer in
the same run, and can rewrite the generated blocks of docs pages (:mod:`routeguard.bench.page`);
:mod:`routeguard.bench.timing` is the one per-call timer they and ``benches/`` share.
``python -m routeguard.bench.agentdojo --suite banking``: the AgentDojo prompt-injection replay
(needs the ``bench-agents`` extra).
"""
