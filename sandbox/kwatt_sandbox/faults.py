"""Faults injected on request: API errors, 409 storms, slow answers, dropped watches,
killed containers (carried out by the simulated nodes' kubelet).

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Every fault is bounded by a count and optionally by a time to live, so a
test cannot leave the sandbox broken. Thread-safe: tests inject from their own
thread while the server consults the rules on its loop thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class RequestTarget:
    """The attributes a fault can match on (same names as the audit log)."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str


@dataclass
class Match:
    """Which requests a rule applies to; None matches anything. `resource` may be
    `plural`, `plural.group` or `plural/subresource`; `verb` may be `write`."""

    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None

    def accepts(self, target: RequestTarget) -> bool:
        if self.verb is not None:
            if self.verb == "write":
                if target.verb not in WRITE_VERBS:
                    return False
            elif self.verb != target.verb:
                return False
        if self.resource is not None:
            base, _, sub = self.resource.partition("/")
            plural, _, group = base.partition(".")
            if plural != target.resource or (group and group != target.group):
                return False
            if sub and sub != target.subresource:
                return False
        if self.namespace is not None and self.namespace != target.namespace:
            return False
        return self.name is None or self.name == target.name


@dataclass
class Rule:
    """One active fault; `remaining` None means unlimited (until `expires`)."""

    id: int
    kind: str  # "error", "delay", "drop_watch", "gone_watch", "kill_container"
    match: Match
    remaining: int | None
    expires: float | None
    code: int = 500
    message: str = ""
    reason: str = ""
    delay: float = 0.0
    after: float = 0.0
    hits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def live(self, now: float) -> bool:
        return (self.remaining is None or self.remaining > 0) and (
            self.expires is None or now < self.expires
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "match": vars(self.match),
            "remaining": self.remaining,
            "expires": self.expires,
            "code": self.code,
            "delay": self.delay,
            "hits": self.hits,
        }


