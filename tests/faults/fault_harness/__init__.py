"""The fault-injection harness: real component processes (components.py) in a scenario of one job
(scenario.py), faults injected through the local stack's Python interface (stack.py, over
claimcheck.localstack), ledger probes (ledger.py), the end-of-scenario checks (checks.py) and the
recovery measurements (recovery.py).

Nothing here sleeps to hide a race: every wait polls a condition until a deadline (testkit.wait_until).
"""
