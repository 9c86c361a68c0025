"""
Tests of the example filter type, run with
C{python3 -m twisted.trial gatelayer_example_filter}.
"""
