"""
Tests for the tracing configuration: C{[gateway] trace_sample_rate} and the
C{[tracing]} section, their defaults and the errors bad values get.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config import tracing

BASE = """
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /hello
respond = 200 hello
"""


def parse(text):
    return parse_config_text(BASE + text, "/etc/gate/gate.ini", cpu_count=1)


class TracingConfigTests(SynchronousTestCase):
    """
    Reading the tracing keys.
    """

    def problems(self, text):
        """
        The problems C{text} (after the base config) is refused with.
        """
        with self.assertRaises(ConfigError) as caught:
            parse(text)
        return caught.exception.problems

    def test_defaults(self):
        """
        Without either, every new trace is sampled and nothing is exported.
        """
        config = parse("")
        self.assertEqual(config.gateway.trace_sample_rate, 1.0)
        self.assertEqual(config.tracing.exporter, "none")

    def test_section(self):
        """
        A [tracing] section exports over OTLP by default; its keys are read.
        """
        config = parse("[gateway]\ntrace_sample_rate = 0.25\n[tracing]\nendpoint = https://otel.example:4318/v1/traces\n"
                       "service_name = edge\ntimeout = 2s\nbatch_size = 64\nqueue_size = 128\n"
                       "flush_interval = 500ms\n")
        self.assertEqual(config.gateway.trace_sample_rate, 0.25)
        self.assertEqual(config.tracing, tracing.TracingSpec(
            exporter="otlp", endpoint="https://otel.example:4318/v1/traces", service_name="edge",
            timeout=2.0, batch_size=64, queue_size=128, flush_interval=0.5))
        self.assertEqual(parse("[tracing]\nexporter = none\n").tracing.exporter, "none")

    def test_bad_sample_rate(self):
        """
        A rate outside 0.0..1.0, or not a number, names section and key.
        """
        for text in ["1.5", "-0.1", "half", "nan"]:
            problems = self.problems(f"[gateway]\ntrace_sample_rate = {text}\n")
            self.assertEqual(len(problems), 1, problems)
            self.assertIn("[gateway] trace_sample_rate: ", problems[0])
            self.assertIn("from 0.0 to 1.0", problems[0])

    def test_bad_tracing_keys(self):
        """
        Each bad [tracing] value is reported with its key, all together.
        """
        problems = self.problems(
            "[tracing]\nexporter = zipkin\nendpoint = ftp://x/\ntimeout = 0s\nbatch_size = 0\n"
            "flush_interval = soon\nsampler = always\n")
        text = "\n".join(problems)
        for key in ("exporter", "endpoint", "timeout", "batch_size", "flush_interval", "sampler"):
            self.assertIn(f"[tracing] {key}: ", text)
        self.assertIn("[tracing] sampler: is not a known key", text)

    def test_endpoint_forms(self):
        """
        The endpoint needs http or https, a host and a numeric port.
        """
        for bad in ["127.0.0.1:4318", "http://", "http://host:port/v1/traces"]:
            problems = self.problems(f"[tracing]\nendpoint = {bad}\n")
            self.assertIn("[tracing] endpoint: ", problems[0])

    def test_batch_not_above_queue(self):
        """
        A batch larger than the queue could never be sent whole.
        """
        problems = self.problems("[tracing]\nbatch_size = 100\nqueue_size = 10\n")
        self.assertIn("[tracing] batch_size: 100 is larger than queue_size (10)", problems[0])

    def test_named_section_refused(self):
        """
        There is one [tracing] section, without a name.
        """
        problems = self.problems("[tracing:x]\n")
        self.assertIn("[tracing:x]: is not a known section", problems[0])

    def test_extra_not_installed(self):
        """
        Without the OpenTelemetry packages, exporter = otlp is refused with
        the extra to install; exporter = none is fine.
        """
        self.patch(tracing, "otel_installed", lambda: False)
        problems = self.problems("[tracing]\nexporter = otlp\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("[tracing] exporter: 'otlp' needs the OpenTelemetry", problems[0])
        self.assertIn("gatelayer[otel]", problems[0])
        self.assertEqual(parse("[tracing]\nexporter = none\n").tracing.exporter, "none")

    def test_installed_check(self):
        """
        Here the test extra is installed, and the check finds it.
        """
        self.assertTrue(tracing.otel_installed())
