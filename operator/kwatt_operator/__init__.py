"""The kwatt operator: TrainingJob lifecycle, Job construction with sidecar injection.

The modules here (crd, spec, jobs, conditions) are pure: plain dicts in, plain
dicts out, no kopf and no API calls, so the rules they encode are unit-tested
without a cluster. The kopf handlers build on them.
"""

from __future__ import annotations
