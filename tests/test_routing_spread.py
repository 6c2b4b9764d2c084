"""The shipped router's scores spread: every trivial greeting below every hard request (#15).

The prompts are hand-written for this test and never used to train or choose the model.
Hard requests are multi-step proofs, derivations and programs in varied wording and length;
greetings are social openers and thanks. Runs on the real MiniLM (one small batch).
"""

from __future__ import annotations

import numpy as np
import pytest

from routeguard.errors import RouteguardError
from routeguard.routing.learned import default_model

GREETINGS = [
    "hi",
    "Hello!",
    "hey there",
    "Good morning :)",
    "Hi, how are you?",
    "Hello, how's it going?",
    "yo",
    "Thanks!",
    "thank you so much",
    "Thanks, that helped a lot.",
    "Good night!",
    "hiya, what's up",
    "Hey! Nice to meet you.",
    "Good afternoon.",
    "bye for now",
    "See you later!",
    "Cheers mate",
    "Hello again",
    "Howdy!",
    "Hi there, hope you're well",
    "ok thanks",
    "Great, thank you!",
    "Morning!",
    "hello friend",
    "Hey, how was your day?",
    "Have a nice weekend!",
    "Nice talking to you.",
    "hi :)",
    "Good evening, everyone.",
    "Greetings!",
]

HARD = [
    "Prove that there are infinitely many primes of the form 4k+3, then explain why the same "
    "argument fails for primes of the form 4k+1.",
    "Write a Python function that parses arithmetic expressions with +, -, *, / and "
    "parentheses into an AST, then evaluate it; include unit tests for precedence errors.",
    "Prove by induction that the sum of the first n odd numbers is n^2, and then give a "
    "combinatorial proof of the same identity.",
    "Implement a thread-safe LRU cache in Rust with O(1) get and put, explain the locking "
    "strategy, and show how you would benchmark it.",
    "Let $f(x) = x^3 - 3x + 1$. Find all real roots, prove there are exactly three, and "
    "compute their sum and product without solving the cubic.",
    "Derive the closed form of the Fibonacci numbers using generating functions, step by "
    "step, and prove the result by induction.",
    "Write a SQL query that returns, for each customer, the longest streak of consecutive "
    "days with an order, then explain how to index the table so it runs fast.",
    "Show that every continuous function on [0, 1] is uniformly continuous, first with the "
    "Heine-Borel theorem and then with a sequential compactness argument.",
    "Design and implement in C++ a lock-free single-producer single-consumer ring buffer; "
    "prove it has no data races under the C++ memory model.",
    "Solve the recurrence T(n) = 2T(n/2) + n log n, prove your bound, and then explain why "
    "the master theorem does not directly apply.",
    "Write a JavaScript function that debounces an async callback, cancels in-flight calls, "
    "and returns a promise; then write Jest tests covering the race conditions.",
    "Prove that the square root of 2 is irrational, then generalise the proof to show that "
    "the square root of any non-square integer is irrational.",
    "Compute the integral of x^2 e^{-x} from 0 to infinity by integrating by parts twice, "
    "then verify it with the Gamma function.",
    "Implement Dijkstra's algorithm in Go with a binary heap, analyse its complexity, and "
    "modify it to return all shortest paths, not just one.",
    "1. Prove that a graph is bipartite iff it has no odd cycle. 2. Give an O(V+E) "
    "algorithm to find such a cycle. 3. Implement it in Python.",
    "Write a Haskell parser combinator library from scratch supporting alternation, "
    "sequencing and repetition, then use it to parse JSON.",
    "Find the eigenvalues and eigenvectors of the matrix [[2, 1, 0], [1, 2, 1], [0, 1, 2]], "
    "diagonalise it, and use that to compute its 10th power.",
    "Prove that the halting problem is undecidable, then use a reduction to show that "
    "deciding whether a program ever prints 'hello' is undecidable too.",
    "Refactor this recursive descent parser into an iterative one with an explicit stack:\n"
    "```python\ndef parse(tokens):\n    return expr(tokens, 0)\n```\nKeep the error messages.",
    "Derive the backpropagation equations for a two-layer network with softmax output and "
    "cross-entropy loss, then implement them in numpy and check them with finite differences.",
    "Show that the sum of 1/(n log n) diverges using the integral test, and then prove that "
    "the sum of 1/(n (log n)^2) converges.",
    "Write a Rust program that reads a CSV of transactions, detects duplicate payments "
    "within a 24-hour window, and reports them; explain your data structures.",
    "Prove Cauchy-Schwarz for inner product spaces, then use it to derive the triangle "
    "inequality and explain when equality holds.",
    "Implement a B-tree with insertion and deletion in Java, prove the height bound, and "
    "write tests that check the invariants after random operations.",
    "Solve the differential equation y'' + 4y' + 4y = e^{-2x} step by step, and verify your "
    "particular solution by substitution.",
    "Design a rate limiter for a distributed API: compare token bucket and sliding window, "
    "then write the Redis Lua script for your choice and prove it is atomic.",
    "Prove that every finite group of prime order is cyclic, and then show that a group of "
    "order p^2 is abelian.",
    "Write a compiler pass in Python that performs constant folding and dead-code "
    "elimination on a small three-address IR; include the IR definition and tests.",
    "Using Lagrange multipliers, find the maximum of xyz subject to x + y + z = 1 and "
    "x, y, z > 0, then prove it is a global maximum.",
    "Write a concurrent web crawler in Python with asyncio that respects robots.txt, limits "
    "requests per host, and deduplicates URLs; explain how you avoid deadlocks.",
]


def _default_or_skip() -> None:
    try:
        from routeguard.embed.minilm import bundled_model_dir

        bundled_model_dir()
    except RouteguardError:
        pytest.skip("all-MiniLM-L6-v2 weights not installed")


def test_prompt_lists_are_distinct_and_sized() -> None:
    assert len(set(GREETINGS)) == len(GREETINGS) >= 24
    assert len(set(HARD)) == len(HARD) >= 24


def test_training_prompts_never_include_this_tests_prompts() -> None:
    from routeguard.routing.trivial import trivial_prompts

    generated = {p.lower() for p in trivial_prompts(400)}  # what the shipped head trained on
    assert not generated & {p.lower() for p in GREETINGS}


def test_default_router_puts_every_greeting_below_every_hard_request() -> None:
    _default_or_skip()
    model = default_model()
    easy = model.score(GREETINGS)
    hard = model.score(HARD)
    assert np.all(np.isfinite(easy)) and np.all(np.isfinite(hard))
    worst_easy = GREETINGS[int(np.argmax(easy))]
    worst_hard = HARD[int(np.argmin(hard))]
    assert easy.max() < hard.min() - 1e-9, (
        f"greeting {worst_easy!r} scores {easy.max():.4f}, hard request {worst_hard!r} "
        f"scores {hard.min():.4f}"
    )
