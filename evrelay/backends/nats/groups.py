"""Consumer groups on NATS JetStream: a group is a durable pull consumer with explicit acks
(named after the group, see `durable_name`). Creating, inspecting, acking, claiming what
NATS made due for redelivery, moving (delete and re-create at the new position) and
deleting groups; `NatsGroups` is mixed into `NatsBackend`, whose connection it uses."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from evrelay.backends.base import GroupInfo, GroupLag, GroupSeekPlan, GroupSeekStep, Message, Position
from evrelay.backends.nats.connection import (
    DISALLOWED_IN_NAME,
    NAME_PATTERN,
    JetStreamError,
    ms_from_rfc3339,
    valid_name,
)
from evrelay.errors import GroupBusyError, NotFoundError, UsageError
from evrelay.positions import AtTime, Beginning, End, Offset, Stored, StreamPosition


def durable_name(group: str) -> str:
    """The JetStream consumer name of a group: the group name itself when NATS allows it;
    otherwise (`evrelay-bridge-file-copy.jsonl`) its disallowed characters become `_`,
    plus a short hash of the name so that two groups never share a consumer."""
    if NAME_PATTERN.fullmatch(group) and len(group) <= 200:
        return group
    digest = hashlib.sha1(group.encode("utf-8")).hexdigest()[:8]
    return f"{DISALLOWED_IN_NAME.sub('_', group)[:180]}-{digest}"


GROUP_DESCRIPTION = "evrelay group: "


def group_name(info: dict[str, Any]) -> str:
    """The group a durable consumer serves (see durable_name)."""
    description = info.get("config", {}).get("description") or ""
    return description[len(GROUP_DESCRIPTION) :] if description.startswith(GROUP_DESCRIPTION) else info["name"]



class NatsGroups:
    """The group operations of `NatsBackend`."""

    def group_config(self, group: str, start: dict[str, Any]) -> dict[str, Any]:
        return {
            "durable_name": group,
            "ack_policy": "explicit",
            "ack_wait": int(self.ack_wait * 1e9),
            "max_ack_pending": self.max_ack_pending,
            "replay_policy": "instant",
            **start,
        }

    def create_group(self, stream: str, group: str, start: StreamPosition) -> bool:
        """Create the durable consumer when missing; True when this call created it."""
        name = durable_name(group)
        if self.conn.consumer_info(stream, name) is not None:
            return False
        config = self.group_config(name, self.deliver_config(stream, start))
        if name != group:
            config["description"] = GROUP_DESCRIPTION + group
        try:
            self.conn.call(f"CONSUMER.DURABLE.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
        except JetStreamError:
            if self.conn.consumer_info(stream, name) is not None:
                return False  # another reader created it at the same moment
            raise
        return True

    def group_consumer_info(self, stream: str, group: str) -> dict[str, Any]:
        valid_name(stream, "stream")
        info = self.conn.consumer_info(stream, durable_name(group))
        if info is None:
            raise NotFoundError(f"group {group!r} does not exist on NATS stream {stream!r}")
        return info

    def durable_infos(self, stream: str) -> list[dict[str, Any]]:
        valid_name(stream, "stream")
        self.conn.stream_info(stream)
        infos: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.conn.call(f"CONSUMER.LIST.{stream}", {"offset": offset})
            consumers = page.get("consumers") or []
            infos += [c for c in consumers if c.get("config", {}).get("durable_name")]
            offset += len(consumers)
            if not consumers or offset >= int(page.get("total", 0)):
                return sorted(infos, key=lambda c: c["name"])

    @staticmethod
    def delivered_seq(info: dict[str, Any]) -> int:
        return int(info.get("delivered", {}).get("stream_seq", 0))

    def group_infos(self, stream: str) -> list[GroupInfo]:
        return [
            GroupInfo(
                group_name(info),
                None,
                int(info.get("num_ack_pending", 0)),
                int(info.get("num_pending", 0)),
                str(self.delivered_seq(info)) if self.delivered_seq(info) else None,
            )
            for info in self.durable_infos(stream)
        ]

    def group_lag(self, stream: str, group: str) -> list[GroupLag]:
        info = self.group_consumer_info(stream, group)
        state = self.stream_state(stream)
        delivered = self.delivered_seq(info)
        last = int(state.get("last_seq", 0))
        # Everything up to the ack floor is acked, and the message after it is not: the
        # oldest the group has not finished (pending or not yet delivered).
        floor = int(info.get("ack_floor", {}).get("stream_seq", 0))
        start = max(floor + 1, int(info.get("config", {}).get("opt_start_seq", 0) or 0))
        return [
            GroupLag(
                None,
                str(delivered) if delivered else None,
                str(last) if last else None,
                int(info.get("num_pending", 0)),
                int(info.get("num_ack_pending", 0)),
                self.message_time_from(stream, start) if start <= last else None,
            )
        ]

    def message_time_from(self, stream: str, seq: int) -> int | None:
        """The timestamp (ms) of the first message at or after `seq`, None when none."""
        try:
            reply = self.conn.call(f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": ">"})
        except JetStreamError as exc:
            if exc.code == 404:
                return None
            raise
        return ms_from_rfc3339(reply.get("message", {}).get("time"))

    def ack(self, stream: str, group: str, positions: Sequence[Position], *, force: bool = False) -> int:
        """Acks by stream sequence: JetStream matches an ack to the pending message by its
        stream sequence (the other tokens of the ack subject are the delivery's details).
        Acks are per message, so `force` (skip unacked messages, for cumulative acks) has
        nothing to allow."""
        sequences = []
        for position in positions:
            try:
                sequences.append(int(position.id))
            except (TypeError, ValueError):
                raise UsageError(f"{position.id!r} is not a NATS stream sequence number") from None
        if not sequences:
            return 0
        before = int(self.group_consumer_info(stream, group).get("num_ack_pending", 0))
        self.conn.run(self._ack_sequences(stream, group, sequences), what=f"acking for group {group!r}")
        after = int(self.group_consumer_info(stream, group).get("num_ack_pending", 0))
        return max(0, min(len(sequences), before - after))

    async def _ack_sequences(self, stream: str, group: str, sequences: list[int]) -> None:
        nc = self.conn.nc
        for seq in sequences:
            await nc.publish(f"$JS.ACK.{stream}.{durable_name(group)}.1.{seq}.{seq}.{time.time_ns()}.0", b"+ACK")
        await nc.flush(self.settings.timeout)

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        """The group's messages NATS has made due for redelivery (pending past its
        ack_wait), taken by this call and ackable by position. NATS, not `min_idle_ms`,
        decides when a message is due; a shorter `min_idle_ms` gets a warning."""
        from evrelay.backends.nats.consumers import PullSession
        from evrelay.backends.nats.mapping import reply_metadata

        info = self.group_consumer_info(stream, group)
        if int(info.get("num_ack_pending", 0)) == 0:
            # Nothing is pending, so nothing can be due: a fetch could only take a message
            # no reader has had yet, and handing it back would count as a delivery, making
            # it look claimable to the next `ack --claim`.
            return []
        ack_wait_ms = int(info.get("config", {}).get("ack_wait", 0)) // 1_000_000
        if min_idle_ms < ack_wait_ms:
            self.settings.warn(
                f"NATS redelivers a message only after the group's ack_wait ({ack_wait_ms / 1000:g}s); "
                "messages pending for less than that cannot be claimed yet"
            )
        session = PullSession(self.conn, stream, durable_name(group))
        claimed: list[Message] = []
        try:
            self.conn.run(session.start())
            while len(claimed) < count:
                msgs, _ = self.conn.run(session.fetch(1, 0.0), self.settings.timeout + 2)
                if not msgs:
                    break
                _, _, deliveries, _ = reply_metadata(msgs[0].reply)
                if deliveries <= 1:
                    # A first delivery is not a claim: hand it straight back.
                    self.conn.run(session.nak([msgs[0]]))
                    break
                claimed.append(self.to_message(msgs[0], stream))
        finally:
            self.conn.run(session.stop())
        return claimed

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        info = self.group_consumer_info(stream, group)
        state = self.stream_state(stream)
        current = self.delivered_seq(info)
        first, last = int(state.get("first_seq", 1)), int(state.get("last_seq", 0))
        if isinstance(target, (Beginning, Stored)):
            new = first - 1
        elif isinstance(target, End):
            new = last
        elif isinstance(target, Offset):
            new = min(max(target.offset, 1) - 1, last)  # past the end: the end (see deliver_config)
        elif isinstance(target, AtTime):
            new = self.first_seq_at(stream, target.ms) - 1
        else:
            raise UsageError(f"cannot move a NATS consumer group to {target}")
        step = GroupSeekStep(None, str(current), str(new), current - new)
        return GroupSeekPlan(stream, group, target, [step], native={"config": info["config"], "start_seq": new + 1})

    def first_seq_at(self, stream: str, ms: int) -> int:
        """The sequence of the first message at or after `ms` (the next sequence if none)."""
        from evrelay.backends.nats.consumers import PullSession
        from evrelay.backends.nats.mapping import reply_metadata

        state = self.stream_state(stream)
        session = PullSession(self.conn, stream, None, {"ack_policy": "none", **self.deliver_config(stream, AtTime(ms, ""))})
        try:
            self.conn.run(session.start())
            msgs, _ = self.conn.run(session.fetch(1, 0.0), self.settings.timeout + 2)
        finally:
            self.conn.run(session.stop())
        return reply_metadata(msgs[0].reply)[0] if msgs else int(state.get("last_seq", 0)) + 1

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        """JetStream cannot move a durable consumer: it is deleted and created again at the
        new position with the same settings (its pending acks go with it)."""
        info = self.group_consumer_info(plan.stream, plan.group)
        if int(info.get("num_waiting", 0)) > 0:
            raise GroupBusyError(
                f"group {plan.group!r} on NATS stream {plan.stream!r} has readers waiting for messages; stop them first"
            )
        config = dict(plan.native["config"])
        for field in ("opt_start_seq", "opt_start_time"):
            config.pop(field, None)
        config.update({"deliver_policy": "by_start_sequence", "opt_start_seq": max(plan.native["start_seq"], 1)})
        name = durable_name(plan.group)
        self.conn.call(f"CONSUMER.DELETE.{plan.stream}.{name}", what=f"moving group {plan.group!r}")
        self.conn.call(
            f"CONSUMER.DURABLE.CREATE.{plan.stream}.{name}",
            {"stream_name": plan.stream, "config": config},
            what=f"moving group {plan.group!r}",
        )

    def group_delete_scope(self, stream: str, group: str) -> str:
        info = self.group_consumer_info(stream, group)
        if int(info.get("num_waiting", 0)) > 0:
            raise GroupBusyError(f"group {group!r} on NATS stream {stream!r} has readers waiting for messages; stop them first")
        return (
            f"consumer group {group!r} of NATS stream {stream!r} (the durable consumer {info['name']!r}), "
            f"with its position and {int(info.get('num_ack_pending', 0))} unacked message(s)"
        )

    def delete_group(self, stream: str, group: str) -> None:
        self.group_consumer_info(stream, group)
        self.conn.call(f"CONSUMER.DELETE.{stream}.{durable_name(group)}", what=f"deleting group {group!r}")
