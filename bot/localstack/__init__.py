"""The local stack `expertbot up` runs on one machine; what the tests, benchmarks and CLI start it with."""

from bot.localstack.processes import (
    ManagedProcess,
    StackError,
    child_env,
    cli_command,
    free_port,
    project_pythonpath,
)
from bot.localstack.services import start_milvus, start_redis, start_teams, start_worker
from bot.localstack.stack import LocalStack

__all__ = [
    "LocalStack",
    "ManagedProcess",
    "StackError",
    "child_env",
    "cli_command",
    "free_port",
    "project_pythonpath",
    "start_milvus",
    "start_redis",
    "start_teams",
    "start_worker",
]
