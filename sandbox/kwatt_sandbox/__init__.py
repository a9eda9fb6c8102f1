"""kwatt's sandbox cluster: a Kubernetes API emulator for tests and demos.

This is an emulator for tests and demos; production is a real cluster. It serves
the Kubernetes REST API over real HTTP on 127.0.0.1 so that kubectl, kopf and the
`kubernetes` client work against it unchanged. Start one from Python with
`kwatt_sandbox.testing.running_sandbox`, or from a shell with `kwatt sandbox`.
"""

from kwatt_sandbox.server import HARNESS_NOTICE, SandboxConfig, SandboxServer

__all__ = ["HARNESS_NOTICE", "SandboxConfig", "SandboxServer"]
