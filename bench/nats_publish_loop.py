"""The hand-written baseline `publish nats:` is measured against: nats-py, each line of
FILE (empty lines skipped) published to JetStream with `publish_async` (nats-py's own
pipelined publish, up to 4,000 acknowledgements outstanding), then every acknowledgement
awaited and checked: the guarantee evrelay gives (the stream confirmed each message).
Creates the stream (file storage, subject = its name) when it is missing, as
`evrelay publish nats://.../STREAM?create=true` does.

    python bench/nats_publish_loop.py PORT STREAM FILE
"""

import asyncio
import sys

import nats
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError


async def main(port: int, stream: str, path: str) -> int:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=stream, subjects=[stream], storage="file"))
    futures = []
    with open(path, "rb") as lines:
        for line in lines:
            line = line.rstrip(b"\n")
            if line:
                futures.append(await js.publish_async(stream, line))
    await js.publish_async_completed()
    failed = sum(1 for future in futures if future.exception() is not None)
    await nc.close()
    if failed:
        print(f"{failed} of {len(futures)} not acknowledged", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3])))