class Faults:
    """The fault rules of one sandbox; methods return the rule so tests can inspect hits."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._drop_epoch = 0
        self._drop_match: list[tuple[int, Match, str]] = []

    def _add(
        self, kind: str, match: Match, count: int | None, ttl: float | None, **kw: Any
    ) -> Rule:
        if count is not None and count < 1:
            raise ValueError("A fault needs a count of at least 1 (or None for no limit).")
        if count is None and ttl is None:
            raise ValueError("A fault needs a count or a time to live, so that it ends.")
        expires = time.monotonic() + ttl if ttl is not None else None
        rule = Rule(next(self._ids), kind, match, count, expires, **kw)
        with self._lock:
            self._rules.append(rule)
        return rule

    def error(
        self,
        code: int,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        count: int | None = 1,
        ttl: float | None = None,
        message: str = "",
        reason: str = "",
    ) -> Rule:
        """Answer matching requests with `code` (a Status body), `count` times."""
        return self._add(
            "error",
            Match(verb, resource, namespace, name),
            count,
            ttl,
            code=code,
            message=message or f"injected fault: the sandbox answers {code} on request",
            reason=reason,
        )

    def conflicts(
        self,
        resource: str,
        *,
        count: int = 3,
        namespace: str | None = None,
        name: str | None = None,
        ttl: float | None = None,
    ) -> Rule:
        """A 409 storm: the next `count` writes (update/patch) to `resource` get Conflict."""
        rule = self._add(
            "error",
            Match(None, resource, namespace, name),
            count,
            ttl,
            code=409,
            reason="Conflict",
            message="the object has been modified; please apply your changes to the latest "
            "version and try again",
        )
        rule.extra["verbs"] = ("update", "patch")
        return rule

    def slow(
        self,
        delay: float,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        count: int | None = 1,
        ttl: float | None = None,
    ) -> Rule:
        """Delay matching requests by `delay` seconds before they are served."""
        return self._add("delay", Match(verb, resource, namespace, name), count, ttl, delay=delay)

    def drop_watches(
        self,
        *,
        resource: str | None = None,
        namespace: str | None = None,
        count: int | None = 1,
        after: float = 0.0,
        ttl: float | None = None,
    ) -> Rule:
        """Cut the next `count` matching watch streams `after` seconds into them."""
        return self._add("drop_watch", Match("watch", resource, namespace), count, ttl, after=after)

    def expire_watches(
        self,
        *,
        resource: str | None = None,
        namespace: str | None = None,
        count: int | None = 1,
        after: float = 0.0,
        ttl: float | None = None,
    ) -> Rule:
        """End the next `count` matching watches with an ERROR event carrying 410 Gone."""
        return self._add("gone_watch", Match("watch", resource, namespace), count, ttl, after=after)

    def kill_container(
        self,
        *,
        namespace: str | None = None,
        pod: str | None = None,
        container: str | None = None,
        count: int | None = 1,
        after: float = 0.0,
        ttl: float | None = None,
    ) -> Rule:
        """SIGKILL the next `count` matching running containers of the simulated nodes,
        once each has run `after` seconds (None matches any pod or container)."""
        rule = self._add(
            "kill_container", Match(None, "pods", namespace, pod), count, ttl, after=after
        )
        rule.extra["container"] = container
        return rule

    def take_container_kill(self, namespace: str, pod: str, container: str, uptime: float) -> bool:
        """For the kubelet: whether to kill this running container now (uses one count)."""
        with self._lock:
            now = time.monotonic()
            for rule in self._rules:
                if rule.kind != "kill_container" or not rule.live(now) or uptime < rule.after:
                    continue
                match = rule.match
                if match.namespace not in (None, namespace) or match.name not in (None, pod):
                    continue
                if rule.extra.get("container") not in (None, container):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                rule.hits += 1
                return True
        return False

    def drop_open_watches(self, resource: str | None = None, how: str = "drop") -> None:
        """Cut every watch that is open now (`how`: "drop" closes, "gone" sends 410)."""
        with self._lock:
            self._drop_epoch += 1
            self._drop_match.append((self._drop_epoch, Match("watch", resource), how))

    @property
    def drop_epoch(self) -> int:
        with self._lock:
            return self._drop_epoch

    def open_watch_action(self, target: RequestTarget, since_epoch: int) -> str | None:
        """For an open watch: "drop"/"gone" if `drop_open_watches` was called since it began."""
        with self._lock:
            for epoch, match, how in self._drop_match:
                if epoch > since_epoch and match.accepts(target):
                    return how
        return None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._drop_match.clear()

    def rules(self) -> list[Rule]:
        with self._lock:
            now = time.monotonic()
            return [r for r in self._rules if r.live(now)]

    def take(self, target: RequestTarget, kinds: tuple[str, ...]) -> Rule | None:
        """Consume one use of the first live rule of `kinds` that matches the request."""
        with self._lock:
            now = time.monotonic()
            self._rules = [r for r in self._rules if r.live(now)]
            for rule in self._rules:
                if rule.kind not in kinds or not rule.match.accepts(target):
                    continue
                verbs = rule.extra.get("verbs")
                if verbs and target.verb not in verbs:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                rule.hits += 1
                return rule
        return None

    def add_from_dict(self, spec: dict[str, Any]) -> Rule:
        """Create a rule from the JSON body of `POST /sandbox/faults`."""
        kind = spec.get("kind", "error")
        common: dict[str, Any] = {
            "resource": spec.get("resource"),
            "namespace": spec.get("namespace"),
            "ttl": spec.get("ttl"),
        }
        count = spec.get("count", 1)
        if kind == "error":
            return self.error(
                int(spec.get("code", 500)),
                verb=spec.get("verb"),
                name=spec.get("name"),
                count=count,
                message=spec.get("message", ""),
                **common,
            )
        if kind == "conflicts":
            return self.conflicts(
                str(spec.get("resource")),
                count=count,
                namespace=spec.get("namespace"),
                name=spec.get("name"),
                ttl=spec.get("ttl"),
            )
        if kind == "slow":
            return self.slow(
                float(spec.get("delay", 1.0)),
                verb=spec.get("verb"),
                name=spec.get("name"),
                count=count,
                **common,
            )
        if kind == "drop_watch":
            return self.drop_watches(count=count, after=float(spec.get("after", 0.0)), **common)
        if kind == "gone_watch":
            return self.expire_watches(count=count, after=float(spec.get("after", 0.0)), **common)
        if kind == "kill_container":
            return self.kill_container(
                namespace=spec.get("namespace"),
                pod=spec.get("name") or spec.get("pod"),
                container=spec.get("container"),
                count=count,
                after=float(spec.get("after", 0.0)),
                ttl=spec.get("ttl"),
            )
        raise ValueError(
            f"Unknown fault kind {kind!r}: use error, conflicts, slow, drop_watch, gone_watch "
            "or kill_container."
        )
