"""
The web application firewall: the OWASP Core Rule Set run by libmodsecurity
3 (ModSecurity v3) through its C API, for the C{waf} filter
(L{gatelayer.filters.waf}).
"""

from gatelayer.waf._capi import WafUnavailable, load_library
from gatelayer.waf.engine import Verdict, WafEngine, WafRulesError
from gatelayer.waf.ruleset import CRS_RULES, CRS_SETUP, OWN_RULE_IDS, rules_text

__all__ = [
    "CRS_RULES", "CRS_SETUP", "OWN_RULE_IDS", "Verdict", "WafEngine", "WafRulesError", "WafUnavailable",
    "load_library", "rules_text",
]
