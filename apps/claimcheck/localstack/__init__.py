"""The local stack that ``make up`` starts, as code: its ports (ports.py), the role accounts
(accounts.py), its services with start, stop, kill -9, restart and readiness (services.py) and the
command line (``python -m claimcheck.localstack``). Nothing else in claimcheck imports this but
the settings' defaults (ports and accounts) and the demo (accounts)."""
