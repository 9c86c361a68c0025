"""
The error type every configuration problem is reported through.
"""


class ConfigError(Exception):
    """
    One or more problems in a configuration file.

    @ivar problems: every problem found, each a full sentence naming file,
        section, key and the bad value, so an operator can fix all of them
        in one go rather than one per run.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
