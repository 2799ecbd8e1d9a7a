"""`python -m bot.cli ...`: how the local stack runs an `expertbot` command as a child process."""

from bot.cli.app import main

main()
