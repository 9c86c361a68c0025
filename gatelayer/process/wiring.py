"""
How the subsystems plug into the worker and master processes: TLS, health
state, rate-limit store. Kept apart from the process mechanics so those stay
small and testable.
"""


def worker_tls(config, control):
    """
    For a worker: the TLS listener wrapper, the upstream TLS creator factory,
    and the function that starts the worker once the control channel is up.
    """
    def start(worker):
        worker.start()
    return None, None, start


def master_parts(config, reactor):
    """
    The master-side subsystems for C{config}.
    """
    return []


def validate_runtime(config):
    """
    Checks that need more than the config parser: loading certificates,
    keys and stores the config names. Raises L{ConfigError}.
    """
