"""The `storyforge` command, above both the origin and the workers, and the one error
every command reports as a single line with exit status 2 (`StartupError`)."""

EXIT_STARTUP = 2


class StartupError(RuntimeError):
    """A command could not start (bad configuration, unreachable services, missing
    binaries): reported in one line, exit status `EXIT_STARTUP`."""
