"""
Tests that keep the documentation true: docs/reference.md lists exactly the
keys the configuration loader accepts, the example configurations in
etc/examples pass C{--check}, and the links between the documentation files
resolve.
"""

import importlib
import inspect
import io
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import unicodedata

from twisted.trial.unittest import SynchronousTestCase

import gatelayer
import gatelayer.config
from gatelayer.testing.certs import CertificateAuthority

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
REFERENCE = os.path.join(DOCS, "reference.md")
EXAMPLES = os.path.join(ROOT, "etc", "examples")

#: The section kinds of gate.ini as docs/reference.md heads them; filter
#: sections are one kind per filter type, found from the loader's own error.
_HEADING = re.compile(r"^## \[(?P<kind>[a-z]+)(?::NAME)?\](?: type = (?P<type>[a-z_]+))?\s*$")
_KEY_CELL = re.compile(r"^\|\s*`([a-z0-9_]+)`\s*\|")
_UNKNOWN_KEY = re.compile(r"\[(?P<section>[^\]]+)\] (?P<key>[a-z0-9_]+): is not a known key")


def documented_keys(text):
    """
    The keys docs/reference.md documents, by section kind: C{{"gateway":
    {...}, "filter type = jwt": {...}, ...}}. A key is the first cell, in
    backticks, of a row of a table whose header's first cell is C{key},
    under a C{## [kind:NAME]} heading (subheadings stay in the section).
    """
    sections = {}
    current = None
    in_key_table = False
    for line in text.splitlines():
        if line.startswith("## "):
            match = _HEADING.match(line)
            current = None
            if match is not None:
                current = match["kind"] + (f" type = {match['type']}" if match["type"] else "")
                sections.setdefault(current, set())
            in_key_table = False
            continue
        if not line.startswith("|"):
            in_key_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "key":
            in_key_table = True
            continue
        if in_key_table and current is not None:
            match = _KEY_CELL.match(line)
            if match is not None:
                sections[current].add(match.group(1))
    return sections


def find_section_reader():
    """
    The class every configuration key is read through (its C{get},
    C{choice}, C{path}, C{has} and C{raw} methods), wherever the config
    package keeps it: looked up by name in the config package first, then
    in the rest of gatelayer.
    """
    for package in (gatelayer.config, gatelayer):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".testing" in info.name or info.name.endswith(".main"):
                continue
            try:
                module = importlib.import_module(info.name)
            except Exception:
                continue
            candidate = getattr(module, "SectionReader", None)
            if inspect.isclass(candidate) and all(
                    hasattr(candidate, m) for m in ("get", "choice", "path", "has", "raw")):
                return candidate
    raise AssertionError("no SectionReader class with get/choice/path/has/raw in gatelayer")


class KeyRecorder:
    """
    Records every key read through a SectionReader while a configuration is
    checked, by section: the keys the loader asks for are the keys it
    accepts.
    """

    def __init__(self, test, reader_class):
        self.keys = {}
        for method in ("get", "choice", "path", "has", "raw"):
            original = getattr(reader_class, method)
            test.patch(reader_class, method, self._recording(original))

    def _recording(self, original):
        recorder = self

        def method(reader, key, *args, **kwargs):
            recorder.keys.setdefault(reader.section, set()).add(key)
            return original(reader, key, *args, **kwargs)
        return method


def check_config(test, text):
    """
    Run C{twistd gatelayer --check}'s option parsing in this process on
    C{text}; returns the problems it printed (empty when the config is
    valid).
    """
    from gatelayer.tap import Options
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "gate.ini")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    err, out = io.StringIO(), io.StringIO()
    test.patch(sys, "stderr", err)
    test.patch(sys, "stdout", out)
    try:
        Options().parseOptions(["-c", path, "--check"])
    except SystemExit:
        pass
    return err.getvalue()


def filter_types(test):
    """
    The built-in filter types the loader knows, from the error naming them
    when a filter section has an unknown type (types that installed
    distributions add follow C{; installed:} and are documented by their
    packages).
    """
    problems = check_config(test, "[filter:probe]\ntype = no-such-type\n")
    match = re.search(r"type: 'no-such-type' is not a filter type \(([^);]*)[);]", problems)
    test.assertIsNotNone(match, problems)
    return [t.strip() for t in match.group(1).split(",")]


