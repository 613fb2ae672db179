"""The hand-written baseline `tail redis:` is measured against: redis-py, XREAD of 10,000
entries at a time from the beginning, each entry's `value` field printed with a newline,
until a read comes back empty (the end of the stream, as `evrelay tail` without -f).

    python bench/redis_xread_loop.py PORT STREAM
"""

import sys

import redis

port, stream = int(sys.argv[1]), sys.argv[2]
client = redis.Redis(port=port)
out = sys.stdout.buffer
last = "0-0"
while True:
    reply = client.xread({stream: last}, count=10_000)
    if not reply:
        break
    entries = reply[0][1]
    out.write(b"".join([fields.get(b"value", b"") + b"\n" for _, fields in entries]))
    out.flush()
    last = entries[-1][0]
