"""
An example gatelayer filter type: HMAC-SHA256 request signatures.

The entry point C{hmac_signature} of the group C{gatelayer.filters} names
L{filter_type}; C{[filter:NAME] type = hmac_signature} then uses it.
"""

from gatelayer_example_filter.hmac_signature import (
    FILTER_TYPE as filter_type, HmacSignatureFilter, sign, signed_text,
)

__all__ = ["HmacSignatureFilter", "filter_type", "sign", "signed_text"]