class ReferenceKeysTests(SynchronousTestCase):
    """
    docs/reference.md documents every key the loader accepts, and nothing
    else.
    """

    def setUp(self):
        with open(REFERENCE, encoding="utf-8") as f:
            self.documented = documented_keys(f.read())
        self.types = filter_types(self)

    def accepted_keys(self):
        """
        Every key the loader reads, by section kind, recorded while it
        checks a config with one empty section of each kind (and one filter
        of each type).
        """
        recorder = KeyRecorder(self, find_section_reader())
        sections = ["[gateway]", "[listener:l]", "[tls:t]", "[upstream:u]", "[route:r]", "[tracing]"]
        sections += [f"[filter:f-{t}]\ntype = {t}" for t in self.types]
        check_config(self, "\n".join(sections) + "\n")
        accepted = {}
        for section, keys in recorder.keys.items():
            kind, _, name = section.partition(":")
            if kind == "filter":
                kind = "filter type = " + name[len("f-"):]
            accepted.setdefault(kind, set()).update(keys)
        return accepted

    def test_sections(self):
        """
        The reference has a section for each section kind and filter type,
        and no other.
        """
        kinds = {"gateway", "listener", "tls", "upstream", "route", "tracing"}
        kinds |= {f"filter type = {t}" for t in self.types}
        self.assertEqual(set(self.documented), kinds)

    def test_accepted_keys_are_documented(self):
        """
        Every key the loader reads is in the reference, in its section.
        """
        accepted = self.accepted_keys()
        self.assertEqual(set(accepted), set(self.documented))
        missing = {kind: sorted(keys - self.documented[kind])
                   for kind, keys in accepted.items() if keys - self.documented[kind]}
        self.assertEqual(missing, {}, "accepted by the loader but not in docs/reference.md")

    def test_documented_keys_are_accepted(self):
        """
        Every key of the reference is one the loader reads for that section.
        """
        accepted = self.accepted_keys()
        extra = {kind: sorted(keys - accepted.get(kind, set()))
                 for kind, keys in self.documented.items() if keys - accepted.get(kind, set())}
        self.assertEqual(extra, {}, "in docs/reference.md but not read by the loader")

    def test_documented_keys_are_not_unknown(self):
        """
        A config setting every documented key gets no "is not a known key"
        error: the loader accepts each of them, not only asks for it.
        """
        sections = []
        for kind, keys in sorted(self.documented.items()):
            if kind.startswith("filter type = "):
                filter_type = kind[len("filter type = "):]
                header = f"[filter:f-{filter_type}]"
                keys = keys - {"type"}
                lines = [f"type = {filter_type}"]
            else:
                header = "[gateway]" if kind == "gateway" else f"[{kind}:x]"
                lines = []
            sections.append("\n".join([header, *lines, *(f"{k} = x" for k in sorted(keys))]))
        problems = check_config(self, "\n\n".join(sections) + "\n")
        self.assertIn("is not valid", problems)
        self.assertEqual(_UNKNOWN_KEY.findall(problems), [])

    def test_parser_reads_tables(self):
        """
        The reference parser takes keys from key tables under section
        headings only.
        """
        text = "\n".join([
            "## Values", "| key | x |", "|---|---|", "| `nope` | x |",
            "## [route:NAME]", "| key | x |", "|---|---|", "| `path` | x |",
            "### More", "| option | x |", "|---|---|", "| `weight` | x |",
            "", "| key | x |", "|---|---|", "| `host` | x |",
            "## [filter:NAME] type = jwt", "| key | x |", "|---|---|", "| `keys` | x |",
        ])
        self.assertEqual(documented_keys(text), {"route": {"path", "host"}, "filter type = jwt": {"keys"}})


def twistd(*args, cwd=None):
    """
    Run twistd with this interpreter, as an operator would.
    """
    return subprocess.run(
        [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
         "sys.argv=['twistd']+sys.argv[1:]; run()", *args],
        capture_output=True, text=True, cwd=cwd or ROOT, env=dict(os.environ), timeout=60)


