"""Faults injected on request: API errors, 409 storms, slow answers, dropped watches
(applied by the fault proxy in front of the API server), killed containers and stopped
node heartbeats (carried out by the node agents).

Part of the sandbox cluster, a test and demo harness; production is a real cluster.
Every fault is bounded by a count or a time to live, so a test cannot leave the
sandbox broken. Thread-safe: tests inject from their own thread while the proxy and
the node agents consult the rules on theirs.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# The `kind` values `add_from_dict` takes (a Rule's own kind says what is done: a
# "conflicts" spec makes an "error" rule, a "slow" one a "delay" rule).
KINDS = (
    "error",
    "conflicts",
    "slow",
    "drop_watch",
    "gone_watch",
    "kill_container",
    "stop_heartbeat",
)


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
    kind: str  # "error", "delay", "drop_watch", "gone_watch", "kill_container", "stop_heartbeat"
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
            "message": self.message,
            "reason": self.reason,
            "delay": self.delay,
            "after": self.after,
            "hits": self.hits,
            "extra": dict(self.extra),
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
            raise ValueError("A fault's 'count' must be at least 1 (or None for no limit).")
        if count is None and ttl is None:
            raise ValueError("A fault needs a 'count' or a 'ttl' (time to live), so that it ends.")
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
        count: int | None = 3,
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

        def accepts(rule: Rule) -> bool:
            match = rule.match
            return (
                rule.kind == "kill_container"
                and uptime >= rule.after
                and match.namespace in (None, namespace)
                and match.name in (None, pod)
                and rule.extra.get("container") in (None, container)
            )

        return self._take_first(accepts) is not None

    def stop_heartbeat(
        self, node: str, *, count: int | None = None, ttl: float | None = 60.0
    ) -> Rule:
        """Have node agent `node` skip renewing its Lease and Node status, so the control
        plane sees it go silent: for `ttl` seconds, or for its next `count` renewals."""
        return self._add("stop_heartbeat", Match(None, "nodes", None, node), count, ttl)

    def take_heartbeat_stop(self, node: str) -> bool:
        """For a node agent: whether to skip this heartbeat (uses one count, if counted)."""
        return (
            self._take_first(
                lambda rule: rule.kind == "stop_heartbeat" and rule.match.name in (None, node)
            )
            is not None
        )

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

        def accepts(rule: Rule) -> bool:
            verbs = rule.extra.get("verbs")
            return (
                rule.kind in kinds
                and rule.match.accepts(target)
                and (not verbs or target.verb in verbs)
            )

        return self._take_first(accepts)

    def _take_first(self, accepts: Callable[[Rule], bool]) -> Rule | None:
        """Drop ended rules, then consume one use of the first live rule `accepts` takes:
        the one way every fault, API or node, is used up."""
        with self._lock:
            now = time.monotonic()
            self._rules = [r for r in self._rules if r.live(now)]
            for rule in self._rules:
                if not accepts(rule):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                rule.hits += 1
                return rule
        return None

    def add_from_dict(self, spec: Any) -> Rule:
        """Create a rule from the JSON body of `POST /sandbox/faults`.

        The body comes from outside the test process, so every field is checked and
        any mistake is a ValueError whose sentence names the field (never a TypeError).
        """
        if not isinstance(spec, dict):
            raise ValueError('A fault must be a JSON object, such as {"kind": "error"}.')
        kind = spec.get("kind", "error")
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"Field 'kind' must be one of {', '.join(KINDS)}, not {_show(kind)}.")
        allowed = _FIELDS[kind]
        for key in spec:
            if key != "kind" and key not in allowed:
                raise ValueError(
                    f"Field {_show(key)} does not apply to a {kind} fault; it takes "
                    f"{', '.join(sorted(allowed))}."
                )
        v = _Spec(spec)
        count = v.count("count", None if kind == "stop_heartbeat" else 1)
        ttl = v.optional_seconds("ttl")
        namespace = v.text("namespace")
        if kind == "error":
            return self.error(
                v.code("code", 500),
                verb=v.text("verb"),
                resource=v.text("resource"),
                name=v.text("name"),
                message=v.text("message") or "",
                reason=v.text("reason") or "",
                namespace=namespace,
                count=count,
                ttl=ttl,
            )
        if kind == "conflicts":
            return self.conflicts(
                v.text("resource", required=True) or "",
                name=v.text("name"),
                namespace=namespace,
                count=count,
                ttl=ttl,
            )
        if kind == "slow":
            return self.slow(
                v.seconds("delay", 1.0),
                verb=v.text("verb"),
                resource=v.text("resource"),
                name=v.text("name"),
                namespace=namespace,
                count=count,
                ttl=ttl,
            )
        if kind in ("drop_watch", "gone_watch"):
            add = self.drop_watches if kind == "drop_watch" else self.expire_watches
            return add(
                resource=v.text("resource"),
                after=v.seconds("after", 0.0),
                namespace=namespace,
                count=count,
                ttl=ttl,
            )
        if kind == "kill_container":
            name, pod = v.text("name"), v.text("pod")
            if name is not None and pod is not None and name != pod:
                raise ValueError("Fields 'name' and 'pod' name the same pod: give only one.")
            return self.kill_container(
                pod=name if name is not None else pod,
                container=v.text("container"),
                after=v.seconds("after", 0.0),
                namespace=namespace,
                count=count,
                ttl=ttl,
            )
        # stop_heartbeat: no namespace, and the method's own time to live when none is given
        node = v.text("node", required=True) or ""
        if "ttl" in spec:
            return self.stop_heartbeat(node, count=count, ttl=ttl)
        return self.stop_heartbeat(node, count=count)


_MATCH = frozenset({"namespace", "count", "ttl"})
_FIELDS: dict[str, frozenset[str]] = {
    "error": _MATCH | {"verb", "resource", "name", "code", "message", "reason"},
    "conflicts": _MATCH | {"resource", "name"},
    "slow": _MATCH | {"verb", "resource", "name", "delay"},
    "drop_watch": _MATCH | {"resource", "after"},
    "gone_watch": _MATCH | {"resource", "after"},
    "kill_container": _MATCH | {"name", "pod", "container", "after"},
    "stop_heartbeat": frozenset({"node", "count", "ttl"}),
}


def _show(value: Any) -> str:
    """A value for an error message, short enough not to echo a huge body back."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Spec:
    """Typed reads of one fault's JSON fields, each failing with a sentence naming the field."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec = spec

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self._spec.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            need = "a string" if required else "a string or null"
            raise ValueError(f"Field '{key}' must be {need}, not {_show(value)}.")
        return value

    def count(self, key: str, default: int | None) -> int | None:
        value = self._spec.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Field '{key}' must be a positive integer (or null for no limit), "
                f"not {_show(value)}."
            )
        return value

    def code(self, key: str, default: int) -> int:
        value = self._spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
            raise ValueError(
                f"Field '{key}' must be an integer HTTP status from 400 to 599, not {_show(value)}."
            )
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self._spec.get(key, default)
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = None
        if number is None or not math.isfinite(number) or number < 0:
            raise ValueError(
                f"Field '{key}' must be a non-negative, finite number of seconds, "
                f"not {_show(value)}."
            )
        return number

    def optional_seconds(self, key: str) -> float | None:
        if self._spec.get(key) is None:
            return None
        return self.seconds(key, 0.0)
