"""The reliability suite (`expertbot bench reliability`): faults survived, nothing lost, nothing leaked.

`registry` lists the scenarios and runs them in one child process (`runner`) that owns a throw-away stack
(`harness`): its own Redis and Milvus Lite, which the fault scenarios kill and restart. Scenarios live in modules
named for what they break: `faults`, `hostile`, `isolation`, `load`.
"""
