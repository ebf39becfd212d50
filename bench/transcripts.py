"""Realistic chat transcripts for the import benchmark: retail support runs in the OpenAI shape
(the tools of tests/data/import/support.yaml), written as one JSON array of runs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

MAPPING = Path(__file__).resolve().parent.parent / "tests" / "data" / "import" / "support.yaml"
_WORDS = [
    "order",
    "delivery",
    "refund",
    "address",
    "item",
    "size",
    "colour",
    "card",
    "shipping",
    "tracking",
    "warehouse",
    "courier",
    "return",
    "exchange",
    "account",
    "payment",
    "pending",
    "cancelled",
    "invoice",
    "discount",
    "voucher",
]


class TranscriptWriter:
    """Runs of 6-14 events each (reads with ~1 KB results, writes with and without the customer's
    confirmation, failures), one JSON array, streamed to the file as written."""

    def __init__(self, seed: int, prefix: str = "bench-run") -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.runs = 0

    def text(self, words: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(words))

    def write(self, path: Path, megabytes: float) -> int:
        """Runs until the file holds `megabytes`; returns how many."""
        limit = int(megabytes * 1024 * 1024)
        with path.open("w", encoding="utf-8") as out:
            out.write("[")
            written = 1
            while written < limit:
                text = ("," if self.runs else "") + json.dumps(self.run(), separators=(",", ":"))
                out.write(text)
                written += len(text)
                self.runs += 1
            out.write("]")
        return self.runs

    def run(self) -> dict[str, Any]:
        rng, n = self.rng, self.runs
        user, order = f"u-{rng.randrange(10**6)}", f"#W{rng.randrange(10**7)}"
        card = f"pm-{rng.randrange(10**5)}"
        clock = [1_761_000_000 + n * 600]

        def at() -> int:
            clock[0] += rng.randint(1, 40)
            return clock[0]

        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": "You are a retail support agent. " + self.text(60),
                "timestamp": at(),
            },
            {"role": "user", "content": f"Hi, about my order {order}: " + self.text(20), "timestamp": at()},
        ]

        def call(call_id: str, name: str, arguments: dict[str, Any], result: Any) -> None:
            messages.append(
                {
                    "role": "assistant",
                    "timestamp": at(),
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)},
                        }
                    ],
                }
            )
            content = result if isinstance(result, str) else json.dumps(result)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content, "timestamp": at()})

        call(
            "0",
            "get_user_details",
            {"user_id": user},
            {
                "user_id": user,
                "name": self.text(2),
                "address": self.text(8),
                "payment_methods": [{"id": card, "kind": "card"}, {"id": f"gc-{n}", "kind": "gift_card"}],
                "notes": self.text(80),
            },
        )
        call(
            "1",
            "get_order_details",
            {"order_id": order},
            {
                "order_id": order,
                "status": "pending",
                "address": self.text(8),
                "items": [
                    {"item_id": f"i-{rng.randrange(10**6)}", "description": self.text(25)} for _ in range(3)
                ],
            },
        )
        for step in range(rng.randint(1, 3)):
            messages.append(
                {"role": "assistant", "content": "Shall I go ahead? " + self.text(20), "timestamp": at()}
            )
            words = "Yes, go ahead." if rng.random() < 0.7 else "Hmm, " + self.text(6)
            messages.append({"role": "user", "content": words, "timestamp": at()})
            if rng.random() < 0.5:
                call(
                    f"w{step}",
                    "cancel_pending_order",
                    {"order_id": order, "reason": "ordered by mistake"},
                    {"order_id": order, "status": "cancelled"}
                    if rng.random() < 0.9
                    else "Error: order already shipped",
                )
            else:
                call(
                    f"w{step}",
                    "modify_pending_order_address",
                    {"order_id": order, "address": self.text(8)},
                    {"order_id": order, "address": self.text(8)},
                )
        return {
            "id": f"{self.prefix}-{n:07d}",
            "ticket": f"ZD-{n}",
            "agent": {"name": "retail-bot", "version": "2.3"},
            "model": "gpt-4o",
            "customer": user,
            "outcome": "resolved",
            "messages": messages,
        }
