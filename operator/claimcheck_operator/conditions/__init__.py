"""Status conditions, one module per type; each is a pure function of the observation and its previous value.

Types: ``JobsCreated``, ``ProducerComplete``, ``AllDeleted``, ``SpecApplied``, ``Failed``.
"""

from claimcheck_operator.conditions.base import Condition, find, make

__all__ = ["Condition", "find", "make"]
