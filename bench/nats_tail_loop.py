"""The hand-written baseline `tail nats:` is measured against: nats-py's ordered consumer
(an ephemeral push consumer without acks, from the start of the stream, with flow
control: nats-py's fastest way to read a stream in order), each payload printed with a
newline, until every message the stream held at the start has been printed (the end of
the stream, as `evrelay tail` without -f). A pull consumer fetching 1,000 or 10,000 at a
time took five times as long here, so this is the stricter peer.

    python bench/nats_tail_loop.py PORT STREAM
"""

import asyncio
import sys

import nats


async def main(port: int, stream: str) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    remaining = (await js.stream_info(stream)).state.messages
    out = sys.stdout.buffer
    done = asyncio.Event()
    pending: list[bytes] = []

    async def on_message(msg) -> None:
        nonlocal remaining
        pending.append(msg.data + b"\n")
        remaining -= 1
        if len(pending) >= 1000 or remaining <= 0:
            out.write(b"".join(pending))
            pending.clear()
        if remaining <= 0:
            done.set()

    if remaining > 0:
        await js.subscribe(stream, stream=stream, ordered_consumer=True, cb=on_message, pending_msgs_limit=-1)
        await done.wait()
    out.flush()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
