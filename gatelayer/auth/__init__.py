"""
Authentication helpers shared by the jwt and api_key filters.
"""
