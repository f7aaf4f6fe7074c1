"""claimcheck_operator: a kopf operator that turns a ``ClaimCheckJob`` into producer and consumer Jobs.

Layout, one concern per module:
``config`` (operator settings from the environment), ``naming`` (names and labels tying
children to their resource), ``builders/`` (one pure builder per child object),
``observe`` (what the operator saw: Jobs and coordinator progress), ``conditions/``
(one pure function per status condition), ``reconcile`` (status from observation),
``kube`` and ``coordinator`` (the only modules doing I/O), ``handlers`` (kopf wiring),
``main`` (console script).
"""

GROUP = "claimcheck.io"
VERSION = "v1alpha1"
PLURAL = "claimcheckjobs"
KIND = "ClaimCheckJob"