class ExampleConfigTests(SynchronousTestCase):
    """
    Every configuration shipped in etc/examples passes C{twistd gatelayer
    --check}.
    """

    def check(self, path, cwd=None):
        """
        Assert C{twistd gatelayer -c path --check} exits 0 saying so.
        """
        result = twistd("gatelayer", "-c", path, "--check", cwd=cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("is valid", result.stdout)

    def test_examples_present(self):
        """
        The examples the documentation points to are shipped.
        """
        names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".ini"))
        for name in ("auth.ini", "balancing.ini", "canary.ini", "l4.ini", "ratelimits.ini", "tls.ini", "transform.ini"):
            self.assertIn(name, names)

    def test_examples_without_files(self):
        """
        The examples that need no file of their own are valid where they
        are (auth.ini uses the sample keys shipped in etc/keys).
        """
        for name in ("auth.ini", "balancing.ini", "canary.ini", "l4.ini", "ratelimits.ini", "transform.ini"):
            self.check(os.path.join("etc", "examples", name))

    def test_tls_example(self):
        """
        tls.ini is valid next to a certs/ directory holding one certificate
        (generated here: no private key is shipped).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "certs"))
        shutil.copy(os.path.join(EXAMPLES, "tls.ini"), directory)
        ca = CertificateAuthority()
        ca.issue(["www.example.test"]).write(os.path.join(directory, "certs", "www.example.test.pem"))
        self.check(os.path.join(directory, "tls.ini"), cwd=directory)

    def test_readme_tour(self):
        """
        The configuration the README's tour writes is valid.
        """
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        match = re.search(r"cat > demo/gate.ini <<'EOF'\n(.*?)\nEOF\n", readme, re.S)
        self.assertIsNotNone(match)
        self.assertEqual(check_config(self, match.group(1)), "")

    def test_every_example_checked(self):
        """
        No example is left out of the tests above.
        """
        names = {n for n in os.listdir(EXAMPLES) if n.endswith(".ini")}
        self.assertEqual(names, {"auth.ini", "balancing.ini", "canary.ini", "l4.ini", "ratelimits.ini", "tls.ini",
                                 "transform.ini"})


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading):
    """
    The anchor GitHub gives a heading: lower case, punctuation other than
    C{-} and C{_} dropped, spaces turned into C{-}.
    """
    text = heading.strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path):
    """
    The anchors of the headings of the Markdown file at C{path}, outside
    code blocks.
    """
    found, fence = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith("```"):
                fence = not fence
            elif not fence and re.match(r"#{1,6} ", line):
                found.add(slug(line.lstrip("#")))
    return found


def links(path):
    """
    The link targets of the Markdown file at C{path}, outside code blocks.
    """
    found, fence = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith("```"):
                fence = not fence
            elif not fence:
                found.extend(_LINK.findall(line))
    return found


class LinkTests(SynchronousTestCase):
    """
    Links from the README and between the docs/ files resolve.
    """

    def test_slug(self):
        """
        Anchors are made as GitHub makes them.
        """
        self.assertEqual(slug(" [filter:NAME] type = jwt"), "filtername-type--jwt")
        self.assertEqual(slug("Request bodies: `body_timeout`"), "request-bodies-body_timeout")

    def test_links_resolve(self):
        """
        Every relative link names an existing file, and an anchor in a
        Markdown file names one of its headings.
        """
        files = [os.path.join(ROOT, "README.md")]
        files += [os.path.join(DOCS, n) for n in sorted(os.listdir(DOCS)) if n.endswith(".md")]
        broken = []
        for source in files:
            for target in links(source):
                if re.match(r"[a-z]+:", target):
                    continue
                name, _, anchor = target.partition("#")
                path = os.path.normpath(os.path.join(os.path.dirname(source), name)) if name else source
                where = f"{os.path.relpath(source, ROOT)}: {target}"
                if not os.path.exists(path):
                    broken.append(where)
                elif anchor and path.endswith(".md") and anchor not in anchors(path):
                    broken.append(where)
        self.assertEqual(broken, [])

    def test_readme_links_every_doc(self):
        """
        The README links to every file of docs/.
        """
        targets = {t.partition("#")[0] for t in links(os.path.join(ROOT, "README.md"))}
        for name in os.listdir(DOCS):
            if name.endswith(".md"):
                self.assertIn("docs/" + name, targets)
