"""`python -m dpgate.cli`: the same as the `dpgate` command."""

from dpgate.cli import main

main()
