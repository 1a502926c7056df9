"""Safety: the rules the monitor checks, scans of audit logs and trajectories, red teaming.

The mechanism (seccomp user notification, the supervisor, the rule engine) is the sandbox's
(`rockroll.sandbox.watch`, `supervisor`); this package holds what is checked and what is done
with it.
"""

from rockroll.safety.catalog import default_rules, load_rules, observing

__all__ = ["default_rules", "load_rules", "observing"]
