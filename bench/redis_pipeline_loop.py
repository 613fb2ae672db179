"""The hand-written baseline evrelay's Redis publish is measured against: redis-py,
pipelined XADD of each line as a `value` field, 1000 commands per round trip.

    python bench/redis_pipeline_loop.py PORT STREAM FILE
"""

import sys

import redis

port, stream, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
client = redis.Redis(port=port)
pipe = client.pipeline(transaction=False)
count = 0
with open(path, "rb") as lines:
    for line in lines:
        line = line.rstrip(b"\n")
        if not line:
            continue
        pipe.xadd(stream, {"value": line})
        count += 1
        if count % 1000 == 0:
            pipe.execute()
pipe.execute()
