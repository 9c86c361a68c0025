"""
One ModSecurity engine per C{waf} filter and worker: the rules are compiled
once when the filter is built; each request is one transaction, run
synchronously through the request phases (connection, URI, headers, body)
and cleaned up before the call returns.
"""

import ctypes
import re

from attrs import frozen

from gatelayer.waf._capi import Intervention, LOG_CALLBACK, load_library

__all__ = ["Verdict", "WafEngine", "WafRulesError"]

CONNECTOR = b"gatelayer"
"""How the gateway names itself to ModSecurity (C{msc_set_connector_info})."""

_RULE_ID = re.compile(rb'\[id "(\d+)"\]')
_MESSAGE = re.compile(rb'\[msg "((?:[^"\\]|\\.)*)"\]')


class WafRulesError(Exception):
    """
    ModSecurity refused the rules; the message is the library's, which
    names the file and line.
    """


@frozen
class Verdict:
    """
    What the rules said of one request.

    @ivar status: the status a disruptive rule asked for, or C{0} when none
        did (the request may pass).
    @ivar rule_ids: the ids of every rule that matched and logged, in order
        (without repeats).
    @ivar messages: the C{msg} of each of those rules, in the same order.
    """

    status: int = 0
    rule_ids: tuple = ()
    messages: tuple = ()

    @property
    def refused(self):
        """
        Whether a disruptive rule refused the request.
        """
        return self.status != 0


class WafEngine:
    """
    The compiled rules and the library instance that runs them.
    """

    def __init__(self, rules_text, library=None):
        """
        @param rules_text: the ModSecurity configuration (see
            L{gatelayer.waf.ruleset.rules_text}).
        @param library: a L{gatelayer.waf._capi.ModSecurityLibrary}; loaded
            when not given.
        @raise WafRulesError: the rules do not load.
        @raise gatelayer.waf.WafUnavailable: the library is not installed.
        """
        self.lib = lib = library if library is not None else load_library()
        self._lines = []
        self._callback = LOG_CALLBACK(self._logged)
        self._msc = lib.msc_init()
        lib.msc_set_connector_info(self._msc, CONNECTOR)
        lib.msc_set_log_cb(self._msc, self._callback)
        self._rules = lib.msc_create_rules_set()
        error = ctypes.c_char_p()
        if lib.msc_rules_add(self._rules, rules_text.encode("utf-8"), ctypes.byref(error)) < 0:
            message = (error.value or b"unknown error").decode("utf-8", "replace").strip()
            self.close()
            raise WafRulesError(message)

    def _logged(self, data, message):
        if message is not None:
            self._lines.append(message)

    def close(self):
        """
        Free the rules and the library instance.
        """
        if self._msc is not None:
            self.lib.msc_rules_cleanup(self._rules)
            self.lib.msc_cleanup(self._msc)
            self._msc = self._rules = None

    def inspect(self, client_ip, method, uri, headers, body=None, request_id=b"-", version=b"1.1",
                server=(b"127.0.0.1", 0)):
        """
        Run one request through the rules.

        @param client_ip: the client address (text).
        @param method: the method (bytes).
        @param uri: the request target, path and query (bytes).
        @param headers: C{(name, value)} byte pairs.
        @param body: the bytes of the body to inspect, or L{None} for none.
        @param request_id: the transaction's id in the library's log lines.
        @return: a L{Verdict}.
        """
        lib = self.lib
        self._lines = []
        transaction = lib.msc_new_transaction_with_id(self._msc, self._rules, request_id, None)
        try:
            lib.msc_process_connection(transaction, client_ip.encode("ascii", "replace"), 0,
                                       server[0], server[1])
            lib.msc_process_uri(transaction, uri, method, version)
            for name, value in headers:
                lib.msc_add_n_request_header(transaction, name, len(name), value, len(value))
            lib.msc_process_request_headers(transaction)
            status = self._intervention(transaction)
            if not status:
                if body:
                    lib.msc_append_request_body(transaction, body, len(body))
                lib.msc_process_request_body(transaction)
                status = self._intervention(transaction)
            lib.msc_process_logging(transaction)
        finally:
            lib.msc_transaction_cleanup(transaction)
        return self._verdict(status)

    def _intervention(self, transaction):
        intervention = Intervention()
        intervention.status = 200
        self.lib.msc_intervention(transaction, ctypes.byref(intervention))
        self.lib.take_string(intervention.url)
        log = self.lib.take_string(intervention.log)
        if not intervention.disruptive:
            return 0
        if log:
            self._lines.append(log)
        return intervention.status if intervention.status >= 400 else 403

    def _verdict(self, status):
        ids, messages = [], []
        for line in self._lines:
            found = _RULE_ID.search(line)
            if found is None:
                continue
            rule_id = int(found.group(1))
            if rule_id in ids:
                continue
            ids.append(rule_id)
            message = _MESSAGE.search(line)
            messages.append(message.group(1).decode("utf-8", "replace") if message else "")
        self._lines = []
        return Verdict(status=status, rule_ids=tuple(ids), messages=tuple(messages))
