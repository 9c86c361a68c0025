"""
C{gatelayer-apikey}: make a new API key and print the line that registers it
in C{apikeys.ini}.

Standard output gets only the C{[consumers]} line, with the key's SHA-256, so
C{gatelayer-apikey alice >> etc/keys/apikeys.ini} stores no plain key; the new
key itself is shown once on standard error, for the operator to hand over.
"""

import sys

from twisted.python import usage

from gatelayer.auth.apikeys import config_line, new_key


class Options(usage.Options):
    """
    Command line of C{gatelayer-apikey}.
    """

    synopsis = "Usage: gatelayer-apikey [--stdin] CONSUMER"
    longdesc = (
        "Print a [consumers] line for an API key file. Without --stdin a new random key is made "
        "and shown on standard error (give it to the consumer; it is not stored anywhere). "
        "With --stdin the key is read from standard input instead, e.g. to register a key "
        "the consumer already has.")
    optFlags = [["stdin", None, "Read the key from standard input instead of making one."]]

    def parseArgs(self, consumer):
        self["consumer"] = consumer


def main(argv=None, stdout=None, stdin=None, stderr=None):
    """
    Run the command; returns the process exit code.
    """
    argv = sys.argv[1:] if argv is None else argv
    stdout = sys.stdout if stdout is None else stdout
    stdin = sys.stdin if stdin is None else stdin
    stderr = sys.stderr if stderr is None else stderr
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        stderr.write(f"gatelayer-apikey: {e}\n{options}")
        return 2
    if options["stdin"]:
        key = stdin.readline().strip()
        if not key:
            stderr.write("gatelayer-apikey: no key on standard input\n")
            return 2
        made = False
    else:
        key = new_key()
        made = True
    try:
        line = config_line(options["consumer"], key)
    except ValueError as e:
        stderr.write(f"gatelayer-apikey: {e}\n")
        return 2
    if made:
        stderr.write(f"API key for {options['consumer']} (hand it over now; it is stored nowhere): {key}\n")
    stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
