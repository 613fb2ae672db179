"""A summary of a range of messages, for `evrelay stats`: how many, when (messages per
minute, drawn as a small chart for a terminal), how big (value-size percentiles), which
keys and which header names. Backend-neutral: it sees Messages only, batch by batch, and
keeps counters, not the messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from evrelay.envelope import Message
from evrelay.timestamps import format_ms

BARS = " ▁▂▃▄▅▆▇█"
CHART_WIDTH = 60
TOP = 10
MAX_DISTINCT_KEYS = 100_000
"""Past this many distinct keys new ones are no longer counted (memory stays bounded);
the summary says so."""


def percentile(sorted_values: list[int], fraction: float) -> int | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


class RangeSummary:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.per_minute: Counter[int] = Counter()
        self.sizes: list[int] = []
        self.keys: Counter[str] = Counter()
        self.keys_capped = False
        self.no_key = 0
        self.header_names: Counter[str] = Counter()

    def add(self, batch: list[Message]) -> None:
        self.count += len(batch)
        for message in batch:
            size = len(message.value) if message.value is not None else 0
            self.bytes += size
            self.sizes.append(size)
            ts = message.timestamp
            if ts is not None:
                self.per_minute[ts // 60000] += 1
                self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
                self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)
            if message.key is None:
                self.no_key += 1
            else:
                key = message.key.decode("utf-8", "backslashreplace")
                if key in self.keys or len(self.keys) < MAX_DISTINCT_KEYS:
                    self.keys[key] += 1
                else:
                    self.keys_capped = True
            for name in {name for name, _ in message.headers}:
                self.header_names[name] += 1

    # --- results -------------------------------------------------------------------------

    def minutes(self) -> list[tuple[int, int]]:
        """(minute start in ms, messages) for every minute from the first to the last,
        empty minutes included."""
        if not self.per_minute:
            return []
        first, last = min(self.per_minute), max(self.per_minute)
        return [(minute * 60000, self.per_minute.get(minute, 0)) for minute in range(first, last + 1)]

    def record(self) -> dict[str, Any]:
        sizes = sorted(self.sizes)
        return {
            "messages": self.count,
            "bytes": self.bytes,
            "first": format_ms(self.first_ms) if self.first_ms is not None else None,
            "last": format_ms(self.last_ms) if self.last_ms is not None else None,
            "per_minute": [[format_ms(start), count] for start, count in self.minutes()],
            "value_size": {
                "p50": percentile(sizes, 0.5), "p90": percentile(sizes, 0.9), "p99": percentile(sizes, 0.99),
                "max": sizes[-1] if sizes else None,
            },
            "top_keys": [[key, count] for key, count in self.keys.most_common(TOP)],
            "without_key": self.no_key,
            "keys_counted": len(self.keys),
            "keys_capped": self.keys_capped,
            "header_names": [[name, count] for name, count in self.header_names.most_common()],
        }

    def chart(self, width: int = CHART_WIDTH) -> tuple[str, int, int]:
        """(bars, minutes per bar, highest count in one bar): one bar per minute, or per
        several minutes when the range is longer than `width` minutes."""
        minutes = [count for _, count in self.minutes()]
        if not minutes:
            return "", 1, 0
        step = -(-len(minutes) // width)
        columns = [sum(minutes[i : i + step]) for i in range(0, len(minutes), step)]
        peak = max(columns)
        bars = "".join(BARS[0] if c == 0 else BARS[max(1, round(c / peak * (len(BARS) - 1)))] for c in columns)
        return bars, step, peak

    def text(self, title: str) -> str:
        record = self.record()
        lines = [f"{title}: {self.count:,} message(s), {_size(self.bytes)} of values"]
        if record["first"]:
            lines.append(f"from {record['first']} to {record['last']}")
        bars, step, peak = self.chart()
        if bars:
            unit = "minute" if step == 1 else f"{step} minutes"
            lines.append(f"messages per {unit} (peak {peak:,}):")
            lines.append(f"  {bars}")
        size = record["value_size"]
        if size["max"] is not None:
            lines.append(f"value size: p50 {_size(size['p50'])}, p90 {_size(size['p90'])}, p99 {_size(size['p99'])}, max {_size(size['max'])}")
        if self.keys:
            top = ", ".join(f"{_printable(key)} ({count:,})" for key, count in self.keys.most_common(TOP))
            more = f" of {len(self.keys):,}{'+' if self.keys_capped else ''} keys" if len(self.keys) > TOP else ""
            lines.append(f"top keys{more}: {top}")
        if self.no_key:
            lines.append(f"without a key: {self.no_key:,}")
        if self.header_names:
            lines.append("header names: " + ", ".join(f"{_printable(name)} ({count:,})" for name, count in self.header_names.most_common()))
        return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    """A key or header name as the terminal should see it: its control characters (a
    newline included) escaped, so a message cannot drive the screen or forge lines."""
    from evrelay.output import ESCAPED_CONTROLS

    return text.translate(ESCAPED_CONTROLS).replace("\n", "\\n")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
