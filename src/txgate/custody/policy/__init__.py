"""Policy: the hook the pipeline consults, and the policy engine behind it.

`hook` holds the interface (`PolicyHook`, `Decision`, `Verdict`); the engine (ordered rules,
default deny, approval requirements, velocity limits) lives beside it in this package.
"""

from txgate.custody.policy.hook import Decision, PolicyHook, Verdict

__all__ = ["Decision", "PolicyHook", "Verdict"]
# The engine's modules are imported by name (document, engine, facts, calldata, ledger, store,
# gate): importing them here would make `hook` depend on the whole engine.
