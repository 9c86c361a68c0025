"""
Tests for L{gatelayer.auth.apikeys} and the C{gatelayer-apikey} command.
"""

import hashlib
import io

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.auth.apikeys import (
    KEY_PREFIX, MAX_KEY_LENGTH, ApiKeysError, ApiKeyStore, config_line, hash_key, load_apikeys, new_key,
    parse_apikeys,
)
from gatelayer.filters.apikey_cli import main

ALICE_KEY = "glk_alice-secret"
BOB_KEY = "glk_bob-secret"


def _file(*lines):
    return "\n".join(lines) + "\n"


class StoreTests(SynchronousTestCase):
    """
    Parsing the key file and looking keys up.
    """

    def test_lookup(self):
        """
        A key is found by its SHA-256; unknown, empty and huge keys are not.
        """
        store = parse_apikeys(_file(
            "# who may call us", "[consumers]",
            f"alice = {hash_key(ALICE_KEY)}", f"bob.smith@example.com = {hash_key(BOB_KEY).upper()}  ; ops"),
            "apikeys.ini")
        self.assertEqual(store.consumer_for(ALICE_KEY.encode()), "alice")
        self.assertEqual(store.consumer_for(BOB_KEY.encode()), "bob.smith@example.com")
        self.assertIsNone(store.consumer_for(b"glk_mallory"))
        self.assertIsNone(store.consumer_for(b""))
        self.assertIsNone(store.consumer_for(b"x" * (MAX_KEY_LENGTH + 1)))
        self.assertIsNone(store.consumer_for(hash_key(ALICE_KEY).encode()))
        self.assertEqual(store.consumers, ["alice", "bob.smith@example.com"])
        self.assertEqual(len(store), 2)

    def test_problems(self):
        """
        Every problem in the file is reported, naming file, section and
        consumer.
        """
        cases = [
            ("", "has no [consumers] section"),
            (_file("[consumers]"), "[consumers]: lists no consumer"),
            (_file("[consumers]", "alice = my-plain-key"), "apikeys.ini [consumers] alice: is not a SHA-256"),
            (_file("[consumers]", f"alice = {hash_key('a')[:-1]}"), "is not a SHA-256"),
            (_file("[consumers]", f"al ice = {hash_key('a')}"), "is not a consumer name"),
            (_file("[consumers]", f"-alice = {hash_key('a')}"), "is not a consumer name"),
            (_file("[consumers]", f"alice = {hash_key('a')}", f"bob = {hash_key('a')}"),
             "[consumers] bob: has the same key as alice"),
            (_file("[consumers]", f"alice = {hash_key('a')}", f"alice = {hash_key('b')}"), "apikeys.ini"),
            (_file("[users]", f"alice = {hash_key('a')}"), "[users]: is not a known section"),
            (_file("# keys", "alice = x"), "apikeys.ini: line 2 comes before the [consumers] section header"),
        ]
        for text, expected in cases:
            with self.assertRaises(ApiKeysError) as raised:
                parse_apikeys(text, "apikeys.ini")
            self.assertTrue(any(expected in p for p in raised.exception.problems), (text, raised.exception.problems))

    def test_load(self):
        """
        Files are read as UTF-8; unreadable ones are an error naming them.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_file("[consumers]", f"alice = {hash_key(ALICE_KEY)}"))
        self.assertEqual(load_apikeys(path).consumers, ["alice"])
        with self.assertRaises(ApiKeysError) as raised:
            load_apikeys(path + ".missing")
        self.assertIn(path + ".missing: cannot be read", str(raised.exception))
        with open(path, "wb") as f:
            f.write(b"\xff\xfe")
        self.assertRaises(ApiKeysError, load_apikeys, path)

    def test_helpers(self):
        """
        New keys are random and prefixed; config lines hash them.
        """
        one, two = new_key(), new_key()
        self.assertNotEqual(one, two)
        self.assertTrue(one.startswith(KEY_PREFIX))
        self.assertGreaterEqual(len(one), 40)
        self.assertEqual(hash_key("abc"), hashlib.sha256(b"abc").hexdigest())
        self.assertEqual(config_line("alice", "abc"), "alice = " + hashlib.sha256(b"abc").hexdigest())
        self.assertRaises(ValueError, config_line, "a b", "abc")
        self.assertIsInstance(ApiKeyStore({}), ApiKeyStore)


class CommandTests(SynchronousTestCase):
    """
    gatelayer-apikey prints the line for a new key.
    """

    def run_main(self, argv, stdin=""):
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main(argv, stdout=stdout, stdin=io.StringIO(stdin), stderr=stderr)
        return code, stdout.getvalue(), stderr.getvalue()

    def test_new_key(self):
        """
        A new key is shown on standard error, and the config line on
        standard output registers exactly it (without the key itself).
        """
        code, out, err = self.run_main(["alice"])
        self.assertEqual(code, 0)
        self.assertTrue(err.startswith("API key for alice"))
        key = err.split()[-1]
        line, = out.splitlines()
        self.assertNotIn(key, out)
        self.assertTrue(key.startswith(KEY_PREFIX))
        store = parse_apikeys("[consumers]\n" + line + "\n", "apikeys.ini")
        self.assertEqual(store.consumer_for(key.encode()), "alice")

    def test_stdin(self):
        """
        --stdin hashes a key the consumer already has; the key is not
        printed.
        """
        code, out, err = self.run_main(["--stdin", "bob"], "existing-key\n")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"bob = {hash_key('existing-key')}\n")
        self.assertNotIn("existing-key", out)

    def test_errors(self):
        """
        A missing or bad consumer name, or no key on stdin, fail with 2.
        """
        for argv, stdin in ([], ""), (["a b"], ""), (["--stdin", "bob"], ""), (["a", "b"], ""):
            code, out, err = self.run_main(argv, stdin)
            self.assertEqual((code, out), (2, ""), argv)
            self.assertIn("gatelayer-apikey: ", err)
