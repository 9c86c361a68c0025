"""
The ModSecurity configuration a C{waf} filter loads, built as text from its
settings: the engine and body settings, the gateway's own body processor
rules, the OWASP Core Rule Set (Debian's C{modsecurity-crs} package: its
setup file, then the paranoia level and inbound anomaly threshold, then its
request rules), the rule exclusions and the operator's own rules file.

Only the request rules are loaded (C{REQUEST-*.conf}): response inspection
is not done. Pure: no file is read here.
"""

from gatelayer.config.filter_waf import CRS_RULES, CRS_SETUP

__all__ = ["CRS_RULES", "CRS_SETUP", "OWN_RULE_IDS", "rules_text"]

OWN_RULE_IDS = (10100, 10101, 10110, 10111)
"""The ids of the gateway's own rules (ids below 100000 are for local use):
JSON and XML body processors, unparsable bodies, malformed multipart."""

_ENGINE = """\
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit {limit}
SecRequestBodyNoFilesLimit {limit}
SecRequestBodyLimitAction Reject
SecResponseBodyAccess Off
SecAuditEngine Off
SecArgumentSeparator &
SecCookieFormat 0
"""

_OWN_RULES = r"""
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.+-]+\+)?json(?:\s*;|$)" \
    "id:10100,phase:1,pass,nolog,t:none,t:lowercase,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application/(?:[a-z0-9.+-]+\+)?xml|text/xml)(?:\s*;|$)" \
    "id:10101,phase:1,pass,nolog,t:none,t:lowercase,ctl:requestBodyProcessor=XML"
SecRule REQBODY_ERROR "!@eq 0" \
    "id:10110,phase:2,deny,status:403,log,t:none,msg:'request body does not parse as its content type says'"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" \
    "id:10111,phase:2,deny,status:403,log,t:none,msg:'malformed multipart request body'"
"""


def rules_text(settings, crs_setup=CRS_SETUP, crs_rules=CRS_RULES):
    """
    The configuration text for C{settings} (a
    L{gatelayer.config.filter_waf.WafSettings}).
    """
    lines = [_ENGINE.format(limit=settings.max_body), _OWN_RULES]
    lines.append(f"Include {crs_setup}")
    lines.append(f'SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={settings.paranoia}"')
    lines.append('SecAction "id:900110,phase:1,nolog,pass,t:none,'
                 f'setvar:tx.inbound_anomaly_score_threshold={settings.anomaly_threshold},'
                 'setvar:tx.outbound_anomaly_score_threshold=4"')
    lines.append('SecAction "id:900200,phase:1,nolog,pass,t:none,'
                 f"setvar:'tx.allowed_methods={' '.join(settings.allowed_methods)}'\"")
    lines.append(f"Include {crs_rules}/REQUEST-*.conf")
    if settings.exclude_rules:
        lines.append("SecRuleRemoveById " + " ".join(settings.exclude_rules))
    if settings.rules_file is not None:
        lines.append(f"Include {settings.rules_file}")
    return "\n".join(lines) + "\n"
