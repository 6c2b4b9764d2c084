"""Type stubs for the compiled extension `routeguard._core` (rust/py/)."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BertEncoder",
    "BudgetRefused",
    "ChatMeasure",
    "CompiledPolicy",
    "FlatIndex",
    "Hold",
    "KeyDigest",
    "Lane",
    "Ledger",
    "PriceTable",
    "RateLimiter",
    "RateRefused",
    "Regex",
    "RegexError",
    "SseParser",
    "__version__",
    "auto_precision",
    "cosine",
    "int8_kernel",
    "otlp_trace_request",
    "simd_level",
]

__version__: str

@final
class ChatMeasure:
    """What `measure` counts of a chat request: JSON bytes, images, messages, text bytes, tools."""

    def __new__(
        cls,
        not_read: frozenset[str],
        image_parts: frozenset[str],
        size: Callable[[Any], int],
    ) -> ChatMeasure: ...
    def __call__(self, request: object) -> tuple[int, int, int, int, bool] | None: ...
    def quote(
        self, request: object, prices: PriceTable, default_max_tokens: int
    ) -> tuple[int, int] | None: ...

@final
class CompiledPolicy:
    """A tool-call policy compiled for evaluation (from `routeguard.enforce.policy.to_json`).

    A decision is `(effect, rule_id, ((redacted path, redact rule id), ...))`.
    """

    DEFAULT_RULE_ID: ClassVar[str]
    def __new__(cls, json: str) -> CompiledPolicy: ...
    def __len__(self) -> int: ...
    def decide(
        self,
        agent_id: str,
        role: str,
        trust: float,
        delegation_depth: int,
        tool: str,
        args: Mapping[str, Any],
        step: int,
        labels: Iterable[str],
        now: float,
    ) -> tuple[str, str, tuple[tuple[str, str], ...]]: ...
    def decide_json(
        self,
        agent_id: str,
        role: str,
        trust: float,
        delegation_depth: int,
        tool: str,
        args_json: str | bytes,
        step: int,
        labels: Iterable[str],
        now: float,
    ) -> tuple[str, str, tuple[tuple[str, str], ...]]: ...
    @staticmethod
    def regex_error(pattern: str) -> str | None: ...

@final
class FlatIndex:
    """Exact top-k cosine search over vectors of one dimension (optionally scanning int8)."""

    def __new__(
        cls,
        dim: int,
        quantize: bool = False,
        *,
        parallel_threshold: int | None = None,
        threads: int | None = None,
    ) -> FlatIndex: ...
    @property
    def dim(self) -> int: ...
    @property
    def quantized(self) -> bool: ...
    @property
    def parallel_threshold(self) -> int: ...
    @property
    def threads(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: int, /) -> bool: ...
    def add(self, ids: npt.NDArray[np.uint64], vectors: npt.NDArray[np.float32]) -> None: ...
    def remove(self, id: int) -> bool: ...
    def search(
        self, query: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...
    def search_batch(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]: ...

def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float: ...

@final
class BertEncoder:
    """A BERT encoder forward pass (mean pooling, L2 norm) on the calling thread, GIL released.

    Built from the arrays of `routeguard.embed.bert.BertWeights`; `layers` holds one dict per
    block keyed by the `routeguard.embed.bert.Layer` field names. `precision` is "f32",
    "f16" (weights only), "bf16" (weights and activations, AVX-512 BF16) or "int8"
    (int8 weights per column, activations per row, exact i32 sums).
    """

    def __new__(
        cls,
        word: npt.NDArray[np.float32],
        position: npt.NDArray[np.float32],
        ln_g: npt.NDArray[np.float32],
        ln_b: npt.NDArray[np.float32],
        layers: Sequence[Mapping[str, npt.NDArray[np.float32]]],
        *,
        heads: int,
        eps: float = 1e-12,
        precision: str = "f32",
    ) -> BertEncoder: ...
    @property
    def hidden(self) -> int: ...
    @property
    def max_positions(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def isa(self) -> str: ...
    @property
    def weight_bytes(self) -> int: ...
    def encode(self, ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]: ...

def simd_level() -> str: ...
def auto_precision() -> str: ...
def int8_kernel() -> str: ...

class BudgetRefused(Exception):
    """A reservation did not fit: args are (account, position, spent, reserved, limit,
    requested)."""

@final
class Hold:
    """A reservation on a chain of accounts; settle or release it through its ledger."""

    @property
    def chain(self) -> list[int]: ...
    @property
    def amount(self) -> int: ...
    @property
    def soft_mask(self) -> int: ...
    @property
    def is_open(self) -> bool: ...

@final
class Ledger:
    """Budget accounts with hard/soft limits per window; reserve, settle, release."""

    def __new__(cls) -> Ledger: ...
    def __len__(self) -> int: ...
    def add_calendar(self, window_id: int) -> int: ...
    def set_calendar(self, calendar: int, window_id: int) -> None: ...
    def calendar(self, calendar: int) -> int: ...
    def add_account(
        self,
        limit: int | None = None,
        soft_limit: int | None = None,
        *,
        calendar: int | None = None,
        window_ns: int | None = None,
        buckets: int = 60,
    ) -> int: ...
    def set_limits(
        self, account: int, limit: int | None, soft_limit: int | None = None
    ) -> None: ...
    def reserve(self, chain: list[int], amount: int, now_ns: int) -> Hold: ...
    def settle(self, hold: Hold, actual: int, now_ns: int) -> int: ...
    def release(self, hold: Hold) -> bool: ...
    def charge(self, chain: list[int], amount: int, now_ns: int) -> None: ...
    def spent(self, account: int, now_ns: int) -> int: ...
    def reserved(self, account: int) -> int: ...
    def used(self, account: int, now_ns: int) -> int: ...
    def reset(self, account: int) -> None: ...
    def live_spend(self, account: int, now_ns: int) -> list[tuple[int, int]]: ...

class RateRefused(Exception):
    """A rate check refused: args are (position, retry_after_ns); retry_after_ns is None when
    it never passes."""

@final
class Lane:
    """One chain made ready for admission: its accounts' ids on a ledger (leaf first, with
    their ancestors) and its rate limiters as `(limiter, per_token)`, converted once."""

    def __new__(
        cls, ledger: Ledger, limiter: RateLimiter, ids: list[int], limiters: list[tuple[int, bool]]
    ) -> Lane: ...
    def admit(self, amount: int, requests: int, tokens: int, now_ns: int) -> Hold: ...

@final
class KeyDigest:
    """HMAC-SHA256 under one secret, as lowercase hex: the digest a virtual key is stored by."""

    def __new__(cls, secret: bytes) -> KeyDigest: ...
    def hex(self, key: str) -> str: ...

@final
class PriceTable:
    """What a hold is priced at: per deployment, dollars a million input and output tokens and
    the tokens one image costs there (`Gateway._priced` keeps one row per distinct price)."""

    def __new__(cls, rows: list[tuple[float, float, int]]) -> PriceTable: ...
    def __len__(self) -> int: ...

@final
class RateLimiter:
    """GCRA rate limiters (requests or tokens per period), one atomic each."""

    def __new__(cls) -> RateLimiter: ...
    def __len__(self) -> int: ...
    def add(self, limit: int, period_ns: int) -> int: ...
    def check(self, costs: list[tuple[int, int]], now_ns: int) -> tuple[int, int | None] | None: ...
    def check_units(
        self, limiters: list[tuple[int, bool]], requests: int, tokens: int, now_ns: int
    ) -> tuple[int, int | None] | None: ...
    def wait_time(self, limiter: int, cost: int, now_ns: int) -> int | None: ...
    def is_full(self, limiter: int, now_ns: int) -> bool: ...

class RegexError(ValueError):
    """A pattern the linear-time regex engine cannot compile (syntax, look-around,
    backreferences, or too large)."""

@final
class Regex:
    """A regular expression whose searches take time linear in the text (no backtracking)."""

    def __new__(cls, pattern: str, *, case_insensitive: bool = False) -> Regex: ...
    @property
    def pattern(self) -> str: ...
    def is_match(self, text: str) -> bool: ...
    def search(self, text: str) -> tuple[int, int] | None: ...
    def find_spans(self, text: str, limit: int | None = None) -> list[tuple[int, int]]: ...

def otlp_trace_request(resources: list[tuple[Any, ...]]) -> bytes: ...

@final
class SseParser:
    """Server-sent events from a stream's chunks: `feed` each chunk, then `finish`."""

    def __new__(cls) -> SseParser: ...
    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]: ...
    def finish(self) -> list[tuple[str, bytes]]: ...
