"""Evaluation harnesses that run routeguard against public benchmarks (run as modules).

``python -m routeguard.bench.agentdojo --suite banking``: the AgentDojo prompt-injection replay
(needs the ``bench-agents`` extra).
"""
