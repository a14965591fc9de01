"""What the load generator records while it runs, and the checks it makes at the end.

Messages are numbered ``k = 0, 1, 2, ...`` in send order; ``k`` is the ``client_msg_id`` and the
``ref`` of the send, and the body carries the send time (``t=<monotonic ns> c=<k>``), so any
receiver in the process can tell the latency on the one shared monotonic clock.

Checked at the end:

- every acknowledged message reached every other participant of its session exactly once, and
  its sender's own connection once (``missing``, ``duplicates``);
- per connection (each is joined to one session) the stream seqs rise by exactly one from the
  ``last_seq`` of its ``joined`` frame (``out_of_order``: gaps and regressions);
- errors by code (``error`` frames, failed connections, sends on closed sockets);
- no ``notification`` frames: every connection has joined its one session, so it must get
  ``new_message`` for it and never both (SPEC capability 9), and nothing of other sessions.

Measured over the window after the warm-up (``window_start``..``window_end``):

- throughput: acks received in the window / its length (what the stack sustained, not what
  was offered);
- deliveries/s: ``new_message`` frames to participants other than the sender received in it;
- latency: receive time - send time of those deliveries, for messages sent in the window; the
  sender's own echo is not counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

NS = 1_000_000_000


def percentiles_ms(samples_ns: list[int]) -> dict[str, float | None]:
    """p50/p95/p99/max (nearest rank) of durations in ns, in ms."""
    if not samples_ns:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(samples_ns)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(p * n + 0.999999) - 1))] / 1e6, 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99),
            "max": round(ordered[-1] / 1e6, 3), "count": n}


@dataclass
class Peer:
    """One connection as the tally sees it: its user, its session and what it received."""

    idx: int
    user_id: str
    session: int
    last_seq: int | None = None  # from ``joined``; then the last stream seq received
    seen: set[int] = field(default_factory=set)  # message numbers received


class Tally:
    def __init__(self, peers: list[Peer], members: list[list[int]]):
        self.peers = peers
        self.members = members  # session index -> peer indexes
        self.sender: list[int] = []  # k -> peer index
        self.send_ns: list[int] = []
        self.ack_ns: list[int] = []
        self.sent = 0  # sends written to a socket (send_ns set)
        self.failed: dict[int, str] = {}
        self.errors = Counter()
        self.error_samples: list[dict] = []
        self.frames = Counter()
        self.notifications = Counter()  # "joined_session" / "other_session"
        self.notification_samples: list[dict] = []
        self.duplicates = 0
        self.seq_gaps = 0
        self.seq_regressions = 0
        self.receipts: list[int] = []  # k -> connections that received it (echo included)
        self.owed = 0  # receipts still owed for acked messages
        self.acked = 0
        self.latencies: list[int] = []
        self.send_lag: list[int] = []
        self.window_start = self.window_end = 0
        self.acks_in_window = 0
        self.deliveries_in_window = 0

    def plan(self, senders: list[int]) -> None:
        """Preallocate one slot per message; ``senders[k]`` sends message k."""
        self.sender = senders
        self.send_ns = [0] * len(senders)
        self.ack_ns = [0] * len(senders)
        self.receipts = [0] * len(senders)

    # ---- events, in the receive path: keep them cheap --------------------------------------

    def error(self, code: str, detail: dict | None = None, k: int | None = None) -> None:
        self.errors[code] += 1
        if k is not None and k not in self.failed and not self.ack_ns[k]:
            self.failed[k] = code
        if detail is not None and len(self.error_samples) < 20:
            self.error_samples.append(detail)

    def ack(self, k: int, now: int) -> None:
        if self.ack_ns[k]:
            self.duplicates += 1  # a second ack for one send
            return
        self.ack_ns[k] = now
        self.acked += 1
        self.owed += len(self.members[self.peers[self.sender[k]].session]) - self.receipts[k]
        if self.window_start <= now < self.window_end:
            self.acks_in_window += 1

    def message(self, peer: Peer, seq: int, k: int, sent: int, now: int) -> None:
        last = peer.last_seq
        if last is not None:
            if seq <= last:
                self.seq_regressions += 1
            elif seq != last + 1:
                self.seq_gaps += 1
        if last is None or seq > last:
            peer.last_seq = seq
        if k in peer.seen:
            self.duplicates += 1
            return
        peer.seen.add(k)
        self.receipts[k] += 1
        if self.ack_ns[k]:
            self.owed -= 1
        if self.sender[k] == peer.idx:
            return  # the sender's echo: checked for once-only, not part of the latency
        if self.window_start <= now < self.window_end:
            self.deliveries_in_window += 1
        if sent >= self.window_start:
            self.latencies.append(now - sent)

    def notification(self, peer: Peer, frame: dict, own_session: bool) -> None:
        self.notifications["joined_session" if own_session else "other_session"] += 1
        if len(self.notification_samples) < 10:
            self.notification_samples.append({"to": peer.user_id, "own_session": own_session,
                                              "frame": frame})

    def outstanding(self) -> int:
        """Acks and receipts still owed (0: nothing more is expected)."""
        return max(0, self.sent - self.acked - len(self.failed)) + max(0, self.owed)

    # ---- the end ---------------------------------------------------------------------------

    def report(self, window_s: float) -> dict:
        sent = self.sent
        missing_others = missing_echo = delivered = unacked_delivered = 0
        missing_samples: list[dict] = []
        for k, acked_at in enumerate(self.ack_ns):
            if not self.send_ns[k]:
                continue  # never sent (its connection had closed)
            owner = self.peers[self.sender[k]]
            for idx in self.members[owner.session]:
                got = k in self.peers[idx].seen
                if not acked_at:
                    unacked_delivered += got and idx != owner.idx
                    continue
                if got:
                    delivered += idx != owner.idx
                elif idx == owner.idx:
                    missing_echo += 1
                else:
                    missing_others += 1
                    if len(missing_samples) < 10:
                        missing_samples.append({"k": k, "to": self.peers[idx].user_id,
                                                "from": owner.user_id})
        unacked = sent - self.acked - len(self.failed)
        return {
            "sent": sent,
            "acked": self.acked,
            "failed": len(self.failed),
            "unanswered": max(0, unacked),
            "errors_by_code": dict(self.errors),
            "error_samples": self.error_samples,
            "delivered": delivered,
            "delivered_unacked": unacked_delivered,
            "duplicates": self.duplicates,
            "missing": missing_others + missing_echo,
            "missing_to_others": missing_others,
            "missing_echo": missing_echo,
            "missing_samples": missing_samples,
            "out_of_order": self.seq_gaps + self.seq_regressions,
            "seq_gaps": self.seq_gaps,
            "seq_regressions": self.seq_regressions,
            "throughput_msgs_per_s": round(self.acks_in_window / window_s, 1) if window_s else 0,
            "deliveries_per_s": round(self.deliveries_in_window / window_s, 1) if window_s else 0,
            "latency_ms": percentiles_ms(self.latencies),
            "send_lag_ms": percentiles_ms(self.send_lag),
            "frames_by_type": dict(self.frames),
            "unexpected_notifications": dict(self.notifications),
            "notification_samples": self.notification_samples,
        }
